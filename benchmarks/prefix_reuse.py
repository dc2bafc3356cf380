"""How much faster is ranking when archs that share a stem and stage 1 compute them once?

Ranks ``--archs`` Track-1 archs twice in one process with ``SubnetRanker.score_many``: with
prefix reuse and arch by arch (``reuse_prefix=False``), group by group and alternating, so
drifts in machine load hit both alike.  Reports archs/s of each and the speed-up, and checks
the two give the same scores.  Random-init supernet, synthetic images at the config's size.

The archs are those one rank takes when the 45,000 Track-1 archs are dealt to
``ceil(45000 / archs)`` ranks (``hnas.evaluator.shard_keys``, shard 0: whole prefix groups, as
every rank of a real ranking gets them); ``--sample random`` takes a random sample instead,
whose groups are small (what a round-robin split would give).

    python benchmarks/prefix_reuse.py [--config configs/resnet48_small.yaml] [--archs 1000]
        [--calib_batches K] [--eval_images M] [--batch_size B] [--sample shard|random]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # paddle warns about a missing ccache on import
    import hnas  # noqa: F401  (before paddle: see hnas/__init__.py)
    import numpy as np
    import paddle

    from hnas.config import load_config, section
    from hnas.data import make_image_folder
    from hnas.evaluator import EVAL_DEFAULTS, SubnetRanker, prefix_key, shard_keys
    from hnas.io import read_arch_json
    from hnas.models import ResNetSuperNet
    from hnas.search_space import SearchSpace

TRACK1_JSON = os.path.join(ROOT, "checkpoints", "CVPR_2022_NAS_Track1_test.json")
SPEEDUP_GOAL = 1.3


def pick_archs(space: SearchSpace, count: int, sample: str, seed: int = 0) -> list[tuple[str, str]]:
    """``(key, code)`` of the archs to rank (see the module docstring)."""
    archs = read_arch_json(TRACK1_JSON)
    if sample == "random":
        keys = random.Random(seed).sample(list(archs), count)
    else:
        keys = shard_keys(archs, 0, math.ceil(len(archs) / count), space)[:count]
    return [(key, archs[key]["arch"]) for key in keys]


def run(space: SearchSpace, items: list, image_dir: str, settings: dict) -> dict:
    """Time both ways, group by group; returns seconds, scores and group counts."""
    paddle.seed(0)
    supernet = ResNetSuperNet(space)
    shared = SubnetRanker(supernet, image_dir, **settings)
    alone = SubnetRanker(supernet, image_dir, reuse_prefix=False, **settings)
    groups: dict[tuple, list] = {}
    for key, code in items:
        groups.setdefault(prefix_key(space, space.parse(code)), []).append((key, code))
    sizes = sorted({space.image_sizes[space.parse(code).image_code - 1] for _, code in items})
    for size in sizes:  # decode before the clocks start
        shared.images(size)
        alone._images[size] = shared.images(size)
    dict(shared.score_many(items[:2]))  # warm-up: first calls allocate
    seconds = {"reuse": 0.0, "alone": 0.0}
    scores = {"reuse": {}, "alone": {}}
    for n, members in enumerate(groups.values()):
        order = (("reuse", shared), ("alone", alone)) if n % 2 == 0 else (("alone", alone), ("reuse", shared))
        for name, ranker in order:
            start = time.perf_counter()
            scores[name].update(ranker.score_many(members))
            seconds[name] += time.perf_counter() - start
    diff = max(abs(scores["reuse"][k] - scores["alone"][k]) for k, _ in items)
    return {"seconds": seconds, "groups": len(groups), "max_abs_diff": diff}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "resnet48_small.yaml"))
    parser.add_argument("--archs", type=int, default=1000)
    parser.add_argument("--calib_batches", type=int)
    parser.add_argument("--eval_images", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--sample", choices=("shard", "random"), default="shard")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    settings = {**EVAL_DEFAULTS, **section(cfg, "Eval")}
    for key in ("calib_batches", "eval_images", "batch_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    settings["score"] = "loss"  # as fine-grained as the logits: the equality check means something
    space = SearchSpace.from_config(section(cfg, "SearchSpace"))
    items = pick_archs(space, args.archs, args.sample)
    ranker_settings = {k: settings[k] for k in ("calib_batches", "eval_images", "batch_size", "score")}
    with tempfile.TemporaryDirectory() as workdir:
        per_class = -(-max(settings["calib_batches"] * settings["batch_size"], settings["eval_images"])
                      // space.num_classes)
        image_dir = make_image_folder(os.path.join(workdir, "images"), space.num_classes, per_class,
                                      max(space.image_sizes))
        start = time.time()
        result = run(space, items, image_dir, ranker_settings)
    load = os.getloadavg()[0]
    reuse, alone = (len(items) / result["seconds"][k] for k in ("reuse", "alone"))
    print(f"config {os.path.relpath(args.config, ROOT)}: {len(items)} Track-1 archs ({args.sample}), "
          f"{result['groups']} stem + stage-1 groups; K={settings['calib_batches']} x B={settings['batch_size']} "
          f"calibration, M={settings['eval_images']} images; {time.time() - start:.0f} s; "
          f"load {load:.1f} on {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}\n")
    print("| ranking | archs/s | s/arch |")
    print("|---|---:|---:|")
    print(f"| arch by arch | {alone:.3g} | {1 / alone:.3g} |")
    print(f"| prefix reuse | {reuse:.3g} | {1 / reuse:.3g} |")
    speedup = reuse / alone
    print(f"\nspeed-up {speedup:.2f}x (goal >= {SPEEDUP_GOAL}: {'met' if speedup >= SPEEDUP_GOAL else 'NOT met'}); "
          f"max |score difference| {result['max_abs_diff']:.2g}")
    print(json.dumps({"config": os.path.basename(args.config), "archs": len(items), "sample": args.sample,
                      "groups": result["groups"], "archs_per_s": {"reuse": reuse, "alone": alone},
                      "speedup": speedup, "max_abs_diff": result["max_abs_diff"], "load": load,
                      "settings": ranker_settings}))


if __name__ == "__main__":
    main()
