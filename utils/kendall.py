"""Kendall tau, Pearson, Spearman and top-k overlap of a predicted ranking against the truth.

    python utils/kendall.py PRED.json GT.json [--topk 10 100] [--json]

Both files are in the submission format; the archs both hold (by key) are compared, and a key
whose arch codes differ between the files is an error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hnas.io import read_arch_json  # noqa: E402
from hnas.metrics import DEFAULT_TOPK, compare_rankings  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pred", help="predicted scores (e.g. the supernet's submission JSON)")
    parser.add_argument("gt", help="ground-truth scores (e.g. stand-alone accuracies)")
    parser.add_argument("--topk", type=int, nargs="+", default=list(DEFAULT_TOPK),
                        help="k of each top-k overlap (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    return parser


def report(result: dict, topk: list[int]) -> str:
    lines = [f"archs compared : {result['n']} (only in pred: {result['only_pred']}, "
             f"only in gt: {result['only_gt']})",
             f"Kendall tau    : {result['kendall']:.4f}",
             f"Pearson        : {result['pearson']:.4f}",
             f"Spearman       : {result['spearman']:.4f}"]
    for k in topk:
        if k in result["topk"]:
            overlap = result["topk"][k]
            lines.append(f"top-{k} overlap : {overlap:.3f} ({round(overlap * k)}/{k})")
        else:
            lines.append(f"top-{k} overlap : skipped (only {result['n']} shared archs)")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if any(k < 1 for k in args.topk):
        parser.error(f"--topk values must be >= 1, got {args.topk}")
    try:
        result = compare_rankings(read_arch_json(args.pred, require_acc=True),
                                  read_arch_json(args.gt, require_acc=True), args.topk)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(json.dumps(result) if args.json else report(result, args.topk))


if __name__ == "__main__":
    main()
