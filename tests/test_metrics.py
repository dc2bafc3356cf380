"""Ranking metrics against hand-computed values and scipy; error cases of compare_rankings."""
import math

import numpy as np
import pytest
from scipy import stats

from hnas.metrics import compare_rankings, kendall_tau, pearson, spearman, topk_overlap


def sub(accs, codes=None):
    """A submission dict arch1..archN with the given accs (and codes, default distinct)."""
    codes = codes or [f"code{i}" for i in range(len(accs))]
    return {f"arch{i + 1}": {"acc": a, "arch": c} for i, (a, c) in enumerate(zip(accs, codes))}


def test_kendall_hand_computed():
    assert kendall_tau([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    # one adjacent swap among 4: 5 concordant, 1 discordant pair of 6 -> 4/6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # two swaps: 4 concordant, 2 discordant -> 2/6
    assert kendall_tau([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(1 / 3)


def test_pearson_and_spearman_hand_computed():
    # x centred (-1, 0, 1), y centred (-4/3, -1/3, 5/3): r = 3 / (sqrt(2) * sqrt(42/9))
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / (math.sqrt(2) * math.sqrt(42 / 9)))
    # ranks (1,2,3,4,5) vs (2,1,4,3,5): sum d^2 = 4 -> 1 - 6*4 / (5*24) = 0.8
    assert spearman([10, 20, 30, 40, 50], [0.2, 0.1, 0.4, 0.3, 0.5]) == pytest.approx(0.8)


def test_metrics_match_scipy_with_ties():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 6, 200).astype(float)  # many ties
    b = a + rng.normal(0, 2, 200)
    assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b)[0])
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert spearman(a, b) == pytest.approx(np.corrcoef(stats.rankdata(a), stats.rankdata(b))[0, 1])


def test_topk_overlap_hand_computed():
    pred = [5, 4, 3, 2, 1]
    true = [5, 3, 4, 1, 2]
    assert topk_overlap(pred, true, 1) == 1.0
    assert topk_overlap(pred, true, 2) == 0.5  # pred top-2 {0, 1}, true top-2 {0, 2}
    assert topk_overlap(pred, true, 3) == 1.0
    assert topk_overlap(pred, true, 4) == 0.75  # {0,1,2,3} vs {0,1,2,4}
    assert topk_overlap([1, 2, 3], [3, 2, 1], 1) == 0.0
    with pytest.raises(ValueError, match="k must be in 1..5"):
        topk_overlap(pred, true, 6)
    with pytest.raises(ValueError, match="k must be"):
        topk_overlap(pred, true, 0)


@pytest.mark.parametrize("fn", [kendall_tau, pearson, spearman])
def test_degenerate_inputs_raise(fn):
    with pytest.raises(ValueError, match="constant"):
        fn([0.0, 0.0, 0.0], [1, 2, 3])
    with pytest.raises(ValueError, match="constant"):
        fn([1, 2, 3], [7, 7, 7])
    with pytest.raises(ValueError, match="NaN"):
        fn([1, float("nan"), 3], [1, 2, 3])
    with pytest.raises(ValueError, match="3 values but b has 2"):
        fn([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        fn([1], [1])


def test_compare_rankings_uses_shared_archs():
    gt = sub([0.1, 0.2, 0.3, 0.4, 0.5])
    pred = sub([1.0, 3.0, 2.0, 4.0, 5.0, 9.0], [f"code{i}" for i in range(6)])
    del pred["arch5"]
    result = compare_rankings(pred, gt, topk=(1, 2, 10))
    shared_p, shared_g = [1.0, 3.0, 2.0, 4.0], [0.1, 0.2, 0.3, 0.4]
    assert result["n"] == 4
    assert result["only_pred"] == 1 and result["only_gt"] == 1
    assert result["kendall"] == pytest.approx(2 / 3)
    assert result["pearson"] == pytest.approx(pearson(shared_p, shared_g))
    assert result["spearman"] == pytest.approx(0.8)
    assert result["topk"] == {1: 1.0, 2: 0.5}  # k=10 > 4 shared archs is skipped


def test_compare_rankings_errors_name_the_problem():
    gt = sub([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="share no key"):
        compare_rankings({"other": {"acc": 1.0, "arch": "x"}}, gt)
    bad_code = sub([1, 2, 3], ["code0", "codeX", "code2"])
    with pytest.raises(ValueError, match="'arch2' has code 'codeX' in pred but 'code1' in gt"):
        compare_rankings(bad_code, gt)
    bad_acc = sub([1, "high", 3])
    with pytest.raises(ValueError, match="pred entry 'arch2' needs a numeric 'acc'"):
        compare_rankings(bad_acc, gt)
    with pytest.raises(ValueError, match="pred acc is constant"):
        compare_rankings(sub([0.0, 0.0, 0.0]), gt)
