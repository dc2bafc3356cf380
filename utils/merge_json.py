"""Merge arch-JSON shards back into one file, checking for conflicts and gaps.

    python utils/merge_json.py SHARD.json [SHARD.json ...] --output OUT.json [--reference REF.json]

A key in two shards must carry identical entries.  With ``--reference`` (e.g. the original
arch list) the output follows its key order, must cover exactly its keys, and every code must
match it; without it, keys keep the order of the shards as given.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hnas.io import merge_shards, read_arch_json, refuse_overwrite, write_arch_json  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", nargs="+", help="shard JSON files, in order")
    parser.add_argument("--output", required=True, help="merged JSON to write")
    parser.add_argument("--reference", default=None,
                        help="arch list whose keys, codes and order the merge must match")
    args = parser.parse_args(argv)
    try:
        refuse_overwrite(args.output, args.shards + [args.reference])
        shards = [(path, read_arch_json(path)) for path in args.shards]
        reference = read_arch_json(args.reference) if args.reference else None
        merged = merge_shards(shards, reference)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    write_arch_json(merged, args.output)
    print(f"{args.output}: {len(merged)} archs from {len(shards)} shard(s)")


if __name__ == "__main__":
    main()
