"""Hamming distances between arch codes: how far apart the archs of one or two lists are.

    python utils/distance_calc.py A.json [B.json] [--nearest] [--max_pairs 1000000] [--png H.png]

One file: distances between its archs (all pairs, or a seeded sample of ``--max_pairs``).
Two files: distances between an arch of A and an arch of B.  ``--nearest`` instead gives, for
each arch of A, the distance to its nearest other arch (in B, or in A itself).  Prints a
summary and a histogram; ``--config`` validates the codes and writes them in 52-digit form.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hnas.config import load_config, section  # noqa: E402
from hnas.io import atomic_write, read_arch_json, refuse_overwrite  # noqa: E402
from hnas.search_space import SearchSpace, code_digits, hamming_distances, validate_codes  # noqa: E402


def code_matrix(data: dict, space: SearchSpace | None, name: str) -> np.ndarray:
    """``[n, length]`` uint8 digits of the codes of ``data``; all codes must share one length."""
    keys = list(data)
    codes = [str(data[k]["arch"]).strip() for k in keys]
    if space is not None:
        validate_codes(space, codes, keys)
        codes = [space.normalize(c) for c in codes]
    for key, code in zip(keys, codes):
        if not (code.isascii() and code.isdigit()) or len(code) != len(codes[0]):
            raise ValueError(f"{name}: arch {key!r} code {code!r} is not {len(codes[0])} digits like "
                             f"{keys[0]!r}'s; pass --config to normalise codes")
    return code_digits(codes)


def pair_distances(a: np.ndarray, b: np.ndarray | None, max_pairs: int, rng) -> tuple[np.ndarray, bool]:
    """Distances of all pairs (within ``a`` if ``b`` is None, else across), or of a random
    sample of ``max_pairs`` pairs when there are more.  Returns (distances, exact)."""
    n = len(a)
    total = n * (n - 1) // 2 if b is None else n * len(b)
    if total == 0:
        raise ValueError("need at least two archs to measure a distance")
    if total <= max_pairs:
        if b is None:
            i, j = np.triu_indices(n, k=1)
        else:
            i, j = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(len(b)), indexing="ij"))
        exact = True
    else:
        i = rng.integers(0, n, max_pairs)
        if b is None:
            j = (i + rng.integers(1, n, max_pairs)) % n  # any other arch, uniformly
        else:
            j = rng.integers(0, len(b), max_pairs)
        exact = False
    other = a if b is None else b
    return hamming_distances(a[i], other[j]), exact


def nearest_distances(a: np.ndarray, b: np.ndarray | None, chunk: int = 512) -> np.ndarray:
    """For each row of ``a``, the distance to the nearest row of ``b`` (or another row of ``a``).

    Distance = length - matches, with matches counted by a product of one-hot digit matrices,
    so 45,000 x 45,000 codes take a minute rather than an hour.
    """
    other = a if b is None else b
    if len(other) < (2 if b is None else 1):
        raise ValueError("need another arch to find a nearest neighbour")
    length = a.shape[1]
    other_hot = _one_hot(other)
    out = np.empty(len(a), dtype=np.int64)
    for start in range(0, len(a), chunk):
        matches = _one_hot(a[start:start + chunk]) @ other_hot.T
        if b is None:
            rows = np.arange(matches.shape[0])
            matches[rows, start + rows] = -1  # an arch is not its own neighbour
        out[start:start + chunk] = length - matches.max(axis=1).astype(np.int64)
    return out


def _one_hot(codes: np.ndarray) -> np.ndarray:
    """``[n, length]`` digits -> ``[n, length * 10]`` float32 indicators."""
    n, length = codes.shape
    hot = np.zeros((n, length, 10), dtype=np.float32)
    hot[np.arange(n)[:, None], np.arange(length)[None, :], codes] = 1.0
    return hot.reshape(n, length * 10)


def summary(dist: np.ndarray, what: str, length: int) -> str:
    counts = np.bincount(dist, minlength=length + 1)
    lines = [f"{what}: {dist.size}",
             f"min {dist.min()}  mean {dist.mean():.2f}  median {np.median(dist):g}  max {dist.max()}  "
             f"(code length {length})",
             f"identical codes (distance 0): {counts[0]}",
             "distance  count"]
    peak = counts.max()
    for d in range(dist.min(), dist.max() + 1):
        bar = "#" * int(round(40 * counts[d] / peak))
        lines.append(f"{d:8d}  {counts[d]:7d}  {bar}")
    return "\n".join(lines)


def save_histogram(dist: np.ndarray, what: str, path: str) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(dist, bins=np.arange(dist.min(), dist.max() + 2) - 0.5)
    ax.set_xlabel("Hamming distance between arch codes")
    ax.set_ylabel("count")
    ax.set_title(f"{what} (n = {dist.size}, mean {dist.mean():.2f})")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="arch JSON")
    parser.add_argument("b", nargs="?", default=None, help="second arch JSON (optional)")
    parser.add_argument("--nearest", action="store_true", help="nearest-neighbour distance per arch of A")
    parser.add_argument("--max_pairs", type=int, default=1_000_000,
                        help="sample this many pairs when there are more (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pair sample")
    parser.add_argument("--config", default=None, help="validate and normalise codes with this search space")
    parser.add_argument("-o", "--opt", action="append", default=[], help="config override Section.key=value")
    parser.add_argument("--png", default=None, help="also save the histogram as a PNG")
    args = parser.parse_args(argv)
    try:
        if args.max_pairs < 1:
            raise ValueError(f"--max_pairs must be >= 1, got {args.max_pairs}")
        if args.png:
            refuse_overwrite(args.png, [args.a, args.b])
        space = (SearchSpace.from_config(section(load_config(args.config, args.opt), "SearchSpace"))
                 if args.config else None)
        a = code_matrix(read_arch_json(args.a), space, args.a)
        b = code_matrix(read_arch_json(args.b), space, args.b) if args.b else None
        if b is not None and a.shape[1] != b.shape[1]:
            raise ValueError(f"codes of {args.a} have {a.shape[1]} digits but those of {args.b} have "
                             f"{b.shape[1]}; pass --config to normalise them")
        if args.nearest:
            dist = nearest_distances(a, b)
            what = f"nearest-neighbour distances of {len(a)} archs" + (f" to {len(b)} archs" if b is not None else "")
        else:
            dist, exact = pair_distances(a, b, args.max_pairs, np.random.default_rng(args.seed))
            what = ("pairs" if exact else "sampled pairs") + (" across the two files" if b is not None else "")
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(summary(dist, what, a.shape[1]))
    if args.png:
        save_histogram(dist, what, args.png)
        print(f"histogram: {args.png}")


if __name__ == "__main__":
    main()
