"""The pure parts of benchmarks/consistency.py: ground-truth parsing, statistics, cache keys.
The long runs (supernet training and ranking) are not part of the test suite."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = "1527213151716111266600000034146444244434003464000000"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("consistency_bench", os.path.join(ROOT, "benchmarks", "consistency.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_lines(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def runs_file(tmp_path, n=6, twice=3):
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        code = ARCH[:-2] + f"{i:02d}"
        records.append({"arch": code, "seed": 1, "acc": 0.8 + 0.01 * i})
        if i < twice:
            records.append({"arch": code, "seed": 2, "acc": 0.8 + 0.01 * i + float(rng.normal(0, 0.002))})
    return write_lines(tmp_path / "gt.jsonl", records)


def test_ground_truth_parses_into_seeds_and_a_mean_target(bench, tmp_path):
    runs = bench.read_ground_truth(runs_file(tmp_path))
    assert len(runs) == 6 and sum(len(s) == 2 for s in runs.values()) == 3
    target = bench.target(runs)
    code = ARCH[:-2] + "00"
    assert target[code] == pytest.approx(np.mean(list(runs[code].values())))
    archs, first, second = bench.seed_pairs(runs)
    assert len(archs) == 3 and first[0] == runs[archs[0]][1] and second[0] == runs[archs[0]][2]


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2 is not JSON"),
    (json.dumps({"arch": ARCH, "seed": 1}), "line 2 needs the keys arch, seed and acc"),
    (json.dumps({"arch": ARCH, "seed": 1, "acc": 83.2}), "line 2: acc must be a fraction"),
    (json.dumps({"arch": ARCH, "seed": "1", "acc": 0.8}), "line 2: seed must be an integer"),
    (json.dumps({"arch": "12ab", "seed": 1, "acc": 0.8}), "line 2: arch must be a string of digits"),
    (json.dumps({"arch": ARCH, "seed": 1, "acc": 0.8}), "line 2: arch .* with seed 1 appears twice"),
])
def test_a_bad_ground_truth_line_is_named(bench, tmp_path, line, message):
    path = write_lines(tmp_path / "bad.jsonl", [{"arch": ARCH, "seed": 1, "acc": 0.8}, line])
    with pytest.raises(ValueError, match=message):
        bench.read_ground_truth(path)


def test_the_shared_ground_truth_parses(bench):
    if not os.path.isfile(bench.DEFAULT_GT):
        pytest.skip("the shared ground truth is not on this machine")
    runs = bench.read_ground_truth(bench.DEFAULT_GT)
    assert len(runs) == 36 and sum(len(s) == 2 for s in runs.values()) == 12


def test_tau_and_pearson_match_scipy_with_ties(bench):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
    y[:5] = y[5]
    assert bench.kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y)[0])
    assert bench.pearson_r(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert np.isnan(bench.kendall_tau_b(np.ones(5), np.arange(5)))


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_archs(bench):
    rng = np.random.default_rng(2)
    widths = []
    for n in (20, 200):
        truth = rng.normal(size=n)
        pred = truth + rng.normal(size=n)
        lo, hi = bench.bootstrap_ci(pred, truth, resamples=500)
        assert lo < bench.kendall_tau_b(pred, truth) < hi
        widths.append(hi - lo)
        assert bench.bootstrap_ci(pred, truth, resamples=500) == (lo, hi)  # deterministic
    assert widths[1] < widths[0] / 2
    lo, hi = bench.bootstrap_ci(np.arange(10.0), np.arange(10.0), resamples=200)
    assert lo == hi == 1.0
    with pytest.raises(ValueError, match="at least 3"):
        bench.bootstrap_ci([1, 2], [1, 2])


def test_ceiling_is_high_for_a_quiet_ground_truth_and_low_for_a_noisy_one(bench, tmp_path):
    def ceiling(noise):
        rng = np.random.default_rng(3)
        records = []
        for i in range(30):
            true = 0.8 + 0.002 * i
            for seed in (1, 2):
                records.append({"arch": ARCH[:-2] + f"{i:02d}", "seed": seed,
                                "acc": float(true + rng.normal(0, noise))})
        return bench.ceilings(bench.read_ground_truth(write_lines(tmp_path / f"{noise}.jsonl", records)), sims=300)

    quiet, noisy = ceiling(0.0005), ceiling(0.02)
    assert quiet["perfect_vs_target"] > 0.9 and noisy["perfect_vs_target"] < 0.6
    assert quiet["seed_tau"] > noisy["seed_tau"]
    # the mean of two seeds is a less noisy target than one seed
    assert noisy["perfect_vs_target"] > noisy["perfect_vs_one_seed"]
    lo, hi = noisy["perfect_vs_target_range"]
    assert lo < noisy["perfect_vs_target"] < hi
    assert noisy["noise_sd"] == pytest.approx(0.02, rel=0.35)


def test_a_setting_key_names_every_knob_and_changes_with_any(bench):
    knobs = bench.expand_settings({})[0]
    key = bench.setting_key(knobs)
    for name in {**bench.TRAIN_KNOBS, **bench.RANK_KNOBS}:
        assert (f"{name}=" in key) == (name != "recipe")  # recipe=none: keys from before recipes match
    assert "recipe=few_shot" in bench.setting_key({**knobs, "recipe": "few_shot"})
    assert bench.setting_key(dict(reversed(list(knobs.items())))) == key  # order-free
    for name, value in (("epochs", 3), ("finetune_steps", 10), ("nesterov", False), ("lr", 0.1)):
        assert bench.setting_key({**knobs, name: value}) != key
    train, rank = bench.split_knobs(knobs)
    assert set(train) == set(bench.TRAIN_KNOBS) and set(rank) == set(knobs)
    assert bench.short_hash(key) != bench.short_hash(bench.setting_key({**knobs, "seed": 1}))


def test_settings_expand_to_every_combination(bench):
    settings = bench.expand_settings({"strategy": ["spos", "sandwich"], "epochs": [1, 2, 4]})
    assert len(settings) == 6 and len({bench.setting_key(s) for s in settings}) == 6
    assert all(s["lr"] == bench.TRAIN_KNOBS["lr"] for s in settings)
    with pytest.raises(ValueError, match="unknown knob"):
        bench.expand_settings({"epoch": [1]})


def test_a_recipe_row_owns_its_per_phase_knobs_and_counts_its_phases(bench):
    (knobs,) = bench.expand_settings({"recipe": ["few_shot"], "epochs": [1], "train_images": [5000]})
    assert all(knobs[k] == "-" for k in bench.RECIPE_OWNS) and knobs["epochs"] == 1
    assert bench.recipe_phase_runs("few_shot") == (2, 8)  # one-shot, then 7 stage-4 width children
    assert bench.recipe_phase_runs("ofa_progressive") == (5, 5)
    with pytest.raises(ValueError, match="--lr does not apply to --recipe"):
        bench.expand_settings({"recipe": ["few_shot"], "lr": [0.1]})
    with pytest.raises(ValueError, match="no recipe 'fewshot'.*known: .*few_shot"):
        bench.expand_settings({"recipe": ["fewshot"]})


def test_a_predictor_missing_an_arch_is_refused(bench):
    truth = {"a": 0.8, "b": 0.81, "c": 0.82, "d": 0.79}
    result = bench.score_predictor({"a": 1.0, "b": 2.0, "c": 3.0, "d": 0.0}, truth)
    assert result["tau"] == pytest.approx(1.0) and result["n"] == 4
    with pytest.raises(ValueError, match="no score for 1"):
        bench.score_predictor({"a": 1.0, "b": 2.0, "c": 3.0}, truth)
