"""How well does each supernet rank subnets?  Kendall tau against stand-alone training.

    python benchmarks/consistency.py [--archs 16 --repeat_archs 6 --gt_epochs 5 ...]

On Fashion-MNIST at 32 px with ``configs/resnet48_small.yaml``:

1. picks ``--archs`` archs of the 45,000 Track-1 list, evenly spread over their FLOPs;
2. trains each stand-alone (``train_standalone.py``) for the ground truth, and the first
   ``--repeat_archs`` of them again with another seed, to measure the ground truth's own noise;
3. trains one supernet per strategy (``train_supernet.py``; ``baseline`` distils from the
   largest arch trained stand-alone, standing in for the pretrained ResNet48) and ranks the
   archs with it (``eval_supernet.py``);
4. prints one markdown table: Kendall tau and Pearson of every supernet and of FLOPs, params
   and Zen-score against the ground truth, and the ground truth's seed-to-seed tau.

Everything runs through the user-facing CLIs, ``--jobs`` at a time with one thread each, and
is cached in ``--workdir``: a re-run skips finished trainings and rankings.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hnas.config import load_config, section  # noqa: E402
from hnas.io import read_arch_json, write_arch_json  # noqa: E402
from hnas.metrics import compare_rankings  # noqa: E402
from hnas.proxies import score_archs  # noqa: E402
from hnas.search_space import SearchSpace  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "resnet48_small.yaml")
TRACK1 = os.path.join(ROOT, "checkpoints", "CVPR_2022_NAS_Track1_test.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=os.path.join(ROOT, "output", "consistency"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion_mnist_bench"))
    p.add_argument("--train_per_class", type=int, default=1500)
    p.add_argument("--val_per_class", type=int, default=1000)
    p.add_argument("--archs", type=int, default=16)
    p.add_argument("--repeat_archs", type=int, default=6, help="archs trained with a second seed")
    p.add_argument("--gt_epochs", type=int, default=6)
    p.add_argument("--supernet_epochs", type=int, default=6)
    p.add_argument("--strategies", nargs="+", default=["spos", "sandwich", "baseline"])
    p.add_argument("--dyna_batch_size", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--calib_batches", type=int, default=5)
    p.add_argument("--eval_images", type=int, default=5000)
    p.add_argument("--jobs", type=int, default=2, help="processes at once (one thread each)")
    return p.parse_args(argv)


def run(cmd: list[str], log: str) -> None:
    """Run one CLI with one math thread, its output in ``log``; fail loudly with the log's tail."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if code != 0:
        with open(log) as f:
            tail = "".join(f.readlines()[-15:])
        raise RuntimeError(f"{cmd[1]} failed ({code}); end of {log}:\n{tail}")


def pick_archs(space: SearchSpace, n: int) -> dict:
    """``n`` Track-1 archs at evenly spaced FLOPs quantiles (a ranking task with real spread)."""
    data = read_arch_json(TRACK1)
    keys = sorted(data, key=lambda k: space.flops(data[k]["arch"]))
    picks = np.linspace(0, len(keys) - 1, n).round().astype(int)
    return {keys[i]: {"acc": 0.0, "arch": data[keys[i]]["arch"]} for i in picks}


def standalone_job(args, code: str, seed: int, name: str) -> tuple[str, list[str], str]:
    """(result JSON, command, log) of one stand-alone training."""
    folder = os.path.join(args.workdir, "standalone", f"seed{seed}", name)
    result = os.path.join(folder, "result.json")
    cmd = [sys.executable, "train_standalone.py", "run", "--config", CONFIG, "--arch", code,
           "--image_dir", args.data, "--save_dir", folder, "--max_epoch", str(args.gt_epochs),
           "--batch_size", str(args.batch_size), "--seed", str(seed), "--num_workers", "0",
           "--log_freq", "1000", "--save_freq", str(args.gt_epochs), "--out_json", result, "--name", name]
    if os.path.isfile(os.path.join(folder, "latest")):
        cmd += ["--resume", folder]
    return result, cmd, os.path.join(folder, "run.log")


def supernet_job(args, strategy: str, teacher: str) -> tuple[str, list[str], str]:
    folder = os.path.join(args.workdir, "supernet", strategy)
    cmd = [sys.executable, "train_supernet.py", "run", "--config", CONFIG, "--image_dir", args.data,
           "--save_dir", folder, "--strategy", strategy, "--max_epoch", str(args.supernet_epochs),
           "--batch_size", str(args.batch_size), "--dyna_batch_size", str(args.dyna_batch_size),
           "--num_workers", "0", "--log_freq", "1000", "--save_freq", "1", "--seed", "0"]
    if strategy == "baseline":
        cmd += ["--pretrained", teacher, "--reorder", "true"]
    if os.path.isfile(os.path.join(folder, "latest")):
        cmd += ["--resume", folder]
    return os.path.join(folder, "final.pdparams"), cmd, os.path.join(folder, "run.log")


def rank_job(args, strategy: str, archs_path: str) -> tuple[str, list[str], str]:
    folder = os.path.join(args.workdir, "supernet", strategy)
    out = os.path.join(args.workdir, "rank", f"{strategy}.json")
    cmd = [sys.executable, "eval_supernet.py", "run", "--config", CONFIG, "--image_dir", args.data,
           "--resume", folder, "--json_path", archs_path, "--save_path", out, "--no_progress",
           "--calib_batches", str(args.calib_batches), "--eval_images", str(args.eval_images),
           "--batch_size", "100"]
    return out, cmd, os.path.join(args.workdir, "rank", f"{strategy}.log")


def run_all(jobs: list[tuple[str, list[str], str]], workers: int) -> None:
    """Run the jobs whose output is missing, ``workers`` at a time."""
    todo = [(cmd, log) for out, cmd, log in jobs if not os.path.isfile(out)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(run, cmd, log) for cmd, log in todo]:
            future.result()


def collect(results: dict[str, str], archs: dict) -> dict:
    """Submission-format ground truth from per-arch result files."""
    out = {}
    for name, path in results.items():
        entry = read_arch_json(path)[name]
        if entry["arch"] != archs[name]["arch"]:
            raise ValueError(f"{path}: {name} holds {entry['arch']}, expected {archs[name]['arch']}")
        out[name] = entry
    return out


def check_settings(args) -> None:
    """Cached results are only valid for the settings that made them: refuse a mismatch."""
    os.makedirs(args.workdir, exist_ok=True)
    path = os.path.join(args.workdir, "settings.json")
    settings = {k: v for k, v in vars(args).items() if k not in ("jobs", "workdir")}
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if changed:
            sys.exit(f"{args.workdir} holds results made with other settings ({', '.join(changed)}); "
                     f"choose another --workdir")
    else:
        with open(path, "w") as f:
            json.dump(settings, f, indent=1)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_settings(args)
    space = SearchSpace.from_config(section(load_config(CONFIG), "SearchSpace"))
    started = time.time()
    subprocess.check_call([sys.executable, "utils/prepare_fashion_mnist.py", "--output", args.data,
                           "--train_per_class", str(args.train_per_class),
                           "--val_per_class", str(args.val_per_class)], cwd=ROOT)
    archs = pick_archs(space, args.archs)
    archs_path = os.path.join(args.workdir, "archs.json")
    write_arch_json(archs, archs_path)

    teacher_code = space.encode(space.largest())
    jobs = {("teacher", 0): standalone_job(args, teacher_code, 0, "teacher")}
    for i, (name, entry) in enumerate(archs.items()):
        jobs[(name, 0)] = standalone_job(args, entry["arch"], 0, name)
        if i < args.repeat_archs:
            jobs[(name, 1)] = standalone_job(args, entry["arch"], 1, name)
    print(f"[{time.time() - started:.0f}s] stand-alone trainings: {len(jobs)}", flush=True)
    run_all(list(jobs.values()), args.jobs)
    teacher = os.path.join(args.workdir, "standalone", "seed0", "teacher", "final.pdparams")

    print(f"[{time.time() - started:.0f}s] supernets: {', '.join(args.strategies)}", flush=True)
    run_all([supernet_job(args, s, teacher) for s in args.strategies], args.jobs)
    run_all([rank_job(args, s, archs_path) for s in args.strategies], args.jobs)

    gt = collect({n: jobs[(n, 0)][0] for n in archs}, archs)
    repeat_names = [n for n in archs if (n, 1) in jobs]
    gt2 = collect({n: jobs[(n, 1)][0] for n in repeat_names}, archs)
    write_arch_json(gt, os.path.join(args.workdir, "ground_truth.json"))
    codes = [archs[n]["arch"] for n in archs]
    predictors = {f"supernet: {s}": read_arch_json(rank_job(args, s, archs_path)[0]) for s in args.strategies}
    for proxy in ("flops", "params", "zen"):
        scores = score_archs(space, codes, proxy)
        predictors[f"proxy: {proxy}"] = {n: {"acc": float(v), "arch": archs[n]["arch"]}
                                        for n, v in zip(archs, scores)}
    accs = [gt[n]["acc"] for n in archs]
    print(f"\n{len(archs)} archs, stand-alone top-1 {min(accs):.4f}..{max(accs):.4f} "
          f"({args.gt_epochs} epochs, {args.train_per_class}/class), supernets {args.supernet_epochs} "
          f"epochs, dyna_batch_size {args.dyna_batch_size}, total {time.time() - started:.0f}s\n")
    print("| predictor | Kendall tau | Pearson | n |")
    print("|---|---:|---:|---:|")
    for name, pred in predictors.items():
        r = compare_rankings(pred, gt, topk=())
        print(f"| {name} | {r['kendall']:.3f} | {r['pearson']:.3f} | {r['n']} |")
    r = compare_rankings(gt2, {n: gt[n] for n in repeat_names}, topk=())
    print(f"| stand-alone seed 1 vs seed 0 (noise ceiling) | {r['kendall']:.3f} | {r['pearson']:.3f} | {r['n']} |")
    with open(os.path.join(args.workdir, "summary.json"), "w") as f:
        json.dump({"args": vars(args), "ground_truth_seed1": gt2}, f, indent=1)


if __name__ == "__main__":
    main()
