"""How fast does eval_supernet.py rank archs, and what does the supernet cost over plain passes?

On ``configs/resnet48_small.yaml`` (random-init supernet, synthetic 32 px images, the config's
Eval settings unless overridden), for the first ``--archs`` Track-1 codes:

1. Per arch, alternating so drifts in machine load hit both alike: the ranker's
   ``SubnetRanker.score`` (set_active, BN recalibration on K batches, top-1 on M images) and
   the same forward passes (K in BN-training mode, M/B in eval mode, pre-normalised tensors)
   through the exported stand-alone network.  The export itself is not timed.  Goal: ratio
   <= 1.2.
2. Throughput of fresh worker processes ranking the same archs: 1 process x 1 thread,
   1 process x 2 threads, 2 processes x 1 thread (OMP_NUM_THREADS; each process its
   shard).  Workers decode their images, then start together; a run's time is
   its slowest worker's ranking loop; the CPU seconds a worker got per wall second show
   whether other work competed for the cores.  Goal: 2 x 1 at least 1.8 x the 1 x 2
   throughput.

    python benchmarks/eval_throughput.py [--config configs/resnet48_small.yaml] [--archs 16]
        [--calib_batches K] [--eval_images M] [--batch_size B] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
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

    from hnas.checkpoint import save_checkpoint
    from hnas.config import load_config, section
    from hnas.data import make_image_folder
    from hnas.io import read_arch_json
    from hnas.evaluator import EVAL_DEFAULTS, SubnetRanker, load_supernet, shard_keys
    from hnas.models import ResNetSuperNet
    from hnas.search_space import SearchSpace

TRACK1_JSON = os.path.join(ROOT, "checkpoints", "CVPR_2022_NAS_Track1_test.json")
RATIO_GOAL, SPEEDUP_GOAL = 1.2, 1.8


def standalone_passes(net, images) -> tuple[float, float]:
    """(wall, CPU) seconds of the ranker's forward passes through ``net``, inputs normalised."""
    calibration, evaluation = list(images.calibration_batches()), list(images.eval_batches())
    start, cpu = time.perf_counter(), time.process_time()
    with paddle.no_grad():
        net.train()
        for x in calibration:
            net(x)
        net.eval()
        correct = sum(int((net(x).argmax(axis=1) == y).astype("int64").sum()) for x, y in evaluation)
    assert correct >= 0
    return time.perf_counter() - start, time.process_time() - cpu


def compare_with_standalone(ranker: SubnetRanker, codes: list[str]) -> np.ndarray:
    """Total [[wall, CPU] of ``ranker.score``, [wall, CPU] of the same passes stand-alone]."""
    space = ranker.space
    ranker.score(codes[0])  # warm-up: first calls allocate
    totals = np.zeros((2, 2))
    for code in codes:
        images = ranker.images(space.image_sizes[int(code[0]) - 1])
        start, cpu = time.perf_counter(), time.process_time()
        ranker.score(code)
        totals[0] += (time.perf_counter() - start, time.process_time() - cpu)
        totals[1] += standalone_passes(ranker.supernet.export(), images)
    return totals


def worker(args) -> None:
    """One ranking process: set up, report ready, wait for 'go', rank its shard, report time."""
    space = SearchSpace.from_config(section(load_config(args.config), "SearchSpace"))
    supernet, _ = load_supernet(space, args.checkpoint)
    archs = read_arch_json(args.json_path)
    mine = [archs[key]["arch"] for key in shard_keys(archs, args.shard, args.num_shards, space)]
    ranker = SubnetRanker(supernet, args.image_dir, args.calib_batches, args.eval_images, args.batch_size)
    ranker.score(mine[0])  # decode images and warm up before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()
    start, cpu = time.perf_counter(), time.process_time()
    for code in mine:
        ranker.score(code)
    print(json.dumps({"archs": len(mine), "seconds": time.perf_counter() - start,
                      "cpu_seconds": time.process_time() - cpu}), flush=True)


def parallel_run(args, workdir: str, processes: int, threads: int) -> tuple[float, float, float]:
    """(archs/s of the ranking loops, wall seconds from launch to the last result, mean CPU
    seconds per wall second of a ranking loop: 1.0 for a process that had a core to itself)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    launched = time.perf_counter()
    procs = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", "--config", args.config,
         "--checkpoint", os.path.join(workdir, "run"), "--json_path", os.path.join(workdir, "archs.json"),
         "--image_dir", os.path.join(workdir, "images"), "--shard", str(i), "--num_shards", str(processes),
         "--calib_batches", str(args.calib_batches), "--eval_images", str(args.eval_images),
         "--batch_size", str(args.batch_size)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for i in range(processes)]
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"worker failed: exit code {proc.wait()}")
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(proc.stdout.readline()) for proc in procs]
    wall = time.perf_counter() - launched
    for proc in procs:
        proc.wait()
    cpu_share = sum(r["cpu_seconds"] / r["seconds"] for r in results) / len(results)
    return sum(r["archs"] for r in results) / max(r["seconds"] for r in results), wall, cpu_share


def prepare(args, space: SearchSpace, workdir: str) -> list[str]:
    """Images, a random-init checkpoint and the arch subset in ``workdir``; returns the codes."""
    per_class = -(-max(args.calib_batches * args.batch_size, args.eval_images) // space.num_classes)
    make_image_folder(os.path.join(workdir, "images"), space.num_classes, per_class, max(space.image_sizes))
    paddle.seed(0)
    save_checkpoint(os.path.join(workdir, "run"), "final", ResNetSuperNet(space).state_dict())
    archs = dict(list(read_arch_json(TRACK1_JSON).items())[:args.archs])
    with open(os.path.join(workdir, "archs.json"), "w") as f:
        json.dump(archs, f)
    return [e["arch"] for e in archs.values()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "resnet48_small.yaml"))
    parser.add_argument("--archs", type=int, default=16)
    parser.add_argument("--calib_batches", type=int)
    parser.add_argument("--eval_images", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--repeats", type=int, default=2, help="process runs per setting; the best counts")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--checkpoint", "--json_path", "--image_dir"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--num_shards", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    cfg = load_config(args.config)
    settings = {**EVAL_DEFAULTS, **section(cfg, "Eval")}
    for key in ("calib_batches", "eval_images", "batch_size"):
        if getattr(args, key) is None:
            setattr(args, key, settings[key])
    space = SearchSpace.from_config(section(cfg, "SearchSpace"))
    with tempfile.TemporaryDirectory() as workdir:
        codes = prepare(args, space, workdir)
        supernet, _ = load_supernet(space, os.path.join(workdir, "run"))
        ranker = SubnetRanker(supernet, os.path.join(workdir, "images"), args.calib_batches,
                              args.eval_images, args.batch_size)
        (inside, inside_cpu), (alone, alone_cpu) = compare_with_standalone(ranker, codes)
        runs, load_before = {}, os.getloadavg()[0]
        for processes, threads in ((1, 1), (1, 2), (2, 1)):
            best = max((parallel_run(args, workdir, processes, threads) for _ in range(args.repeats)),
                       key=lambda result: result[0])
            runs[processes, threads] = best

    n = len(codes)
    print(f"\n{os.path.relpath(args.config, ROOT)}: {n} Track-1 archs, K={args.calib_batches} calibration "
          f"batches x B={args.batch_size}, M={args.eval_images} eval images, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} in-process\n")
    print("| per arch | wall ms | CPU ms | archs/s |\n|---|---:|---:|---:|")
    print(f"| ranker (`SubnetRanker.score`) | {1000 * inside / n:.0f} | {1000 * inside_cpu / n:.0f} "
          f"| {n / inside:.2f} |")
    print(f"| same passes, exported stand-alone net | {1000 * alone / n:.0f} | {1000 * alone_cpu / n:.0f} "
          f"| {n / alone:.2f} |")
    verdict = "meets" if inside / alone <= RATIO_GOAL else "misses"
    print(f"\nratio ranker / stand-alone: **{inside / alone:.2f}** wall ({verdict} the goal <= {RATIO_GOAL}), "
          f"{inside_cpu / alone_cpu:.2f} CPU time\n")
    print(f"1-minute load average before / after the process runs: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"(other work on the machine lowers the multi-process numbers)\n")
    print("| processes x threads | archs/s (ranking loops) | wall s (incl. start-up, decoding) "
          "| CPU s per wall s, per process |")
    print("|---|---:|---:|---:|")
    for (processes, threads), (rate, wall, cpu_share) in runs.items():
        print(f"| {processes} x {threads} | {rate:.2f} | {wall:.1f} | {cpu_share:.2f} |")
    base2, base1, two = runs[1, 2][0], runs[1, 1][0], runs[2, 1][0]
    verdict = "meets" if two / base2 >= SPEEDUP_GOAL else "misses"
    print(f"\nspeed-up of 2 x 1 over 1 x 2: **{two / base2:.2f}** ({verdict} the goal >= {SPEEDUP_GOAL}); "
          f"over 1 x 1: {two / base1:.2f}")


if __name__ == "__main__":
    main()
