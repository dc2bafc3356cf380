"""Split an arch JSON into N contiguous shards, keys and order kept (merge_json.py undoes it).

    python utils/split_json.py IN.json --num_shards 4 [--out_dir DIR] [--config YAML]

Writes ``DIR/IN_shard{i}of{N}.json`` for i = 0..N-1 (default DIR: the input's folder).  Every
code is checked against the search space of ``--config`` first (default: Track 1), so a bad
code fails here, naming its key, rather than hours later in one shard's ranking.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hnas.config import load_config, section  # noqa: E402
from hnas.io import read_arch_json, refuse_overwrite, split_shards, write_arch_json  # noqa: E402
from hnas.search_space import ArchCodeError, SearchSpace, validate_codes  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                              "resnet48_imagenet.yaml")


def shard_paths(path: str, num_shards: int, out_dir: str | None) -> list[str]:
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = out_dir if out_dir is not None else os.path.dirname(os.path.abspath(path))
    return [os.path.join(folder, f"{stem}_shard{i}of{num_shards}.json") for i in range(num_shards)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json_path", help="the arch list to split")
    parser.add_argument("--num_shards", type=int, required=True, help="number of shards (>= 1)")
    parser.add_argument("--out_dir", default=None, help="folder for the shards (default: the input's)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="search space the codes must be valid in "
                                                                 "(default: Track 1)")
    parser.add_argument("-o", "--opt", action="append", default=[], help="config override Section.key=value")
    args = parser.parse_args(argv)
    try:
        data = read_arch_json(args.json_path)
        space = SearchSpace.from_config(section(load_config(args.config, args.opt), "SearchSpace"))
        validate_codes(space, [entry["arch"] for entry in data.values()], list(data))
        shards = split_shards(data, args.num_shards)
        paths = shard_paths(args.json_path, args.num_shards, args.out_dir)
        for path in paths:
            refuse_overwrite(path, [args.json_path])
    except (ValueError, FileNotFoundError, ArchCodeError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    for shard, path in zip(shards, paths):
        write_arch_json(shard, path)
        print(f"{path}: {len(shard)} archs")


if __name__ == "__main__":
    main()
