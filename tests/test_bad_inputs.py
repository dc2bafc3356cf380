"""Issue 8, "Reliability": every bad input a new user can give ends in one clear line.

Each test runs a real CLI in a subprocess, as a user would, and checks the exit status, that
the error is one line naming the file, key or value (no Python traceback), and that nothing
the run was given or had written before changed.  Runs are tiny (4 classes of 4 images at
32 px, tiny widths), and the folders, config and checkpoint are shared by the module.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from conftest import ROOT
from hnas.checkpoint import LockedError, lock_run_dir, save_checkpoint
from hnas.data import make_image_folder
from hnas.models import ResNetSuperNet
from hnas.search_space import SearchSpace

TINY_SPACE = {"base_widths": [8, 16, 16, 32], "channel_divisor": 2, "image_sizes": [32], "num_classes": 4}
CODE = "1" + "2222" + "2" + "32" * 2 + "00" * 3 + "11" * 2 + "00" * 3 + "11" * 2 + "00" * 6 + "71" * 2 + "00" * 3
TIMEOUT = 240  # a hang fails the test instead of blocking the suite
SUPERNET, STANDALONE, EVAL = "train_supernet.py", "train_standalone.py", "eval_supernet.py"


# ----------------------------------------------------------------------------- helpers
def run(script, *args, cwd=ROOT, env=None, command=("run",)):
    """``python script run args`` (``.sh``: ``bash script args``) as a user runs it."""
    prefix = ["bash", os.path.join(ROOT, script)] if script.endswith(".sh") else \
        [sys.executable, os.path.join(ROOT, script), *command]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([*prefix, *[str(a) for a in args]], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT, env=environment)


def assert_error(result, status, *fragments):
    """Exit ``status``, no traceback, and one stderr line saying ``error:`` with every fragment."""
    assert result.returncode == status, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def snapshot(*paths) -> dict:
    """Path -> bytes of every file under ``paths``: compared before and after a refused run."""
    files = {}
    for path in map(str, paths):
        if os.path.isfile(path):
            files[path] = open(path, "rb").read()
        for folder, _, names in os.walk(path):
            for name in names:
                with open(os.path.join(folder, name), "rb") as f:
                    files[os.path.join(folder, name)] = f.read()
    return files


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Shared tiny inputs: images, a config, a supernet checkpoint, an arch list."""
    root = tmp_path_factory.mktemp("bad_inputs")
    make_image_folder(str(root / "images"), num_classes=4, per_class=4, image_size=32)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "SearchSpace": TINY_SPACE,
        "Train": {"max_epoch": 1, "batch_size": 4, "lr": 0.1, "warmup": 0, "log_freq": 1, "bn_calib_batches": 1},
        "Data": {"num_workers": 0},
        "Standalone": {"max_epoch": 1, "batch_size": 4, "lr": 0.1, "warmup": 0},
        "Eval": {"calib_batches": 1, "eval_images": 8, "batch_size": 4},
    }))
    paddle.seed(0)
    supernet = ResNetSuperNet(SearchSpace.from_config(TINY_SPACE))
    save_checkpoint(str(root / "supernet"), "final", supernet.state_dict(), {"epoch": 1})
    archs = {"arch1": {"acc": 0.0, "arch": CODE},
             "arch2": {"acc": 0.0, "arch": CODE.replace("7171", "6171")}}
    (root / "archs.json").write_text(json.dumps(archs))
    return root


def images_copy(world, tmp_path, name="images"):
    """A private copy of the shared image folder, to damage."""
    return shutil.copytree(world / "images", tmp_path / name)


def train_args(world, image_dir, save_dir, *extra):
    return ["--config", world / "tiny.yaml", "--image_dir", image_dir, "--save_dir", save_dir, *extra]


def supernet_args(world, image_dir, save_dir, *extra):
    return train_args(world, image_dir, save_dir, "--strategy", "sandwich", "--dyna_batch_size", "2", *extra)


def eval_args(world, image_dir, save_path, *extra, resume=None):
    return ["--config", world / "tiny.yaml", "--image_dir", image_dir, "--resume", resume or world / "supernet",
            "--json_path", world / "archs.json", "--save_path", save_path, "--no_progress", *extra]


def cli_args(script, world, image_dir, tmp_path, *extra):
    """Arguments that would make ``script`` run on ``image_dir`` (plus ``extra``)."""
    if script == SUPERNET:
        return supernet_args(world, image_dir, tmp_path / "run", *extra)
    if script == STANDALONE:
        return train_args(world, image_dir, tmp_path / "run", "--arch", CODE, *extra)
    return eval_args(world, image_dir, tmp_path / "out.json", *extra)


# ----------------------------------------------------------------------------- unreadable images
def test_unreadable_image_without_workers_names_it_instead_of_hanging(world, tmp_path):
    # Before: the DataLoader's reading thread died on the exception and training waited forever.
    images = images_copy(world, tmp_path)
    bad = images / "train" / "class001" / "train_00001.png"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    before = snapshot(images)
    result = run(SUPERNET, *supernet_args(world, images, tmp_path / "run", "--num_workers", "0"))
    assert_error(result, 2, str(bad), "--on_error skip")
    assert snapshot(images) == before
    assert not (tmp_path / "run" / "latest").exists()


def test_empty_image_file_with_workers_is_one_line(world, tmp_path):
    # Before: a long DataLoader-worker traceback.  The zero-byte file is in val/, read after training.
    images = images_copy(world, tmp_path)
    bad = images / "val" / "class002" / "val_00003.png"
    bad.write_bytes(b"")
    result = run(STANDALONE, *train_args(world, images, tmp_path / "run", "--arch", CODE, "--num_workers", "1"))
    assert_error(result, 2, str(bad), "--on_error skip")
    assert bad.read_bytes() == b""


def test_on_error_skip_trains_past_unreadable_images(world, tmp_path):
    # The remedy the messages suggest works for train/ and val/ alike.
    images = images_copy(world, tmp_path)
    (images / "train" / "class001" / "train_00001.png").write_bytes(b"")
    (images / "val" / "class002" / "val_00000.png").write_bytes(b"not a png")
    result = run(SUPERNET, *supernet_args(world, images, tmp_path / "run", "--on_error", "skip"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping unreadable image" in result.stderr and (tmp_path / "run" / "final.pdparams").is_file()


def test_ranking_names_an_unreadable_image(world, tmp_path):
    images = images_copy(world, tmp_path)
    bad = images / "val" / "class000" / "val_00000.png"
    bad.write_bytes(b"")
    result = run(EVAL, *eval_args(world, images, tmp_path / "out.json"))
    assert_error(result, 2, str(bad), "replace or remove it")
    assert not (tmp_path / "out.json").exists()


# ----------------------------------------------------------------------------- class folders
@pytest.mark.parametrize("script", [SUPERNET, STANDALONE, EVAL])
def test_val_missing_a_class_folder_is_refused(script, world, tmp_path):
    # Before: labels of every later class shifted by one and accuracy was silently wrong.
    images = images_copy(world, tmp_path)
    shutil.rmtree(images / "val" / "class001")
    before = snapshot(images, world / "supernet", world / "archs.json")
    result = run(script, *cli_args(script, world, images, tmp_path))
    assert_error(result, 2, "val/ lacks 'class001'")
    assert snapshot(images, world / "supernet", world / "archs.json") == before
    assert not (tmp_path / "run").exists() and not (tmp_path / "out.json").exists()


def test_empty_class_folder_is_refused(world, tmp_path):
    images = images_copy(world, tmp_path)
    for name in os.listdir(images / "train" / "class003"):
        os.remove(images / "train" / "class003" / name)
    result = run(SUPERNET, *supernet_args(world, images, tmp_path / "run"))
    assert_error(result, 2, "empty class folders", "'class003'", str(images / "train"))
    assert not (tmp_path / "run").exists()


def test_class_count_other_than_num_classes_is_refused(world, tmp_path):
    result = run(STANDALONE, *train_args(world, world / "images", tmp_path / "run", "--arch", CODE,
                                         "-o", "SearchSpace.num_classes=10"))
    assert_error(result, 2, "has 4 class folders", "SearchSpace.num_classes is 10")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("script", [SUPERNET, STANDALONE, EVAL])
def test_misspelt_section_in_an_override_is_refused(script, world, tmp_path):
    # Before: -o Trian.lr=0.1 was ignored without a word.
    result = run(script, *cli_args(script, world, world / "images", tmp_path, "-o", "Trian.lr=0.1"))
    assert_error(result, 2, "'Trian.lr=0.1'", "unknown section 'Trian'", "SearchSpace")
    assert not (tmp_path / "run").exists() and not (tmp_path / "out.json").exists()


def test_misspelt_section_in_the_config_file_is_refused(world, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text((world / "tiny.yaml").read_text().replace("Standalone:", "Standalon:"))
    args = supernet_args(world, world / "images", tmp_path / "run")
    args[1] = config
    result = run(SUPERNET, *args)
    assert_error(result, 2, str(config), "unknown section(s) ['Standalon']", "'Standalone'")


def test_unknown_key_error_lists_the_known_keys(world, tmp_path):
    # Before: "unknown Train keys ['lrr']; known: []" (the known keys were a spent generator).
    result = run(SUPERNET, *supernet_args(world, world / "images", tmp_path / "run", "-o", "Train.lrr=1"))
    line = assert_error(result, 2, "unknown Train keys ['lrr']", "'lr'", "'max_epoch'")
    assert "known: []" not in line


@pytest.mark.parametrize("script, override, message", [
    (SUPERNET, "Train.lr=abc", "Train.lr must be a number, got 'abc'"),
    (STANDALONE, "Standalone.max_epoch=2.5", "Standalone.max_epoch must be an integer, got 2.5"),
    (EVAL, "Eval.calib_batches=abc", "Eval.calib_batches must be an integer, got 'abc'"),
    (SUPERNET, "SearchSpace.image_sizes=32", "SearchSpace.image_sizes must be a list of integers, got 32"),
    (EVAL, "SearchSpace.channel_divisor=0", "SearchSpace.channel_divisor must be positive, got 0"),
])
def test_wrong_type_in_an_override_is_refused(script, override, message, world, tmp_path):
    # Before: tracebacks (TypeError: '>' not supported between 'str' and 'int'; 'int' object is
    # not iterable; ZeroDivisionError).
    result = run(script, *cli_args(script, world, world / "images", tmp_path, "-o", override))
    assert_error(result, 2, message)


def test_wrong_type_in_yaml_is_refused(world, tmp_path):
    config = tmp_path / "typed.yaml"
    cfg = yaml.safe_load((world / "tiny.yaml").read_text())
    cfg["Train"]["batch_size"] = "abc"
    config.write_text(yaml.safe_dump(cfg))
    args = supernet_args(world, world / "images", tmp_path / "run")
    args[1] = config
    assert_error(run(SUPERNET, *args), 2, "Train.batch_size must be an integer, got 'abc'")


def test_yaml_syntax_error_names_file_and_line(world, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("SearchSpace:\n  num_classes: 4\nTrain: [lr: 0.1\n")
    args = supernet_args(world, world / "images", tmp_path / "run")
    args[1] = config
    assert_error(run(SUPERNET, *args), 2, str(config), "not valid YAML", "line ")


def test_batch_larger_than_the_data_is_refused(world, tmp_path):
    # Before: a ValueError traceback from the batch sampler, after the run folder was written.
    result = run(SUPERNET, *supernet_args(world, world / "images", tmp_path / "run", "--batch_size", "64"))
    assert_error(result, 2, "has 16 images", "--batch_size")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- arch JSON
def test_arch_json_with_a_repeated_key_is_refused(world, tmp_path):
    # Before: the last entry silently won.
    archs = tmp_path / "archs.json"
    archs.write_text('{"arch1": {"acc": 0.0, "arch": "%s"}, "arch1": {"acc": 0.0, "arch": "%s"}}' % (CODE, CODE))
    before = snapshot(archs)
    result = run("utils/split_json.py", archs, "--num_shards", "1", command=())
    assert_error(result, 2, str(archs), "'arch1' appears more than once")
    assert snapshot(tmp_path) == before


def test_split_json_refuses_an_invalid_code(tmp_path):
    # Before: written into a shard unchecked, to fail hours later in that shard's ranking.
    archs = tmp_path / "archs.json"
    archs.write_text(json.dumps({"arch1": {"acc": 0, "arch": CODE}, "arch7": {"acc": 0, "arch": CODE[:-1] + "1"}}))
    before = snapshot(tmp_path)
    result = run("utils/split_json.py", archs, "--num_shards", "2", command=())
    assert_error(result, 2, "arch7", CODE[:-1] + "1")
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- overwrites
@pytest.mark.parametrize("target", ["supernet/final.pdparams", "supernet/final.pdopt", "supernet/latest",
                                    "tiny.yaml", "archs.json"])
def test_ranking_never_writes_over_an_input(target, world):
    # Before: --save_path pointing at its own checkpoint overwrote the checkpoint.
    before = snapshot(world)
    result = run(EVAL, *eval_args(world, world / "images", world / target))
    assert_error(result, 2, "is also an input file")
    assert snapshot(world) == before


def test_standalone_result_for_an_arch_already_in_out_json_needs_replace(world, tmp_path):
    # Before: a second run of one arch silently replaced the first one's result.
    out_json = tmp_path / "ground_truth.json"
    out_json.write_text(json.dumps({"arch5": {"acc": 0.5, "arch": CODE}}))
    result = run(STANDALONE, *train_args(world, world / "images", tmp_path / "run", "--arch", CODE,
                                         "--out_json", out_json))
    assert_error(result, 2, str(out_json), "'arch5'", "--replace")
    assert json.loads(out_json.read_text()) == {"arch5": {"acc": 0.5, "arch": CODE}}
    assert not (tmp_path / "run").exists(), "refused before training"


# ----------------------------------------------------------------------------- locks
@pytest.mark.parametrize("script", [SUPERNET, STANDALONE])
def test_second_training_into_one_save_dir_is_refused(script, world, tmp_path):
    # Before: both ran and interleaved their logs and checkpoints.  The first one is this test
    # process, holding the run folder's lock as a training does.
    lock = lock_run_dir(str(tmp_path / "run"))
    try:
        with pytest.raises(LockedError):
            lock_run_dir(str(tmp_path / "run"))  # also within one process: a second open file
        before = snapshot(tmp_path / "run")
        result = run(script, *cli_args(script, world, world / "images", tmp_path))
        assert_error(result, 2, str(tmp_path / "run"), "in use by another training", f"pid {os.getpid()}")
        assert snapshot(tmp_path / "run") == before
    finally:
        lock.close()


def test_second_ranking_process_on_a_locked_shard_is_refused(world, tmp_path):
    # Before: a RuntimeError traceback.
    shard = tmp_path / "out.json.shard0of1.jsonl"
    shard.write_text('{"settings": {}}\n')
    with open(shard, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run(EVAL, *eval_args(world, world / "images", tmp_path / "out.json"))
    assert_error(result, 2, str(shard), "in use by another process")
    assert shard.read_text() == '{"settings": {}}\n'


# ----------------------------------------------------------------------------- checkpoints
def test_ranking_restarted_after_the_checkpoint_was_replaced_is_refused(world, tmp_path):
    # Before: the restart mixed scores of two checkpoints in one submission.
    run_dir = shutil.copytree(world / "supernet", tmp_path / "supernet")
    first = run(EVAL, *eval_args(world, world / "images", tmp_path / "out.json", resume=run_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    shard = tmp_path / "out.json.shard0of1.jsonl"
    (tmp_path / "out.json").unlink()
    lines = shard.read_text().splitlines()
    shard.write_text("\n".join(lines[:2]) + "\n")  # as if killed after the first arch
    paddle.seed(1)
    save_checkpoint(str(run_dir), "final", ResNetSuperNet(SearchSpace.from_config(TINY_SPACE)).state_dict())
    before = snapshot(shard)
    result = run(EVAL, *eval_args(world, world / "images", tmp_path / "out.json", resume=run_dir))
    assert_error(result, 2, str(shard), "has been replaced since", "another --save_path")
    assert snapshot(shard) == before and not (tmp_path / "out.json").exists()


def test_ranking_refuses_non_finite_weights(world, tmp_path):
    state = ResNetSuperNet(SearchSpace.from_config(TINY_SPACE)).state_dict()
    name = sorted(k for k in state if k.endswith("weight"))[3]
    weights = state[name].numpy()
    weights.flat[0] = np.nan
    state[name] = paddle.to_tensor(weights)
    path = save_checkpoint(str(tmp_path / "diverged"), "final", state)
    result = run(EVAL, *eval_args(world, world / "images", tmp_path / "out.json", resume=path))
    assert_error(result, 2, path, "non-finite", repr(next(k for k in state if k == name)))
    assert not os.path.exists(tmp_path / "out.json.shard0of1.jsonl")


def test_truncated_checkpoint_is_named_without_a_search_space_hint(world, tmp_path):
    # Before: "... Is the config's SearchSpace the one this checkpoint was trained with?"
    data = (world / "supernet" / "final.pdparams").read_bytes()
    truncated = tmp_path / "final.pdparams"
    truncated.write_bytes(data[: len(data) // 2])
    line = assert_error(run(EVAL, *eval_args(world, world / "images", tmp_path / "out.json", resume=truncated)),
                        2, str(truncated), "not a readable Paddle checkpoint")
    assert "SearchSpace" not in line


def test_convert_model_names_a_file_that_is_not_a_checkpoint(tmp_path):
    # Before: "no checkpoint found" for a file that exists.
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint\n")
    result = run("utils/convert_model.py", "to_single", notes, tmp_path / "out.pdparams", command=())
    assert_error(result, 1, str(notes), "not a readable Paddle checkpoint")
    assert notes.read_text() == "not a checkpoint\n" and not (tmp_path / "out.pdparams").exists()


# ----------------------------------------------------------------------------- ranking data
def test_calib_batches_beyond_the_data_are_refused(world, tmp_path):
    # Before: silently cut to the 16 images there are, while the shard file recorded 100 batches.
    result = run(EVAL, *eval_args(world, world / "images", tmp_path / "out.json", "--calib_batches", "100"))
    assert_error(result, 2, "--calib_batches 100", "has 16", "--calib_batches 4 or fewer")
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- shell scripts
def test_eval_script_takes_paths_relative_to_the_callers_folder(world, tmp_path):
    # Before: the script changed into the repository, so relative paths pointed elsewhere.
    shutil.copy(world / "archs.json", tmp_path / "archs.json")
    result = run("eval_supernet.sh", "--config", os.path.relpath(world / "tiny.yaml", tmp_path),
                 "--image_dir", os.path.relpath(world / "images", tmp_path),
                 "--resume", os.path.relpath(world / "supernet", tmp_path), "--json_path", "archs.json",
                 "--save_path", "out/submission.json", "--no_progress",
                 cwd=tmp_path, env={"NPROC": "1", "LOG_DIR": str(tmp_path / "log")})
    assert result.returncode == 0, result.stderr[-3000:] + open(tmp_path / "log" / "workerlog.0").read()[-3000:]
    scores = json.loads((tmp_path / "out" / "submission.json").read_text())
    assert list(scores) == ["arch1", "arch2"]


def test_train_script_takes_paths_relative_to_the_callers_folder(world, tmp_path):
    result = run("train_supernet.sh", "--config", os.path.relpath(world / "tiny.yaml", tmp_path),
                 "--image_dir", os.path.relpath(world / "images", tmp_path), "--save_dir", "run",
                 "--strategy", "sandwich", "--pretrained", "", "--max_epoch", "1", "--batch_size", "4",
                 "--dyna_batch_size", "2", "--log_freq", "1",
                 cwd=tmp_path, env={"NPROC": "1", "LOG_DIR": str(tmp_path / "log")})
    log = open(tmp_path / "log" / "workerlog.0").read() if os.path.exists(tmp_path / "log" / "workerlog.0") else ""
    assert result.returncode == 0, result.stderr[-3000:] + log[-3000:]
    assert (tmp_path / "run" / "final.pdparams").is_file()
