"""FLOPs (multiply-accumulates) and params of every arch in a JSON, as CSV or a submission.

    python utils/flops_table.py IN.json --output OUT.csv  [--config configs/resnet48_imagenet.yaml]
    python utils/flops_table.py IN.json --output OUT.json [--score flops|params]

A ``.csv`` output has columns key, arch, flops, params; a ``.json`` output is the input with
``acc`` set to the chosen count, ready for ``kendall.py`` beside a supernet's submission.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hnas.config import load_config, section  # noqa: E402
from hnas.io import atomic_write, read_arch_json, refuse_overwrite, with_scores, write_arch_json  # noqa: E402
from hnas.search_space import SearchSpace, validate_codes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "resnet48_imagenet.yaml")


def cost_table(space: SearchSpace, data: dict) -> list[tuple[str, str, int, int]]:
    """(key, code, flops, params) per arch, in key order."""
    keys = list(data)
    codes = [data[k]["arch"] for k in keys]
    validate_codes(space, codes, keys)
    return [(k, c, space.flops(c), space.params(c)) for k, c in zip(keys, codes)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json_path", help="arch list")
    parser.add_argument("--output", required=True, help="a .csv table or a .json submission")
    parser.add_argument("--score", choices=("flops", "params"), default="flops",
                        help="what goes into acc of a .json output (default: %(default)s)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="search space config (default: Track 1)")
    parser.add_argument("-o", "--opt", action="append", default=[], help="config override Section.key=value")
    args = parser.parse_args(argv)
    try:
        ext = os.path.splitext(args.output)[1].lower()
        if ext not in (".csv", ".json"):
            raise ValueError(f"--output must end in .csv or .json, got {args.output!r}")
        refuse_overwrite(args.output, [args.json_path])
        space = SearchSpace.from_config(section(load_config(args.config, args.opt), "SearchSpace"))
        data = read_arch_json(args.json_path)
        table = cost_table(space, data)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if ext == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("key", "arch", "flops", "params"))
        writer.writerows(table)
        atomic_write(args.output, buffer.getvalue())
    else:
        column = 2 if args.score == "flops" else 3
        write_arch_json(with_scores(data, [row[column] for row in table]), args.output)
    flops = [row[2] for row in table]
    print(f"{args.output}: {len(table)} archs, FLOPs {min(flops) / 1e6:.1f}M..{max(flops) / 1e6:.1f}M")


if __name__ == "__main__":
    main()
