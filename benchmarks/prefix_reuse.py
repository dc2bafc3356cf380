"""How much faster is ranking when archs that share a stem and stage 1 compute them once?

Ranks ``--archs`` Track-1 archs twice in one process with ``SubnetRanker.score_many``: with
prefix reuse and arch by arch (``reuse_prefix=False``), ``--turn`` archs of a group one way,
then the other, alternating which goes first, so drifts in machine load hit both alike (a
turn computes its prefix once, so turns much shorter than the groups understate the gain).
Reports archs/s of each in wall and in CPU seconds (one thread: CPU seconds do not count the
time other jobs hold the core) and the speed-up, and checks the two give the same scores.
Random-init supernet, synthetic images at the config's size.

The archs are those one rank takes when the 45,000 Track-1 archs are dealt to
``ceil(45000 / archs)`` ranks (``hnas.evaluator.shard_keys``, shard 0: whole prefix groups, as
every rank of a real ranking gets them); ``--sample random`` takes a random sample instead,
whose groups are small (what a round-robin split would give).

    python benchmarks/prefix_reuse.py [--config configs/resnet48_small.yaml] [--archs 1000]
        [--calib_batches K] [--eval_images M] [--batch_size B] [--sample shard|random] [--turn 25]
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


def run(space: SearchSpace, items: list, image_dir: str, settings: dict, turn: int) -> dict:
    """Time both ways, ``turn`` archs of one group at a time, alternating which goes first;
    returns wall and CPU seconds of each, the group count and the largest score difference."""
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
        alone.images(size)
    dict(shared.score_many(items[:2]))  # warm-up: first calls allocate
    seconds = {name: {"wall": 0.0, "cpu": 0.0} for name in ("reuse", "alone")}
    scores = {"reuse": {}, "alone": {}}
    turns = [members[i:i + turn] for members in groups.values() for i in range(0, len(members), turn)]
    for n, part in enumerate(turns):
        order = (("reuse", shared), ("alone", alone)) if n % 2 == 0 else (("alone", alone), ("reuse", shared))
        for name, ranker in order:
            wall, cpu = time.perf_counter(), time.process_time()
            scores[name].update(ranker.score_many(part))
            seconds[name]["wall"] += time.perf_counter() - wall
            seconds[name]["cpu"] += time.process_time() - cpu
    diff = max(abs(scores["reuse"][k] - scores["alone"][k]) for k, _ in items)
    return {"seconds": seconds, "groups": len(groups), "turns": len(turns), "max_abs_diff": diff}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "resnet48_small.yaml"))
    parser.add_argument("--archs", type=int, default=1000)
    parser.add_argument("--calib_batches", type=int)
    parser.add_argument("--eval_images", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--sample", choices=("shard", "random"), default="shard")
    parser.add_argument("--turn", type=int, default=25,
                        help="archs of a group timed one way before the other way (alternating)")
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
        result = run(space, items, image_dir, ranker_settings, args.turn)
    load = os.getloadavg()[0]
    rate = {(name, clock): len(items) / result["seconds"][name][clock]
            for name in ("reuse", "alone") for clock in ("wall", "cpu")}
    print(f"config {os.path.relpath(args.config, ROOT)}: {len(items)} Track-1 archs ({args.sample}), "
          f"{result['groups']} stem + stage-1 groups timed in {result['turns']} alternating turns; "
          f"K={settings['calib_batches']} x B={settings['batch_size']} calibration, M={settings['eval_images']} "
          f"images; {time.time() - start:.0f} s; load {load:.1f} on {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| ranking | archs/s (wall) | archs/s (CPU) | CPU s/arch |")
    print("|---|---:|---:|---:|")
    for label, name in (("arch by arch", "alone"), ("prefix reuse", "reuse")):
        print(f"| {label} | {rate[name, 'wall']:.3g} | {rate[name, 'cpu']:.3g} | {1 / rate[name, 'cpu']:.3g} |")
    speedup = {clock: rate["reuse", clock] / rate["alone", clock] for clock in ("wall", "cpu")}
    verdict = "met" if speedup["cpu"] >= SPEEDUP_GOAL else "NOT met"
    print(f"\nspeed-up {speedup['cpu']:.2f}x in CPU seconds, {speedup['wall']:.2f}x in wall seconds "
          f"(goal >= {SPEEDUP_GOAL}: {verdict}); max |score difference| {result['max_abs_diff']:.2g}")
    print(json.dumps({"config": os.path.basename(args.config), "archs": len(items), "sample": args.sample,
                      "groups": result["groups"], "turns": result["turns"],
                      "archs_per_s": {f"{n}_{c}": v for (n, c), v in rate.items()},
                      "speedup": speedup, "max_abs_diff": result["max_abs_diff"], "load": load,
                      "settings": ranker_settings}))


if __name__ == "__main__":
    main()
