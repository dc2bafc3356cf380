"""How much slower is a subnet inside the supernet than the same arch built stand-alone?

For each arch (largest, smallest, a few uniform samples) this times one training-mode
forward + cross-entropy + backward at the same batch, once through ``ResNetSuperNet`` with
the arch active and once through the exported stand-alone ``ResNet`` (same weights, so the
same arithmetic), alternating the two, and reports medians: of each one's step time, and of
the ratio of each supernet step to the stand-alone step right after it.  The optimizer step
is left out: it is the same for both apart from the inactive parameters, which get no
gradient.

It also times the analytic FLOPs + params of every arch in the Track-1 test list.

    python benchmarks/supernet_overhead.py [--config configs/resnet48_small.yaml]
        [--batch 32] [--repeats 10] [--warmup 3] [--random-archs 3] [--seed 0] [--clock wall]

On a shared machine ``OMP_NUM_THREADS=1`` makes the numbers far more repeatable, and
``--clock cpu`` (this process's CPU time instead of wall time) steadier still: with one
thread a step's CPU time leaves out the time other jobs hold the core, though they still
slow it through shared caches.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # paddle warns about a missing ccache on import
    import hnas  # noqa: F401  (before paddle: see hnas/__init__.py)
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from hnas.io import read_arch_json
    from hnas.models import ResNetSuperNet
    from hnas.sampling import UniformSampler, make_rng
    from hnas.search_space import SearchSpace

GOAL_MEAN = 1.05  # supernet / stand-alone step time, averaged over the archs
GOAL_MAX = 1.10  # ... and for every single arch
# paddle.nn.BatchNorm2D warns on every training-mode call
warnings.filterwarnings("ignore", message="When training, we now always track global mean")


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def train_step_ms(net, images, labels, clock=time.perf_counter) -> float:
    """Time of one forward + loss + backward on ``clock``, in milliseconds."""
    start = clock()
    loss = F.cross_entropy(net(images), labels)
    loss.backward()
    elapsed = clock() - start
    net.clear_gradients()
    return 1000.0 * elapsed


def compare(supernet, arch, images, labels, warmup: int, repeats: int,
            clock=time.perf_counter) -> tuple[float, float, float]:
    """Median step time (ms) of ``arch`` inside ``supernet`` and stand-alone, and the median
    of their ratio step by step (each supernet step over the stand-alone step right after it,
    so that load changing between the two halves of a run does not show as overhead)."""
    supernet.set_active(arch)
    standalone = supernet.export(arch)
    supernet.train()
    standalone.train()
    for _ in range(warmup):
        train_step_ms(supernet, images, labels, clock)
        train_step_ms(standalone, images, labels, clock)
    inside, alone = [], []
    for _ in range(repeats):  # alternate so that drifts in machine load hit both alike
        inside.append(train_step_ms(supernet, images, labels, clock))
        alone.append(train_step_ms(standalone, images, labels, clock))
    ratio = statistics.median(a / b for a, b in zip(inside, alone))
    return statistics.median(inside), statistics.median(alone), ratio


def flops_seconds(arch_json: str, config: str) -> tuple[int, float]:
    """Time to parse and compute FLOPs + params of every arch in ``arch_json``."""
    space = SearchSpace.from_yaml(config)
    codes = [entry["arch"] for entry in read_arch_json(arch_json).values()]
    start = time.perf_counter()
    for code in codes:
        arch = space.parse(code)
        space.flops(arch)
        space.params(arch)
    return len(codes), time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "resnet48_small.yaml"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--random-archs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (steadier on a busy machine)")
    parser.add_argument("--arch-json",
                        default=os.path.join(ROOT, "checkpoints", "CVPR_2022_NAS_Track1_test.json"))
    parser.add_argument("--flops-config", default=os.path.join(ROOT, "configs", "resnet48_imagenet.yaml"))
    args = parser.parse_args(argv)

    paddle.seed(args.seed)
    space = SearchSpace.from_yaml(args.config)
    supernet = ResNetSuperNet(space)
    sampler = UniformSampler(space)
    archs = [("largest", space.largest()), ("smallest", space.smallest())]
    archs += [(f"random {i}", sampler.sample(make_rng(args.seed, i))) for i in range(args.random_archs)]

    size = space.image_sizes[0]
    rng = np.random.default_rng(args.seed)
    images = paddle.to_tensor(rng.normal(size=(args.batch, space.in_channels, size, size)), dtype="float32")
    labels = paddle.to_tensor(rng.integers(0, space.num_classes, args.batch), dtype="int64")

    print(f"config {os.path.relpath(args.config, ROOT)}, batch {args.batch}, {size} px, "
          f"median of {args.repeats} after {args.warmup} warm-up, {args.clock} clock, "
          f"device {paddle.get_device()}\n")
    print("| arch | code | supernet ms | standalone ms | ratio |")
    print("|---|---|---:|---:|---:|")
    ratios = []
    for name, arch in archs:
        inside, alone, ratio = compare(supernet, arch, images, labels, args.warmup, args.repeats,
                                       CLOCKS[args.clock])
        ratios.append(ratio)
        print(f"| {name} | `{space.encode(arch)}` | {inside:.1f} | {alone:.1f} | {ratio:.3f} |")
    mean, worst = sum(ratios) / len(ratios), max(ratios)
    print(f"\nmean ratio {mean:.3f} (goal <= {GOAL_MEAN}: {'met' if mean <= GOAL_MEAN else 'NOT met'})")
    print(f"max ratio {worst:.3f} (goal <= {GOAL_MAX}: {'met' if worst <= GOAL_MAX else 'NOT met'})")

    count, seconds = flops_seconds(args.arch_json, args.flops_config)
    print(f"FLOPs + params of {count} archs ({os.path.relpath(args.flops_config, ROOT)}): {seconds:.2f} s")


if __name__ == "__main__":
    main()
