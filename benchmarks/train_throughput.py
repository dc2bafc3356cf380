"""Training throughput of every registered strategy on the small config (CPU).

For each strategy: median time of one optimizer step (all its subnets' forward + backward,
then the Momentum update) on a fixed in-memory batch, images/s, and that time relative to one
forward + backward of the largest subnet built stand-alone (``hnas.models.ResNet``), the cost
a strategy cannot go below.  Steps run at epoch 20, past the rank losses' ramp, so
``rank_flops`` / ``rank_zen`` pay for their pairs (and ``rank_zen`` for its Zen prior of
archs never seen before).  Data loading is excluded.  Prints a markdown table.

    python benchmarks/train_throughput.py [--config configs/resnet48_small.yaml] [--batch_size 64]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hnas  # noqa: E402,F401  (before paddle: see hnas/__init__.py)
import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

from hnas.config import load_config, section  # noqa: E402
from hnas.models import ResNet, ResNetSuperNet  # noqa: E402
from hnas.models.pretrained import full_arch  # noqa: E402
from hnas.search_space import SearchSpace  # noqa: E402
from hnas.strategies import STRATEGIES, StepContext, build_strategy  # noqa: E402
from hnas.trainer import TrainConfig, build_optimizer  # noqa: E402


RANK_EPOCH = 20  # past every rank-loss ramp, so rank_flops / rank_zen run their pairs


def median_seconds(step, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step(0)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        step(i + 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def batch(space: SearchSpace, batch_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    size = max(space.image_sizes)
    images = rng.normal(size=(batch_size, space.in_channels, size, size)).astype("float32")
    labels = rng.integers(0, space.num_classes, batch_size)
    return paddle.to_tensor(images), paddle.to_tensor(labels)


def standalone_largest_seconds(space, data, warmup, repeats) -> float:
    paddle.seed(0)
    net = ResNet(space.largest(), space)

    def step(_):
        loss = F.cross_entropy(net(data[0]), data[1])
        loss.backward()
        net.clear_gradients()
        float(loss)

    return median_seconds(step, warmup, repeats)


def strategy_seconds(name, space, cfg, data, warmup, repeats) -> tuple[float, float]:
    """Median seconds per optimizer step, and supernet forward passes per step (counted)."""
    paddle.seed(0)
    net = ResNetSuperNet(space)
    forwards = []
    net.blocks[0].register_forward_pre_hook(lambda layer, inputs: forwards.append(1))  # the stem: once a pass
    teacher = None
    if STRATEGIES.get(name).needs_teacher:  # a random full network costs what the real one does
        teacher = ResNet(full_arch(space), space)
        teacher.eval()
    strategy = build_strategy(name, space, cfg, teacher=teacher)
    trainable = [p for p in list(net.parameters()) + list(strategy.parameters()) if not p.stop_gradient]
    optimizer, _ = build_optimizer(trainable, cfg, 1000)

    def step(i):
        strategy.train_step(data, StepContext(net, seed=0, epoch=RANK_EPOCH, step=i))
        optimizer.step()
        optimizer.clear_grad()

    seconds = median_seconds(step, warmup, repeats)
    return seconds, len(forwards) / (warmup + repeats)


def main(argv=None) -> None:
    warnings.filterwarnings("ignore", message="When training, we now always track")  # paddle BatchNorm note
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/resnet48_small.yaml")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--dyna_batch_size", type=int, default=None, help="default: the config's Train value")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    cfg_dict = load_config(args.config)
    space = SearchSpace.from_config(section(cfg_dict, "SearchSpace"))
    train = section(cfg_dict, "Train")
    if args.dyna_batch_size is not None:
        train["dyna_batch_size"] = args.dyna_batch_size
    cfg = TrainConfig.from_config({**train, "batch_size": args.batch_size, "warmup": 0, "amp": False})
    data = batch(space, args.batch_size)
    reference = standalone_largest_seconds(space, data, args.warmup, args.repeats)
    print(f"config {args.config}, batch {args.batch_size}, {max(space.image_sizes)} px, "
          f"dyna_batch_size {cfg.dyna_batch_size}, {paddle.get_device()}, "
          f"{os.cpu_count()} CPU cores, median of {args.repeats} steps\n")
    print("| strategy | subnets/step | ms/step | images/s | cost vs. largest stand-alone fwd+bwd |")
    print("|---|---|---|---|---|")
    print(f"| (largest stand-alone fwd+bwd) | 1 | {reference * 1e3:.1f} | "
          f"{args.batch_size / reference:.0f} | 1.00 |")
    for name in STRATEGIES.names():
        seconds, subnets = strategy_seconds(name, space, cfg, data, args.warmup, args.repeats)
        print(f"| {name} | {subnets:g} | {seconds * 1e3:.1f} | "
              f"{args.batch_size / seconds:.0f} | {seconds / reference:.2f} |")


if __name__ == "__main__":
    main()
