"""Take a fixed random subset of an arch JSON, in its original order (for quick rankings).

    python utils/sample_json.py IN.json --num 200 --seed 0 --output SUBSET.json
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hnas.io import read_arch_json, refuse_overwrite, write_arch_json  # noqa: E402


def sample_archs(data: dict, num: int, seed: int) -> dict:
    """``num`` entries of ``data`` chosen by ``seed``, keys and their order kept."""
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    keys = list(data)
    if num >= len(keys):
        return dict(data)
    chosen = np.sort(np.random.default_rng(seed).choice(len(keys), size=num, replace=False))
    return {keys[i]: data[keys[i]] for i in chosen}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json_path", help="the arch list to sample from")
    parser.add_argument("--num", type=int, required=True, help="archs to keep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="JSON to write")
    args = parser.parse_args(argv)
    try:
        data = read_arch_json(args.json_path)
        refuse_overwrite(args.output, [args.json_path])
        subset = sample_archs(data, args.num, args.seed)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    write_arch_json(subset, args.output)
    print(f"{args.output}: {len(subset)} of {len(data)} archs (seed {args.seed})")


if __name__ == "__main__":
    main()
