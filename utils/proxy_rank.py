"""Score every arch of a JSON with a zero-cost proxy and write a submission JSON.

    python utils/proxy_rank.py IN.json --proxy zen --output OUT.json --config configs/resnet48_small.yaml
        [--seed 0] [--batch_size 16] [--repeats 4] [--image_size S] [--image_dir DIR]

Proxies: flops, params, zen, snip, synflow (see hnas/proxies.py).  Options a proxy does not
take are an error rather than silently ignored.  ``--image_dir`` gives SNIP one real batch of
``DIR/train`` instead of random images and labels.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hnas.config import load_config, section  # noqa: E402
from hnas.io import read_arch_json, refuse_overwrite, with_scores, write_arch_json  # noqa: E402
from hnas.proxies import load_batch, score_archs  # noqa: E402
from hnas.registry import PROXIES  # noqa: E402
from hnas.search_space import SearchSpace  # noqa: E402

OPTIONS = ("seed", "batch_size", "repeats", "image_size")


def proxy_options(proxy: str, args, space: SearchSpace, first_code: str) -> dict:
    """The keyword options the user set, checked against what ``proxy`` accepts."""
    accepted = inspect.signature(PROXIES.get(proxy)).parameters
    options = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    for name in options:
        if name not in accepted:
            raise ValueError(f"--{name} does not apply to proxy {proxy!r}")
    if args.image_dir is not None:
        if "inputs" not in accepted:
            raise ValueError(f"--image_dir does not apply to proxy {proxy!r}")
        size = options.get("image_size") or space.widths(first_code).image_size
        batch_size = options.get("batch_size", accepted["batch_size"].default)
        inputs, labels = load_batch(args.image_dir, size, batch_size, options.get("seed", 0))
        options.update(inputs=inputs, labels=labels)
    return options


class Progress:
    """Prints done/total, archs/s and ETA to stderr about every 5%."""

    def __init__(self):
        self.start = time.time()
        self.last = 0

    def __call__(self, done: int, total: int) -> None:
        if done != total and done - self.last < max(1, total // 20):
            return
        self.last = done
        rate = done / max(time.time() - self.start, 1e-9)
        print(f"{done}/{total} archs, {rate:.2f} archs/s, ETA {(total - done) / rate:.0f}s",
              file=sys.stderr, flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json_path", help="arch list")
    parser.add_argument("--proxy", required=True, help=f"one of: {', '.join(PROXIES.names())}")
    parser.add_argument("--output", required=True, help="submission JSON to write")
    parser.add_argument("--config", required=True, help="search space config")
    parser.add_argument("-o", "--opt", action="append", default=[], help="config override Section.key=value")
    parser.add_argument("--seed", type=int, default=None, help="seed of weights and inputs (default 0)")
    parser.add_argument("--batch_size", type=int, default=None, help="images per batch (zen, snip)")
    parser.add_argument("--repeats", type=int, default=None, help="Zen-score repeats (default 4)")
    parser.add_argument("--image_size", type=int, default=None, help="input size (default: the arch's)")
    parser.add_argument("--image_dir", default=None, help="ImageFolder root for SNIP's real batch")
    args = parser.parse_args(argv)
    try:
        if args.proxy not in PROXIES:
            raise ValueError(f"unknown proxy {args.proxy!r}; known: {', '.join(PROXIES.names())}")
        refuse_overwrite(args.output, [args.json_path])
        space = SearchSpace.from_config(section(load_config(args.config, args.opt), "SearchSpace"))
        data = read_arch_json(args.json_path)
        codes = [entry["arch"] for entry in data.values()]
        options = proxy_options(args.proxy, args, space, codes[0])
        scores = score_archs(space, codes, args.proxy, progress=Progress(), **options)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    write_arch_json(with_scores(data, scores), args.output)
    print(f"{args.output}: {args.proxy} of {len(scores)} archs, {min(scores):.4g}..{max(scores):.4g}")


if __name__ == "__main__":
    main()
