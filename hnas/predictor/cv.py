"""Cross-validated fitting of every predictor kind, and turning scores into rankings.

A fitted kind holds one model per (replica, fold, task): ``K`` replicas (different random
seeds; 1 for the deterministic baselines) x ``F`` folds x ``T`` tasks, each trained on the
fold's training part.  Its held-out Kendall tau per task and fold is what the CLI prints, and
the same models, averaged, rank new archs (a fold ensemble: every arch of the training file
was seen by ``F - 1`` of them).  Scores of different models are averaged after a z-score over
the archs being ranked, so models with different output scales weigh the same.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import KFold

from ..metrics import kendall_tau
from . import mlp
from .baselines import BASELINES, make_baseline

MODELS = ("mlp",) + BASELINES


@dataclass
class Options:
    """How ``train`` fits: folds, seeds, the MLP recipe and how many replicas it averages."""

    folds: int = 5
    seed: int = 0
    replicas: int = 1
    multi_task: bool = False
    mlp: mlp.MLPConfig = field(default_factory=mlp.MLPConfig)


@dataclass
class Fitted:
    """The models of one kind, and how they did on their held-out folds.

    Attributes:
        kind: one of :data:`MODELS`.
        tasks: the task names, in output order.
        folds, replicas: the model grid is ``replicas x folds x tasks``.
        state: a :class:`mlp.BatchedMLP` (members ordered replica, fold[, task]) or, for a
            baseline, ``state[fold][task]`` fitted estimators.
        multi_task: the MLP members have one output per task instead of one task each.
        taus: ``[T, F]`` held-out Kendall tau of the replica ensemble.
        single_taus: ``[T, F]`` the same for one replica, averaged over replicas.
        seconds: wall time of fitting and scoring.
    """

    kind: str
    tasks: list
    folds: int
    replicas: int
    state: object
    multi_task: bool = False
    taus: np.ndarray | None = None
    single_taus: np.ndarray | None = None
    seconds: float = 0.0

    def scores(self, features: np.ndarray) -> np.ndarray:
        """``[K, F, N, T]`` scores of every model on ``features [N, D]`` (larger = better)."""
        k, f, t = self.replicas, self.folds, len(self.tasks)
        if self.kind != "mlp":
            out = np.array([[est.predict(features) for est in per_task] for per_task in self.state])
            return out.transpose(0, 2, 1)[None]  # [1, F, N, T]
        raw = mlp.predict(self.state, features)  # [members, N, T or 1]
        if self.multi_task:
            return raw.reshape(k, f, len(features), t)
        return raw[..., 0].reshape(k, f, t, len(features)).transpose(0, 1, 3, 2)


def make_splits(n: int, folds: int, seed: int) -> list:
    """``folds`` (train rows, test rows) pairs of a shuffled K-fold split of ``n`` archs."""
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    if n < 2 * folds:
        raise ValueError(f"{n} archs are too few for {folds} folds (need at least {2 * folds})")
    return list(KFold(folds, shuffle=True, random_state=seed).split(np.zeros(n)))


def fit_kind(kind: str, features: np.ndarray, targets: np.ndarray, tasks: list,
             splits: list, opts: Options) -> Fitted:
    """Fit ``kind`` on every fold and task and measure held-out Kendall tau.

    Args:
        features: ``float32 [N, D]``.
        targets: ``[N, T]``, larger is better.
        tasks: the T task names.
        splits: from :func:`make_splits`.
    """
    start = time.perf_counter()
    folds, ntask = len(splits), targets.shape[1]
    if kind == "mlp":
        replicas = opts.replicas
        if opts.multi_task:
            grid = [(r, f, None) for r in range(replicas) for f in range(folds)]
            member_targets = np.stack([targets for _ in grid])
        else:
            grid = [(r, f, t) for r in range(replicas) for f in range(folds) for t in range(ntask)]
            member_targets = np.stack([targets[:, [t]] for _, _, t in grid])
        rows = [splits[f][0] for _, f, _ in grid]
        cfg = mlp.MLPConfig(**{**opts.mlp.to_dict(), "seed": opts.seed})
        state = mlp.fit(features, member_targets, rows, cfg)
    elif kind in BASELINES:
        replicas = 1
        state = [[make_baseline(kind, opts.seed).fit(features[tr], mlp.normalised_ranks(targets[:, [t]], tr)[tr, 0])
                  for t in range(ntask)] for tr, _ in splits]
    else:
        raise ValueError(f"unknown model {kind!r}; choose from {', '.join(MODELS)} or all")
    fitted = Fitted(kind, list(tasks), folds, replicas, state, multi_task=opts.multi_task and kind == "mlp")
    fitted.taus, fitted.single_taus = held_out_taus(fitted.scores(features), targets, splits)
    fitted.seconds = time.perf_counter() - start
    return fitted


def held_out_taus(scores: np.ndarray, targets: np.ndarray, splits: list) -> tuple:
    """Kendall tau on each fold's test rows: of the replica ensemble, and of single replicas
    (averaged).  ``scores [K, F, N, T]``; returns two ``[T, F]`` arrays."""
    k, folds, _, ntask = scores.shape
    ens = np.zeros((ntask, folds))
    single = np.zeros((ntask, folds))
    for f, (_, test) in enumerate(splits):
        for t in range(ntask):
            part = scores[:, f, test, t]
            ens[t, f] = _tau(zscore(part, axis=1).mean(axis=0), targets[test, t])
            single[t, f] = np.mean([_tau(part[r], targets[test, t]) for r in range(k)])
    return ens, single


def ensemble_scores(scores: np.ndarray) -> np.ndarray:
    """``[K, F, N, T]`` -> ``[N, T]``: z-score each model over the N archs, then average."""
    return zscore(scores, axis=2).mean(axis=(0, 1))


def zscore(x: np.ndarray, axis: int) -> np.ndarray:
    """``(x - mean) / std`` along ``axis``; a constant slice becomes 0."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=axis, keepdims=True)
    return (x - x.mean(axis=axis, keepdims=True)) / np.where(std > 0, std, 1.0)


def to_ranks(score: np.ndarray) -> np.ndarray:
    """Ranks ``1..n`` of ``score [N]`` (n = the best); ties go to the earlier arch first."""
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score), dtype=np.int64)
    ranks[order] = np.arange(1, len(score) + 1)
    return ranks


def _tau(pred: np.ndarray, true: np.ndarray) -> float:
    try:
        return kendall_tau(pred, true)
    except ValueError:  # a constant prediction ranks nothing
        return 0.0
