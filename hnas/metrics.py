"""Ranking-consistency metrics between predicted and ground-truth scores of the same archs.

Track 1 was scored by Kendall tau between the supernet's accuracies and stand-alone
accuracies; Pearson, Spearman and top-k overlap say the same thing from other angles (linear
agreement, rank agreement, whether the best archs are found).

A constant score vector has no ranking, so every correlation here raises ``ValueError`` on one
(scipy would return NaN with a warning); a submission whose ``acc`` fields were never filled in
is the usual cause.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

DEFAULT_TOPK = (10, 100)


def _pair(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("a", "b")):
    """Two equal-length finite float vectors of at least two entries, each not constant."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{names[0]} has {x.size} values but {names[1]} has {y.size}")
    if x.size < 2:
        raise ValueError(f"need at least 2 values to correlate, got {x.size}")
    for name, v in zip(names, (x, y)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} holds NaN or infinite values")
        if np.all(v == v[0]):
            raise ValueError(f"{name} is constant (every value is {v[0]:g}); it ranks nothing")
    return x, y


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties counted as in scipy), in [-1, 1]."""
    x, y = _pair(a, b)
    return float(stats.kendalltau(x, y)[0])


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson's linear correlation coefficient."""
    x, y = _pair(a, b)
    return float(stats.pearsonr(x, y)[0])


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    x, y = _pair(a, b)
    return float(stats.spearmanr(x, y)[0])


def top_indices(scores: Sequence[float], k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores; ties go to the earlier index (stable)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order[:k]


def topk_overlap(pred: Sequence[float], true: Sequence[float], k: int) -> float:
    """Fraction of the true top-``k`` archs that are also in the predicted top-``k``.

    Higher scores are better (accuracies).  1.0 means the predicted top-k is exactly the true one.
    """
    pred = np.asarray(pred, dtype=np.float64).ravel()
    true = np.asarray(true, dtype=np.float64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"pred has {pred.size} values but true has {true.size}")
    if not 1 <= k <= pred.size:
        raise ValueError(f"k must be in 1..{pred.size} (the number of archs), got {k}")
    hits = np.intersect1d(top_indices(pred, k), top_indices(true, k))
    return hits.size / k


def shared_scores(pred: Mapping[str, dict], gt: Mapping[str, dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Keys both submission dicts hold (in ``gt`` order) and their ``acc`` vectors.

    Raises:
        ValueError: no shared key, a shared key whose arch codes differ (named), or a
            missing/non-numeric ``acc``.
    """
    keys = [k for k in gt if k in pred]
    if not keys:
        raise ValueError(f"the two arch lists share no key (pred has {len(pred)} archs, e.g. "
                         f"{next(iter(pred), None)!r}; gt has {len(gt)}, e.g. {next(iter(gt), None)!r})")
    for key in keys:
        p_code, g_code = _code(pred, key, "pred"), _code(gt, key, "gt")
        if p_code != g_code:
            raise ValueError(f"arch {key!r} has code {p_code} in pred but {g_code} in gt; "
                             "the two files do not describe the same archs")
    return keys, _accs(pred, keys, "pred"), _accs(gt, keys, "gt")


def compare_rankings(pred: Mapping[str, dict], gt: Mapping[str, dict],
                     topk: Iterable[int] = DEFAULT_TOPK) -> dict:
    """All metrics of a predicted ranking against the ground truth, over the archs both share.

    Args:
        pred, gt: submission-format dicts ``{"archN": {"acc": float, "arch": code}}``.
        topk: the k of each top-k overlap; k larger than the shared count is skipped.

    Returns:
        ``{"n", "only_pred", "only_gt", "kendall", "pearson", "spearman", "topk": {k: overlap}}``
        where ``only_*`` count the keys that one file lacks.
    """
    keys, p, g = shared_scores(pred, gt)
    _pair(p, g, ("pred acc", "gt acc"))
    return {
        "n": len(keys),
        "only_pred": sum(1 for k in pred if k not in gt),
        "only_gt": len(gt) - len(keys),
        "kendall": kendall_tau(p, g),
        "pearson": pearson(p, g),
        "spearman": spearman(p, g),
        "topk": {int(k): topk_overlap(p, g, int(k)) for k in topk if int(k) <= len(keys)},
    }


def _code(data: Mapping[str, dict], key: str, name: str) -> str:
    entry = data[key]
    if not isinstance(entry, Mapping) or "arch" not in entry:
        raise ValueError(f"{name} entry {key!r} must be an object with an 'arch' field")
    return repr(str(entry["arch"]).strip())


def _accs(data: Mapping[str, dict], keys: list[str], name: str) -> np.ndarray:
    values = []
    for key in keys:
        acc = data[key].get("acc")
        if isinstance(acc, bool) or not isinstance(acc, (int, float)):
            raise ValueError(f"{name} entry {key!r} needs a numeric 'acc', got {acc!r}")
        values.append(float(acc))
    return np.asarray(values, dtype=np.float64)
