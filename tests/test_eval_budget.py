"""benchmarks/eval_budget.py scores a whole grid of evaluation settings from one pass per
calibration setting; each of its scores must be the one the ranker itself gives."""
from __future__ import annotations

import importlib.util
import os

import pytest

from hnas.checkpoint import save_checkpoint
from hnas.data import make_image_folder
from hnas.evaluator import SubnetRanker, load_supernet
from hnas.models import ResNetSuperNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALIB_SIZES, EVAL_SIZES, BATCH = [0, 3], [7, 20, 40], 10


@pytest.fixture(scope="module")
def bench():
    path = os.path.join(ROOT, "benchmarks", "eval_budget.py")
    spec = importlib.util.spec_from_file_location("eval_budget_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_run(tmp_path, small_space, randomize_bn, track1_codes):
    """Images, a supernet with non-default stored BN statistics, and eight Track-1 archs."""
    image_dir = make_image_folder(str(tmp_path / "images"), num_classes=10, per_class=5, image_size=32)
    save_checkpoint(str(tmp_path / "run"), "final", randomize_bn(ResNetSuperNet(small_space)).state_dict())
    return image_dir, str(tmp_path / "run"), track1_codes[:8]


def test_every_grid_score_equals_a_direct_ranker_score(bench, tiny_run, small_space):
    image_dir, checkpoint, codes = tiny_run
    scorer = bench.BudgetScorer(load_supernet(small_space, checkpoint)[0], image_dir, CALIB_SIZES, EVAL_SIZES, BATCH)
    records = [scorer.score(code) for code in codes]  # K = 0 after K = 3: stored statistics restored
    for k in CALIB_SIZES:
        for m in EVAL_SIZES:
            ranker = SubnetRanker(load_supernet(small_space, checkpoint)[0], image_dir, k, m, BATCH)
            direct = [ranker.score(code) for code in codes]
            assert [r["hits"][str(k)][str(m)] / m for r in records] == direct, (k, m)


def test_the_largest_setting_agrees_with_itself_and_costs_the_most_images(bench, tiny_run, small_space):
    image_dir, checkpoint, codes = tiny_run
    scorer = bench.BudgetScorer(load_supernet(small_space, checkpoint)[0], image_dir, CALIB_SIZES, EVAL_SIZES, BATCH)
    rows = bench.summarize([scorer.score(code) for code in codes], CALIB_SIZES, EVAL_SIZES, BATCH, resamples=50)
    assert len(rows) == len(CALIB_SIZES) * len(EVAL_SIZES)
    largest = rows[-1]
    assert (largest["calib_batches"], largest["eval_images"]) == (3, 40)
    assert largest["tau"] == pytest.approx(1.0) and largest["pearson"] == pytest.approx(1.0)
    assert largest["images_per_arch"] == 3 * BATCH + 40 == max(r["images_per_arch"] for r in rows)
    assert rows[0]["images_per_arch"] == 7 and all(r["secs_per_arch"] > 0 for r in rows)
    assert bench.cheapest(rows)["tau"] >= bench.TAU_GOAL


def test_a_smaller_draw_of_validation_images_is_a_subset_of_the_largest(bench, tiny_run):
    masks = bench.subset_masks(tiny_run[0], EVAL_SIZES, seed=0)
    assert [int(masks[m].sum()) for m in EVAL_SIZES] == EVAL_SIZES
    assert not masks[7][:7].all()  # a subset, but not the leading images: why the masks exist
