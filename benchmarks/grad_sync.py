"""Gradient synchronisation with 2 CPU processes: DataParallel's reducer vs one all-reduce per step.

    python benchmarks/grad_sync.py [--steps 10] [--subnets 4] [--batch_size 32]

A supernet step runs several subnets, each with its own backward pass.  Before hnas reduced
gradients itself, ``paddle.DataParallel(find_unused_parameters=True)`` all-reduced every
parameter after *every* subnet's backward (and cannot handle several forwards before one
backward).  The trainer now runs the step under ``no_sync`` and reduces once
(``Trainer._sync_gradients``, bucketed).  Both are timed here on the same subnets (small
config, sandwich-like step: largest, smallest, random), median ms per step on rank 0; prints a
markdown table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import hnas  # noqa: E402,F401  (before paddle)
import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.distributed as dist  # noqa: E402


def worker(args, out_path: str) -> None:
    warnings.filterwarnings("ignore")
    from hnas.config import load_config, section
    from hnas.models import ResNetSuperNet
    from hnas.search_space import SearchSpace
    from hnas.strategies import StepContext, TrainingModule, build_strategy
    from hnas.trainer import TrainConfig, Trainer

    space = SearchSpace.from_config(section(load_config(os.path.join(ROOT, "configs", "resnet48_small.yaml")),
                                            "SearchSpace"))
    paddle.seed(0)
    net = ResNetSuperNet(space)
    cfg = TrainConfig(batch_size=args.batch_size, dyna_batch_size=args.subnets)
    trainer = Trainer(net, build_strategy("spos", space, cfg), cfg, save_dir="")
    reducer = paddle.DataParallel(TrainingModule(net), find_unused_parameters=True)
    rng = np.random.default_rng(dist.get_rank())
    x = paddle.to_tensor(rng.normal(size=(args.batch_size, 3, 32, 32)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, args.batch_size))

    def step(i, per_backward: bool):
        ctx = StepContext(net, 0, 0, i, trainer.network, rank=trainer.rank, world_size=trainer.world_size)
        archs = [space.largest(), space.smallest()] + trainer.strategy.sampler.draw(ctx.rng(0), args.subnets - 2)
        for arch in archs:
            net.set_active(arch)
            if per_backward:
                loss = paddle.nn.functional.cross_entropy(reducer(x).logits, y)
                loss.backward()
            else:
                with trainer.network.no_sync():
                    loss = paddle.nn.functional.cross_entropy(ctx.forward(x).logits, y)
                    loss.backward()
        if not per_backward:
            trainer._sync_gradients()
        for p in net.parameters():
            p.clear_gradient()

    results = {}
    for mode in ("per_backward", "per_step"):
        times = []
        for i in range(args.warmup + args.steps):
            dist.barrier()
            start = time.perf_counter()
            step(i, mode == "per_backward")
            dist.barrier()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        results[mode] = statistics.median(times)
    if dist.get_rank() == 0:
        np.save(out_path, np.array([results["per_backward"], results["per_step"]]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--subnets", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = os.path.join(ROOT, "output", "grad_sync.npy")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    dist.spawn(worker, args=(args, out), nprocs=2, backend="gloo")
    per_backward, per_step = np.load(out)
    print(f"2 processes (gloo, 1 thread each), small config, batch {args.batch_size} per process, "
          f"{args.subnets} subnets per step, median of {args.steps} steps\n")
    print("| gradient sync | ms/step | speed-up |")
    print("|---|---:|---:|")
    print(f"| DataParallel reducer after every subnet's backward | {per_backward * 1e3:.1f} | 1.00 |")
    print(f"| no_sync + one bucketed all-reduce per step (hnas) | {per_step * 1e3:.1f} | "
          f"{per_backward / per_step:.2f} |")


if __name__ == "__main__":
    main()
