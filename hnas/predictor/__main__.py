"""Performance predictor CLI: learn to rank archs from a few hundred ranked ones.

    python -m hnas.predictor train --data FILE [--task NAME ...] [--folds 5]
                                   [--model mlp|ridge|gbdt|pairwise|all ...] [--save DIR]
    python -m hnas.predictor predict --model DIR --data FILE --output OUT [--use best|KIND]

``train`` prints, per task, the Kendall tau on held-out folds (mean +- std over folds) of
every model asked for, and the mean over tasks.  ``predict`` writes the input JSON with each
task's field set to the predicted rank (1..n, n = best; the submission format).  Track-2 files
(37-character codes, ``*_rank`` per task) and Track-1 files (52-digit codes, ``acc``) both work.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import hnas  # noqa: F401  (before paddle: see hnas/__init__.py)

from ..io import read_arch_json, write_arch_json
from ..search_space import SearchSpace
from . import cv, store
from .codes import TRACK1_NOTE, load_archs
from .features import encode
from .mlp import LOSSES, MLPConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hnas.predictor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = MLPConfig()
    tr = sub.add_parser("train", help="cross-validate predictors (and keep them with --save)")
    tr.add_argument("--data", required=True, help="Track-2 or Track-1 JSON with targets")
    tr.add_argument("--task", nargs="+", help="Track-2 tasks to use, e.g. cplfw sop (default: all)")
    tr.add_argument("--folds", type=int, default=5, help="K of the K-fold split (default %(default)s)")
    tr.add_argument("--model", nargs="+", default=["all"], choices=list(cv.MODELS) + ["all"],
                    help="predictors to fit (default: all)")
    tr.add_argument("--seed", type=int, default=0, help="seed of folds, weights, batches, dropout")
    tr.add_argument("--replicas", type=int, default=1,
                    help="MLPs per fold and task with different seeds, averaged (default %(default)s)")
    tr.add_argument("--multi_task", action="store_true", help="one MLP with an output per task")
    tr.add_argument("--epochs", type=int, default=d.epochs)
    tr.add_argument("--batch_size", type=int, default=d.batch_size)
    tr.add_argument("--lr", type=float, default=d.lr)
    tr.add_argument("--weight_decay", type=float, default=d.weight_decay)
    tr.add_argument("--dropout", type=float, default=d.dropout)
    tr.add_argument("--loss", choices=LOSSES, default=d.loss,
                    help="pairwise (ReNAS logistic, default) or mse on normalised ranks")
    tr.add_argument("--config", help="YAML whose SearchSpace section is the Track-1 grammar "
                                     "(default: the competition's)")
    tr.add_argument("--save", metavar="DIR", help="keep the fitted models in this new folder")
    pr = sub.add_parser("predict", help="rank an arch list with a saved predictor")
    pr.add_argument("--model", required=True, metavar="DIR", help="a folder written by train --save")
    pr.add_argument("--data", required=True, help="the arch list to rank (targets not needed)")
    pr.add_argument("--output", required=True, help="where to write the ranked list (a new file)")
    pr.add_argument("--use", default="best",
                    help="model kind to rank with, or best: per task the best by held-out tau")
    pr.add_argument("--force", action="store_true", help="allow --output to replace an existing file")
    return parser


def train(args) -> None:
    space = SearchSpace.from_yaml(args.config) if args.config else SearchSpace()
    archs = load_archs(args.data, args.task, space=space)
    if archs.track == "track1":
        print(TRACK1_NOTE, file=sys.stderr)
    if args.save:
        store.check_new_folder(args.save)  # before the fit, not after it
    if args.replicas < 1:
        raise ValueError(f"--replicas must be at least 1, got {args.replicas}")
    kinds = list(cv.MODELS) if "all" in args.model else list(dict.fromkeys(args.model))
    opts = cv.Options(folds=args.folds, seed=args.seed, replicas=args.replicas, multi_task=args.multi_task,
                      mlp=MLPConfig(args.epochs, args.batch_size, args.lr, args.weight_decay,
                                    args.dropout, args.loss, args.seed))
    features = encode(archs.tokens)
    targets = np.stack([archs.targets[t] for t in archs.tasks], axis=1)
    splits = cv.make_splits(len(features), args.folds, args.seed)
    print(f"{args.data}: {len(features)} archs ({archs.track}), {len(archs.tasks)} task(s), "
          f"{args.folds}-fold held-out Kendall tau (mean +- std over folds)")
    if "mlp" in kinds:
        c = opts.mlp
        print(f"mlp: {c.epochs} epochs, batch {c.batch_size}, lr {c.lr:g}, weight decay {c.weight_decay:g}, "
              f"dropout {c.dropout:g}, {c.loss} loss, {args.replicas} replica(s) per fold, "
              f"{'one multi-task model' if args.multi_task else 'one model per task'}")
    fitted = [cv.fit_kind(kind, features, targets, archs.tasks, splits, opts) for kind in kinds]
    print(format_table(fitted))
    if args.save:
        store.save(args.save, fitted, archs, space, {"options": {
            "folds": args.folds, "seed": args.seed, "replicas": args.replicas,
            "multi_task": args.multi_task, "mlp": opts.mlp.to_dict(), "data": args.data}})
        print(f"saved {', '.join(kinds)} to {args.save}")


def format_table(fitted: list) -> str:
    """Task rows x model columns of held-out tau, a mean row and a seconds row."""
    tasks = fitted[0].tasks
    head = f"{'task':<12}" + "".join(f"{f.kind:>16}" for f in fitted)
    lines = [head, "-" * len(head)]
    for i, task in enumerate(tasks):
        cells = "".join(f"{f.taus[i].mean():>9.3f} +-{f.taus[i].std():.3f}" for f in fitted)
        lines.append(f"{task.removesuffix('_rank'):<12}{cells}")
    lines.append(f"{'mean':<12}" + "".join(f"{f.taus.mean(axis=1).mean():>16.3f}" for f in fitted))
    lines.append(f"{'seconds':<12}" + "".join(f"{f.seconds:>16.1f}" for f in fitted))
    return "\n".join(lines)


def predict(args) -> None:
    if os.path.realpath(args.output) == os.path.realpath(args.data) and not args.force:
        raise ValueError(f"--output {args.output!r} is the input file; choose another or pass --force")
    if os.path.exists(args.output) and not args.force:
        raise ValueError(f"--output {args.output!r} exists; choose a new file or pass --force")
    meta, fitted = store.load(args.model)
    archs = load_archs(args.data, need_targets=False, space=store.load_space(meta))
    if archs.track != meta["track"] or archs.tokens.shape[1] != meta["code_length"]:
        raise ValueError(f"{args.data} holds {archs.track} codes of length {archs.tokens.shape[1]} but "
                         f"{args.model} was trained on {meta['track']} codes of length {meta['code_length']}")
    if archs.track == "track1":
        print(TRACK1_NOTE, file=sys.stderr)
    kinds = store.choose_kinds(fitted, args.use)
    scores = store.predict_scores(fitted, kinds, encode(archs.tokens))
    data = read_arch_json(args.data)
    for task, score in scores.items():
        for key, rank in zip(archs.keys, cv.to_ranks(score)):
            data[key][task] = int(rank)
    write_arch_json(data, args.output)
    used = ", ".join(f"{t.removesuffix('_rank')}={k}" for t, k in kinds.items())
    print(f"ranked {len(archs.keys)} archs ({used}); wrote {args.output}")


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        train(args) if args.command == "train" else predict(args)
    except (ValueError, FileNotFoundError) as exc:  # a user's mistake: one line, no traceback
        parser.exit(2, f"{parser.prog}: error: {exc}\n")


if __name__ == "__main__":
    main()
