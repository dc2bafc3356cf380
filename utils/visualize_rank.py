"""PNG scatter of predicted vs. true rank of the archs two submission files share.

    python utils/visualize_rank.py PRED.json GT.json --output rank.png [--title TEXT]
        [--pred_label supernet] [--gt_label FLOPs]

Rank 1 is the best (highest acc).  A perfect ranking is the diagonal; Kendall tau is in the title.
"""
from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hnas.io import atomic_write, read_arch_json, refuse_overwrite  # noqa: E402
from hnas.metrics import compare_rankings, shared_scores  # noqa: E402


def plot_ranks(pred: dict, gt: dict, title: str | None = None, pred_label: str = "predicted",
               gt_label: str = "true") -> bytes:
    """The PNG bytes of the rank scatter."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = compare_rankings(pred, gt, topk=())
    _, p, g = shared_scores(pred, gt)
    pred_rank, true_rank = stats.rankdata(-p), stats.rankdata(-g)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(true_rank, pred_rank, s=max(1.0, 20.0 / np.sqrt(len(p) / 100 + 1)), alpha=0.5, linewidths=0)
    ax.plot([1, len(p)], [1, len(p)], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel(f"{gt_label} rank (1 = best)")
    ax.set_ylabel(f"{pred_label} rank (1 = best)")
    heading = f"Kendall tau = {result['kendall']:.4f}  (n = {result['n']})"
    ax.set_title(f"{title}\n{heading}" if title else heading)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pred", help="predicted scores (submission JSON)")
    parser.add_argument("gt", help="ground-truth scores (submission JSON)")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--title", default=None, help="first title line (e.g. the strategy name)")
    parser.add_argument("--pred_label", default="predicted", help="y-axis name (e.g. supernet)")
    parser.add_argument("--gt_label", default="true", help="x-axis name (e.g. stand-alone, FLOPs)")
    args = parser.parse_args(argv)
    try:
        refuse_overwrite(args.output, [args.pred, args.gt])
        png = plot_ranks(read_arch_json(args.pred, require_acc=True),
                         read_arch_json(args.gt, require_acc=True), args.title,
                         args.pred_label, args.gt_label)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    atomic_write(args.output, png)
    print(f"{args.output}: rank scatter written")


if __name__ == "__main__":
    main()
