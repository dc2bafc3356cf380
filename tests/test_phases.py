"""Multi-phase recipes: checked before training, resumed exactly, few-shot children routed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

import train_supernet
from hnas.callbacks import Callback
from hnas.data import make_image_folder
from hnas.checkpoint import load_model_state, resolve_checkpoint
from hnas.config import load_config, section
from hnas.phases import load_recipe_ranker, parse_phases, run_phases
from hnas.evaluator import SubnetRanker, load_supernet
from hnas.search_space import SearchSpace
from hnas.train_config import DataConfig, build_datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"base_widths": [8, 16, 16, 32], "channel_divisor": 2, "image_sizes": [32], "num_classes": 4}
THREE_PHASES = [
    {"name": "a", "strategy": "spos", "epochs": 1, "depths": [[5], [5], [8], [5]], "widths": [[1]] * 4},
    {"name": "b", "strategy": {"name": "baseline"}, "epochs": 2, "lr": 0.2, "train": {"dyna_batch_size": 2},
     "widths": [[1, 2, 3]] * 4, "init_from": "previous", "teacher_from": "previous", "reorder": True},
    {"name": "c", "strategy": "sandwich", "epochs": 1, "init_from": "previous", "train": {"dyna_batch_size": 3}},
]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("images")), num_classes=4, per_class=8, image_size=32)


def recipe_config(image_root, save_dir, phases=THREE_PHASES):
    return {"SearchSpace": TINY, "Data": {"image_dir": image_root, "num_workers": 0},
            "Train": {"batch_size": 8, "lr": 0.1, "warmup": 0, "log_freq": 100, "weight_decay": 1e-4,
                      "decay_bn_bias": False, "bn_calib_batches": 1, "save_dir": str(save_dir)},
            "Phases": phases}


def run_recipe(cfg, callbacks=()):
    space = SearchSpace.from_config(cfg["SearchSpace"])
    phases = parse_phases(cfg["Phases"], space, cfg["Train"]["save_dir"], cfg["Train"])
    datasets = build_datasets(DataConfig.from_config(cfg["Data"]), 32, 0)
    return run_phases(cfg, phases, space, datasets, 0, log=lambda *_: None, callbacks=callbacks), phases


def final_state(folder):
    return {k: v.numpy() for k, v in load_model_state(resolve_checkpoint(str(folder))).items()}


class StopInPhase(Callback):
    """Stops the run after the first epoch of the phase whose folder ends with ``suffix``."""

    def __init__(self, suffix):
        self.suffix = suffix

    def on_epoch_end(self, epoch, logs=None):
        if self.trainer.save_dir.endswith(self.suffix):
            self.trainer.stop_training = True


def test_a_recipe_stopped_in_its_second_phase_resumes_to_the_same_weights(image_root, tmp_path):
    done, phases = run_recipe(recipe_config(image_root, tmp_path / "whole"))
    assert done and all(p.finished() for p in phases)
    cfg = recipe_config(image_root, tmp_path / "stopped")
    done, phases = run_recipe(cfg, callbacks=[StopInPhase("1_b")])
    assert not done and phases[0].finished() and not phases[1].finished() and not phases[2].finished()
    first = os.path.join(phases[0].folder, "final.pdparams")
    stamp = os.stat(first).st_mtime_ns
    paddle.seed(123)  # the state of the process must not matter
    done, phases = run_recipe(cfg)
    assert done and os.stat(first).st_mtime_ns == stamp  # a finished phase is never retrained
    whole, resumed = final_state(tmp_path / "whole" / "2_c"), final_state(tmp_path / "stopped" / "2_c")
    assert whole.keys() == resumed.keys()
    for key in whole:
        np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)
    b = final_state(tmp_path / "whole" / "1_b")
    a = final_state(tmp_path / "whole" / "0_a")
    assert not np.array_equal(a["blocks.1.conv1.weight"], b["blocks.1.conv1.weight"])


def test_phase_constraints_reach_the_sampler_and_the_teacher_is_the_previous_largest(image_root, tmp_path):
    space = SearchSpace.from_config(TINY)
    phases = parse_phases(THREE_PHASES, space, str(tmp_path), {})
    assert phases[0].largest() == space.largest()
    assert phases[1].sampler_defaults()["widths"] == [[1, 2, 3]] * 4
    from hnas.strategies import build_strategy
    from hnas.trainer import TrainConfig

    strategy = build_strategy(phases[1].strategy, space, TrainConfig(dyna_batch_size=2), teacher=object(),
                              sampler_defaults=phases[1].sampler_defaults())
    codes = {c for a in strategy.sampler.draw(np.random.default_rng(0), 50) for c in a.conv1_codes[2]}
    assert codes == {1, 2, 3}


def cli(config_path, *args):
    return subprocess.run([sys.executable, "train_supernet.py", "run", "--config", str(config_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def run_main(capsys, config_path, *args):
    """``train_supernet.py run`` in this process: ``(exit status, stdout, stderr)``."""
    try:
        status = train_supernet.main(["run", "--config", str(config_path), *args])
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.parametrize("change, message", [
    ({"strategy": "nope"}, "phase 1 (b): unknown strategy 'nope'; known:"),
    ({"epochs": 1, "speed": 3}, "unknown Phases[1] keys ['speed']"),
    ({"depths": [[2, 9], [2], [2], [2]]}, "phase 1 (b): sampler depths of stage 1: [2, 9] must be a non-empty subset of [2, 3, 4, 5]"),
    ({"strategy": {"name": "sandwich", "temperature": 2}}, "phase 1 (b) strategy (sandwich) keys ['temperature']"),
    ({"init_from": "missing.pdparams"}, "init_from 'missing.pdparams' is neither 'previous' nor an existing file"),
])
def test_bad_recipes_fail_before_training(image_root, tmp_path, capsys, change, message):
    phases = [dict(p) for p in THREE_PHASES]
    phases[1].update(change)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_config(image_root, tmp_path / "run", phases)))
    status, _, err = run_main(capsys, path)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_teacher_from_previous_in_the_first_phase_is_refused(image_root, tmp_path, capsys):
    phases = [dict(THREE_PHASES[1], name="first", init_from=None)]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_config(image_root, tmp_path / "run", phases)))
    status, _, err = run_main(capsys, path, "--dry_run")
    assert status == 2 and "phase 0 (first): teacher_from: previous needs an earlier phase" in err


@pytest.mark.parametrize("recipe", ["ofa_progressive", "few_shot", "first_place"])
@pytest.mark.parametrize("scale", ["small", "imagenet"])
def test_shipped_recipes_dry_run(recipe, scale, capsys):
    path = os.path.join(ROOT, "configs", "recipes", f"{recipe}_{scale}.yaml")
    status, out, err = run_main(capsys, path, "--dry_run")
    if recipe == "first_place" and scale == "imagenet":  # its teacher is the official resnet48.pdparams
        assert status == 2 and "resnet48.pdparams" in err
        return
    assert status == 0, err[-1500:]
    assert "| phase | strategy | epochs |" in out


def test_few_shot_children_rank_the_archs_they_own(image_root, tmp_path):
    phases = [{"name": "one", "strategy": "spos", "epochs": 1},
              {"name": "kid", "split": "stage4_width", "strategy": "spos", "epochs": 1, "init_from": "previous",
               "stage_widths": [[1, 2, 3, 4, 5, 6, 7]] * 3 + [[1, 7]]}]
    cfg = recipe_config(image_root, tmp_path / "fs", phases)
    done, resolved = run_recipe(cfg)
    assert done and [p.child for p in resolved[1:]] == [{"split": "stage4_width", "value": v} for v in (1, 7)]
    from hnas.phases import write_plan

    write_plan(str(tmp_path / "fs"), resolved)
    space = SearchSpace.from_config(TINY)
    settings = dict(calib_batches=1, eval_images=16, batch_size=8)
    ranker, plan = load_recipe_ranker(space, str(tmp_path / "fs"), image_root, **settings)
    code_1 = "1222223232000000111100000011110000000000001111000000"
    code_7 = "1222223232000000111100000011110000000000007777000000"
    for code, child in ((code_1, "stage4_width=1"), (code_7, "stage4_width=7")):
        own = SubnetRanker(load_supernet(space, str(tmp_path / "fs" / "1_kid" / child))[0], image_root, **settings)
        assert ranker.score(code) == own.score(code)
    with pytest.raises(ValueError, match="no few-shot child owns"):
        ranker.score("1222223232000000111100000011110000000000003333000000")
    assert set(ranker.settings(plan)["recipe_checkpoints"]) == {"stage4_width=1", "stage4_width=7"}


def test_cli_runs_a_recipe_refuses_a_second_start_and_resumes_a_finished_one(image_root, tmp_path):
    phases = [{"name": "a", "strategy": "spos", "epochs": 1},
              {"name": "b", "strategy": "sandwich", "epochs": 1, "init_from": "previous"}]
    path = tmp_path / "recipe.yaml"
    save_dir = tmp_path / "run"
    path.write_text(yaml.safe_dump(recipe_config(image_root, save_dir, phases)))
    first = cli(path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (save_dir / "recipe.json").is_file() and (save_dir / "1_b" / "final.pdparams").is_file()
    stamp = (save_dir / "1_b" / "final.pdparams").stat().st_mtime_ns
    again = cli(path)
    assert again.returncode == 2 and "already holds a recipe run; pass --resume" in again.stderr
    resumed = cli(path, "--resume", str(save_dir))
    assert resumed.returncode == 0 and "phase 1_b: finished, skipped" in resumed.stdout
    assert (save_dir / "1_b" / "final.pdparams").stat().st_mtime_ns == stamp
    changed = cli(path, "--resume", str(save_dir), "-o", "Phases.1.epochs=2")
    assert changed.returncode == 2 and "Phases differ from the ones" in changed.stderr
