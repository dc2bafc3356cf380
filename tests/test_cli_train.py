"""train_supernet.py and train_standalone.py end to end on tiny data; bad input fails fast."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import paddle
import pytest
import yaml

from hnas.checkpoint import load_into, load_model_state
from hnas.data import make_image_folder
from hnas.models import ResNet, ResNetSuperNet
from hnas.search_space import SearchSpace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train_standalone  # noqa: E402
import train_supernet  # noqa: E402

TINY_SPACE = {"base_widths": [8, 16, 16, 32], "channel_divisor": 2, "image_sizes": [32], "num_classes": 4}
CODE = "1" + "2222" + "2" + "32" * 2 + "00" * 3 + "11" * 2 + "00" * 3 + "11" * 2 + "00" * 6 + "71" * 2 + "00" * 3


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("images")), num_classes=4, per_class=4, image_size=32)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "SearchSpace": TINY_SPACE,
        "Strategy": {"name": "sandwich"},
        "Train": {"max_epoch": 1, "batch_size": 4, "lr": 0.4, "warmup": 0, "log_freq": 1},
        "Data": {"num_workers": 0},
        "Standalone": {"max_epoch": 1, "batch_size": 4, "lr": 0.4, "warmup": 0},
    }))
    return str(path)


def run_cli(script, *args):
    return subprocess.run([sys.executable, script, "run", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_train_supernet_end_to_end_and_resume(config, image_root, tmp_path):
    save_dir = tmp_path / "run"
    result = run_cli("train_supernet.py", "--config", config, "--image_dir", image_root,
                     "--save_dir", str(save_dir), "--dyna_batch_size", "3", "-o", "Train.seed=7")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "top1_largest" in result.stdout and "img/s" in result.stdout
    resolved = yaml.safe_load((save_dir / "config.yaml").read_text())
    assert resolved["Train"]["dyna_batch_size"] == 3 and resolved["Train"]["seed"] == 7
    assert resolved["Train"]["momentum"] == 0.9  # defaults are written out too
    assert resolved["Data"]["image_dir"] == image_root and resolved["SearchSpace"] == TINY_SPACE
    supernet = ResNetSuperNet(SearchSpace.from_config(TINY_SPACE))
    load_into(supernet, load_model_state(str(save_dir)))  # an unwrapped supernet's keys
    # Resuming a finished run trains nothing more and leaves the weights alone.
    before = (save_dir / "final.pdparams").read_bytes()
    again = run_cli("train_supernet.py", "--config", config, "--image_dir", image_root,
                    "--save_dir", str(save_dir), "--dyna_batch_size", "3", "-o", "Train.seed=7",
                    "--resume", str(save_dir))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished at epoch 1/1" in again.stdout and (save_dir / "final.pdparams").read_bytes() == before
    # A new run into the same folder, without --resume, is refused and overwrites nothing.
    config_before = (save_dir / "config.yaml").read_bytes()
    fresh = run_cli("train_supernet.py", "--config", config, "--image_dir", image_root,
                    "--save_dir", str(save_dir))
    assert fresh.returncode == 2 and "already holds a run" in fresh.stderr and "--resume" in fresh.stderr
    assert (save_dir / "final.pdparams").read_bytes() == before
    assert (save_dir / "config.yaml").read_bytes() == config_before


def test_baseline_trains_with_a_pretrained_teacher(config, image_root, tmp_path):
    space = SearchSpace.from_config(TINY_SPACE)
    from hnas.models.pretrained import full_arch

    pretrained = tmp_path / "resnet48.pdparams"
    paddle.save(ResNet(full_arch(space), space).state_dict(), str(pretrained))
    code = train_supernet.main(["run", "--config", config, "--image_dir", image_root, "--strategy", "baseline",
                                "--pretrained", str(pretrained), "--save_dir", str(tmp_path / "run"),
                                "--num_workers", "0"])
    assert code == 0 and (tmp_path / "run" / "final.pdparams").is_file()


@pytest.mark.parametrize("args, message", [
    (["--bogus", "1"], "unrecognized arguments: --bogus"),
    (["--strategy", "nope"], "unknown strategy 'nope'; known: alphanet, baseline, biased, contrastive, fairnas, "
                                "rank_flops, rank_zen, sandwich, spos, standalone"),
    (["--strategy", "baseline"], "pass --pretrained PATH"),
    (["--pretrained", "/no/such.pdparams"], "does not exist"),
    (["-o", "Train.lrr=1"], "unknown Train keys ['lrr']"),
    (["-o", "Train.dyna_batch_size=0"], "dyna_batch_size must be a positive integer"),
    (["--on_error", "ignore"], "invalid choice: 'ignore'"),
    (["--resume", "/no/such/run"], "no checkpoint found"),
])
def test_bad_supernet_flags_fail_fast(args, message, config, image_root, tmp_path, capsys):
    save_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_supernet.main(["run", "--config", config, "--image_dir", image_root,
                             "--save_dir", str(save_dir), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not save_dir.exists(), "nothing may be written before the input is valid"


def test_missing_or_empty_image_dir_fails_before_training(config, tmp_path, capsys):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    for image_dir, message in ((tmp_path / "none", "does not exist"), (tmp_path / "empty", "no class sub-folders")):
        with pytest.raises(SystemExit) as exit_info:
            train_supernet.main(["run", "--config", config, "--image_dir", str(image_dir),
                                 "--save_dir", str(tmp_path / "run")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_standalone_merges_its_result_into_a_json(config, image_root, tmp_path, capsys):
    out_json = tmp_path / "ground_truth.json"
    out_json.write_text(json.dumps({"arch1": {"acc": 0.5, "arch": "keep me"}}))
    argv = ["run", "--config", config, "--arch", CODE, "--image_dir", image_root, "--out_json", str(out_json),
            "--save_dir", str(tmp_path / "sa"), "--num_workers", "0"]
    assert train_standalone.main(argv) == 0
    data = json.loads(out_json.read_text())
    assert list(data) == ["arch1", "arch2"] and data["arch1"] == {"acc": 0.5, "arch": "keep me"}
    assert data["arch2"]["arch"] == CODE and 0.0 <= data["arch2"]["acc"] <= 1.0
    assert f"{CODE} top-1 {data['arch2']['acc']:.4f}" in capsys.readouterr().out
    # Training the same arch again (in a new run folder) with --replace updates its entry instead
    # of adding one (without --replace it is refused: see tests/test_bad_inputs.py).
    assert train_standalone.main(argv + ["--seed", "1", "--save_dir", str(tmp_path / "sa2"), "--replace"]) == 0
    assert list(json.loads(out_json.read_text())) == ["arch1", "arch2"]
    resolved = yaml.safe_load((tmp_path / "sa2" / "config.yaml").read_text())
    assert resolved["Standalone"]["seed"] == 1


def test_train_standalone_rejects_bad_codes_and_folders(config, image_root, tmp_path, capsys):
    for args, message in (([ "--arch", CODE[:-1] + "1", "--image_dir", image_root], "must be 00"),
                          (["--arch", CODE, "--image_dir", str(tmp_path / "none")], "does not exist")):
        with pytest.raises(SystemExit) as exit_info:
            train_standalone.main(["run", "--config", config, "--save_dir", str(tmp_path / "sa"), *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "sa").exists()
