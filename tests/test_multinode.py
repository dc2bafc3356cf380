"""Two "nodes" on one machine: two ``paddle.distributed.launch --master --nnodes 2 --rank R``
invocations on localhost, talking over gloo (CPU), as two machines would.

Training must end with the same parameters on the ranks of both nodes; ranking must shard by
the global rank (the local rank is 0 on both nodes) and merge to the very file one process
writes.  Each launcher runs in its own process group, killed whole on a timeout, so a broken
rendezvous fails the test instead of hanging it.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import hnas  # noqa: F401  (before paddle: see hnas/__init__.py)
import numpy as np
import paddle
import paddle.distributed as dist
import pytest
import yaml
from hnas.checkpoint import save_checkpoint
from hnas.data import make_image_folder
from hnas.evaluator import read_shard, shard_path
from hnas.models import ResNetSuperNet
from hnas.search_space import SearchSpace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SPACE = {"base_widths": [8, 16, 16, 32], "channel_divisor": 2, "image_sizes": [32], "num_classes": 4}
TIMEOUT = 300
ARCHS = ["1252233313000000223212122253130000000000006515000000",
         "1447233323333300331313230025153545153545003252000000",
         "1526421212322232112100000014443444143400006666764600",
         "1244431333000000211131310021515121000000004111715100",
         "1245211121000000133323130054242414240000007424000000",
         "1448531313231300123222220032124212323242524525756555",
         "1328333313230000332300000052121222124232424535550000"]

# Runs train_supernet.py as the launcher would, then every rank saves its parameters under its
# global rank: the CLI itself saves only on rank 0.
TRAIN_THEN_DUMP = """
import json, os, runpy, sys
sys.path.insert(0, {root!r})
import hnas
import numpy as np
from hnas.trainer import Trainer

fit = Trainer.fit

def fit_then_dump(self, *args, **kwargs):
    result = fit(self, *args, **kwargs)
    np.savez(os.path.join({dump_dir!r}, f"rank{{self.rank}}.npz"),
             **{{k: v.numpy() for k, v in self.model.state_dict().items()}})
    with open(os.path.join({dump_dir!r}, f"rank{{self.rank}}.json"), "w") as f:
        json.dump({{"rank": self.rank, "world_size": self.world_size,
                   "rank_in_node": int(os.environ["PADDLE_RANK_IN_NODE"])}}, f)
    return result

Trainer.fit = fit_then_dump
script = os.path.join({root!r}, "train_supernet.py")
sys.argv = [script, *sys.argv[1:]]
runpy.run_path(script, run_name="__main__")
"""

pytestmark = [pytest.mark.skipif(not dist.is_available(), reason="this Paddle build has no paddle.distributed"),
              pytest.mark.filterwarnings("ignore:Your model will be trained under CPUONLY mode")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_nodes(commands: list[list[str]], envs: list[dict], timeout: float = TIMEOUT) -> list[subprocess.CompletedProcess]:
    """Start every node's command at once, each in its own process group; on a timeout kill
    every group (launchers and their workers) and fail."""
    nodes = [subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
             for cmd, env in zip(commands, envs)]
    results = []
    try:
        for node, cmd in zip(nodes, commands):
            stdout, stderr = node.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(cmd, node.returncode, stdout, stderr))
    except subprocess.TimeoutExpired:
        for node in nodes:
            with_group_killed(node)
        pytest.fail(f"a node did not finish within {timeout} s: {commands}")
    return results


def with_group_killed(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()


def launcher_logs(*log_dirs) -> str:
    text = ""
    for log_dir in log_dirs:
        if os.path.isdir(log_dir):
            for name in sorted(os.listdir(log_dir)):
                text += f"--- {log_dir}/{name}\n" + open(os.path.join(log_dir, name), errors="replace").read()[-3000:]
    return text


def two_node_launch(port: int, node_rank: int, log_dir: str) -> list[str]:
    return [sys.executable, "-m", "paddle.distributed.launch", "--master", f"127.0.0.1:{port}",
            "--nnodes", "2", "--rank", str(node_rank), "--nproc_per_node", "1", "--log_dir", log_dir]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny images, config, supernet checkpoint and arch list shared by the tests."""
    root = tmp_path_factory.mktemp("multinode")
    make_image_folder(str(root / "images"), num_classes=4, per_class=4, image_size=32)
    (root / "tiny.yaml").write_text(yaml.safe_dump({
        "SearchSpace": TINY_SPACE,
        "Data": {"num_workers": 0},
        "Eval": {"calib_batches": 1, "eval_images": 8, "batch_size": 4},
    }))
    paddle.seed(0)
    supernet = ResNetSuperNet(SearchSpace.from_config(TINY_SPACE))
    save_checkpoint(str(root / "supernet"), "final", supernet.state_dict(), {"epoch": 1})
    archs = {f"arch{i}": {"acc": 0.0, "arch": code} for i, code in enumerate(ARCHS, 1)}
    (root / "archs.json").write_text(json.dumps(archs))
    return root


def eval_args(world, save_path) -> list[str]:
    return ["--config", str(world / "tiny.yaml"), "--image_dir", str(world / "images"),
            "--resume", str(world / "supernet"), "--json_path", str(world / "archs.json"),
            "--save_path", str(save_path), "--no_progress"]


def test_two_nodes_train_to_identical_parameters(world, tmp_path):
    dump_dir, save_dir = tmp_path / "dump", tmp_path / "run"
    dump_dir.mkdir()
    wrapper = tmp_path / "train_then_dump.py"
    wrapper.write_text(TRAIN_THEN_DUMP.format(root=ROOT, dump_dir=str(dump_dir)))
    train_args = [str(wrapper), "run", "--config", str(world / "tiny.yaml"), "--image_dir", str(world / "images"),
                  "--save_dir", str(save_dir), "--strategy", "spos", "--max_epoch", "2", "--batch_size", "4",
                  "--lr", "0.4", "--warmup", "0", "--dyna_batch_size", "2", "--log_freq", "1"]
    port, log_dirs = free_port(), [str(tmp_path / f"log{node}") for node in (0, 1)]
    results = run_nodes([two_node_launch(port, node, log_dirs[node]) + train_args for node in (0, 1)], [{}, {}])
    for result in results:
        assert result.returncode == 0, result.stderr[-2000:] + launcher_logs(*log_dirs)

    ranks = [json.loads((dump_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [{"rank": r, "world_size": 2, "rank_in_node": 0} for r in (0, 1)]
    states = [np.load(dump_dir / f"rank{r}.npz") for r in (0, 1)]
    for key in states[0].files:
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=f"{key} differs between nodes")
    saved = paddle.load(str(save_dir / "final.pdparams"))
    assert set(saved) == set(states[0].files)
    for key in states[0].files:
        np.testing.assert_array_equal(np.asarray(saved[key]), states[1][key], err_msg=f"{key}: node 1 vs final")
    paddle.seed(0)  # the CLI's default seed: the init both nodes started from
    init = ResNetSuperNet(SearchSpace.from_config(TINY_SPACE)).state_dict()
    stem = "blocks.0.conv.weight"
    assert not np.array_equal(init[stem].numpy(), states[1][stem]), "training did not change the weights"
    assert "on 2 process(es)" in (save_dir / "train.log").read_text()


def test_two_nodes_rank_their_shards_and_merge_to_the_one_process_file(world, tmp_path):
    single = tmp_path / "single" / "submission.json"
    result = subprocess.run([sys.executable, "eval_supernet.py", "run", *eval_args(world, single)], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]

    merged = tmp_path / "nodes" / "submission.json"
    port, log_dirs = free_port(), [str(tmp_path / f"log{node}") for node in (0, 1)]
    script = ["bash", os.path.join(ROOT, "eval_supernet.sh"), *eval_args(world, merged)]
    envs = [{"NPROC": "1", "NNODES": "2", "MASTER": f"127.0.0.1:{port}", "NODE_RANK": str(node),
             "LOG_DIR": log_dirs[node], "PYTHON": sys.executable, "MERGE_WAIT": "240"} for node in (0, 1)]
    results = run_nodes([script, script], envs)
    for result in results:
        assert result.returncode == 0, result.stderr[-2000:] + launcher_logs(*log_dirs)
    assert "node 1 ranked its shards; node 0 merges them" in results[1].stderr
    assert merged.read_bytes() == single.read_bytes()
    assert len(json.loads(merged.read_text())) == len(ARCHS)

    shards = [read_shard(shard_path(str(merged), shard, 2))[1] for shard in (0, 1)]
    assert shards[0] and shards[1], "each node's rank must have ranked a shard of its own"
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == {f"arch{i}" for i in range(1, len(ARCHS) + 1)}
    assert "shard 1 of 2" in launcher_logs(log_dirs[1])


def test_merge_waits_for_a_missing_shard_then_says_so_in_one_line(world, tmp_path):
    save_path = tmp_path / "submission.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranked = subprocess.run([sys.executable, "eval_supernet.py", "run", *eval_args(world, save_path),
                             "--num_shards", "2", "--shard", "0"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    merge = subprocess.run([sys.executable, "eval_supernet.py", "run", *eval_args(world, save_path),
                            "--num_shards", "2", "--merge_only", "--wait_for_shards", "1"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert merge.returncode == 2 and "Traceback" not in merge.stderr, merge.stderr[-3000:]
    errors = [line for line in merge.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "after waiting 1 s for other nodes" in errors[0], merge.stderr[-3000:]
    assert shard_path(str(save_path), 1, 2) in errors[0] and not save_path.exists()


@pytest.mark.parametrize("script", ["train_supernet.sh", "eval_supernet.sh"])
def test_scripts_refuse_several_nodes_without_master_and_node_rank(script, tmp_path):
    result = subprocess.run(["bash", os.path.join(ROOT, script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=TIMEOUT, env={**os.environ, "NNODES": "2", "MASTER": "127.0.0.1:1",
                                                  "PYTHON": sys.executable, "LOG_DIR": str(tmp_path / "log")})
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"{script}: error: NNODES=2 needs MASTER=ip:port (node 0) and NODE_RANK=0..1 on every machine"]
    assert not (tmp_path / "log").exists()
