"""Performance predictor on the shipped Track-2 archs: held-out Kendall tau per task and model,
and whether ensembling helps.

    python benchmarks/predictor.py [--data checkpoints/CVPR_2022_NAS_Track2_train.json]
                                   [--folds 5] [--seed 0] [--replicas 3]

Prints (markdown):
1. per task, 5-fold held-out tau (mean +- std over folds) of mlp / ridge / gbdt / pairwise
   with the CLI defaults, beside what the 7th-place solution reported for its own split;
2. ensembling: one MLP vs ``--replicas`` MLPs with different seeds averaged, the MLP with
   ridge averaged in, and the MLP variants (multi-task, MSE loss);
3. fold ensemble vs refit (``--part folds``): on each outer fold, the 5 inner-fold models
   averaged (what ``train --save`` keeps and ``predict`` uses) against one model refitted on
   the whole outer training part, both scored on the outer test part.

Wall and CPU seconds of each fit are printed beside it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hnas  # noqa: E402,F401  (before paddle)
from hnas.predictor import cv  # noqa: E402
from hnas.predictor.codes import load_archs  # noqa: E402
from hnas.predictor.features import encode  # noqa: E402
from hnas.predictor.mlp import MLPConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# "Best train KTau" of the 7th-place solution's train.ipynb log: the best epoch (of 400) on its
# own validation split (10-30% of 500 archs), averaged over mini-batches of 8-50 archs.
SOURCE = {"cplfw_rank": 0.395, "market1501_rank": 0.891, "dukemtmc_rank": 0.947, "msmt17_rank": 0.970,
          "veri_rank": 0.927, "vehicleid_rank": 0.793, "veriwild_rank": 0.948, "sop_rank": 0.833}


def timed_fit(kind, x, y, tasks, splits, opts):
    cpu = time.process_time()
    fit = cv.fit_kind(kind, x, y, tasks, splits, opts)
    return fit, time.process_time() - cpu


def blend_taus(fits, x, y, splits) -> np.ndarray:
    """``[T, F]`` held-out tau of the z-scored average of several fitted kinds."""
    scores = np.concatenate([cv.zscore(f.scores(x), axis=2).mean(axis=0, keepdims=True) for f in fits])
    return cv.held_out_taus(scores, y, splits)[0]


def cell(taus: np.ndarray) -> str:
    return f"{taus.mean():.3f} ± {taus.std():.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(ROOT, "checkpoints", "CVPR_2022_NAS_Track2_train.json"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replicas", type=int, default=3, help="MLPs averaged in the ensembling row")
    parser.add_argument("--part", choices=["table", "folds", "all"], default="table",
                        help="table: sections 1-2 (default); folds: section 3; all: both")
    args = parser.parse_args()

    archs = load_archs(args.data)
    x = encode(archs.tokens)
    y = np.stack([archs.targets[t] for t in archs.tasks], axis=1)
    splits = cv.make_splits(len(x), args.folds, args.seed)
    opts = cv.Options(folds=args.folds, seed=args.seed, mlp=MLPConfig(seed=args.seed))
    if args.part in ("table", "all"):
        tables(args, archs, x, y, splits, opts)
    if args.part in ("folds", "all"):
        fold_ensemble(args, archs, x, y, splits, opts)


def fold_ensemble(args, archs, x, y, splits, opts) -> None:
    """Section 3: inner-fold ensemble vs one refit, on every outer fold."""
    inner = []
    for train, _ in splits:
        inner += [(train[a], train[b]) for a, b in cv.make_splits(len(train), args.folds, args.seed)]
    refit = [(train, test) for train, test in splits]
    print(f"\n## Fold ensemble ({args.folds} inner-fold models averaged) vs one model refitted on the "
          f"whole training part; held-out tau on the {args.folds} outer folds\n")
    print("| predictor | mean tau | " + " | ".join(t.removesuffix("_rank") for t in archs.tasks) + " | CPU s |")
    print("|---|---:|" + "---:|" * len(archs.tasks) + "---:|")
    for kind in ("mlp", "ridge", "pairwise"):
        # one batched fit holds every inner-fold model and every refit (folds^2 + folds "splits")
        fit, c = timed_fit(kind, x, y, archs.tasks, inner + refit, opts)
        scores = fit.scores(x)  # [K, folds^2 + folds, N, T]
        k = args.folds
        ens_scores = np.stack([cv.zscore(scores[:, o * k:(o + 1) * k], axis=2).mean(axis=(0, 1))
                               for o in range(k)])[None]  # [1, k, N, T]
        ens_taus = cv.held_out_taus(ens_scores, y, splits)[0]
        refit_taus = cv.held_out_taus(scores[:, k * k:], y, splits)[0]
        for name, taus in ((f"{kind}: fold ensemble", ens_taus), (f"{kind}: refit on all", refit_taus)):
            per = " | ".join(f"{v:.3f}" for v in taus.mean(axis=1))
            print(f"| {name} | {taus.mean():.3f} | {per} | {c:.1f} |")


def tables(args, archs, x, y, splits, opts) -> None:
    """Sections 1 and 2."""
    fits, cpu = {}, {}
    for kind in cv.MODELS:
        fits[kind], cpu[kind] = timed_fit(kind, x, y, archs.tasks, splits, opts)

    print(f"## {len(x)} archs, {len(archs.tasks)} tasks, {args.folds}-fold held-out Kendall tau "
          f"(mean ± std over folds), seed {args.seed}\n")
    print("| task | " + " | ".join(cv.MODELS) + " | 7th place, own split (not comparable) |")
    print("|---|" + "---:|" * (len(cv.MODELS) + 1))
    for i, task in enumerate(archs.tasks):
        cells = " | ".join(cell(fits[k].taus[i]) for k in cv.MODELS)
        print(f"| {task.removesuffix('_rank')} | {cells} | {SOURCE.get(task, float('nan')):.3f} |")
    means = " | ".join(f"**{fits[k].taus.mean(axis=1).mean():.3f}**" for k in cv.MODELS)
    print(f"| mean | {means} | {np.mean([SOURCE[t] for t in archs.tasks if t in SOURCE]):.3f} |")
    print("| wall s / CPU s | " + " | ".join(f"{fits[k].seconds:.1f} / {cpu[k]:.1f}" for k in cv.MODELS) + " | |")

    variants = [
        ("mlp, 1 replica (default)", fits["mlp"].taus, fits["mlp"].seconds, cpu["mlp"]),
    ]
    rep_opts = cv.Options(folds=args.folds, seed=args.seed, replicas=args.replicas, mlp=opts.mlp)
    rep, rep_cpu = timed_fit("mlp", x, y, archs.tasks, splits, rep_opts)
    variants.append((f"mlp, {args.replicas} replicas: one alone (mean over replicas)", rep.single_taus, None, None))
    variants.append((f"mlp, {args.replicas} replicas averaged", rep.taus, rep.seconds, rep_cpu))
    variants.append(("mlp + ridge averaged", blend_taus([fits["mlp"], fits["ridge"]], x, y, splits),
                     None, None))
    variants.append(("mlp + ridge + pairwise averaged",
                     blend_taus([fits["mlp"], fits["ridge"], fits["pairwise"]], x, y, splits), None, None))
    variants.append(("ridge + pairwise averaged", blend_taus([fits["ridge"], fits["pairwise"]], x, y, splits),
                     None, None))
    for name, mopts in [("mlp --multi_task", cv.Options(folds=args.folds, seed=args.seed, multi_task=True,
                                                        mlp=opts.mlp)),
                        ("mlp --loss mse", cv.Options(folds=args.folds, seed=args.seed,
                                                      mlp=MLPConfig(loss="mse", seed=args.seed))),
                        ("mlp --dropout 0.4 (the source's)", cv.Options(folds=args.folds, seed=args.seed,
                                                                         mlp=MLPConfig(dropout=0.4, seed=args.seed)))]:
        fit, c = timed_fit("mlp", x, y, archs.tasks, splits, mopts)
        variants.append((name, fit.taus, fit.seconds, c))

    print("\n## Ensembling and MLP variants (mean over tasks of the held-out tau)\n")
    print("| predictor | mean tau | " + " | ".join(t.removesuffix("_rank") for t in archs.tasks) + " | wall s / CPU s |")
    print("|---|---:|" + "---:|" * len(archs.tasks) + "---:|")
    for name, taus, wall, c in variants:
        per = " | ".join(f"{v:.3f}" for v in taus.mean(axis=1))
        cost = f"{wall:.1f} / {c:.1f}" if wall is not None else "-"
        print(f"| {name} | {taus.mean(axis=1).mean():.3f} | {per} | {cost} |")


if __name__ == "__main__":
    main()
