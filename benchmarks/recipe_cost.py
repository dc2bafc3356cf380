"""What each shipped recipe costs on the small config: seconds per 1,000 training images per
phase, measured, and the whole recipe's training time at its own epochs, derived.

    python benchmarks/recipe_cost.py [--per_class 100] [--recipes ofa_progressive few_shot first_place]

Each recipe runs through ``train_supernet.py`` on Fashion-MNIST (``--per_class`` images of each
class, one epoch per phase, one thread), and each phase's time comes from its ``train.log``
(from the "training ..." line to the end of the epoch, BN-recalibrated validation excluded).
The full-recipe figure scales each phase to 20,000 images (the ground truth's training set) and
to its own epochs.  Prints a markdown table.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hnas.config import load_config  # noqa: E402

FULL_IMAGES = 20_000


def phase_seconds(log_path: str) -> float:
    """Seconds from the 'training' line to the last progress line of the first epoch."""
    stamps = []
    with open(log_path) as f:
        for line in f:
            match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (training|epoch 1/\d+ \[)", line)
            if match:
                stamps.append(datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
    if len(stamps) < 2:
        raise RuntimeError(f"{log_path} has no finished epoch")
    return (stamps[-1] - stamps[0]).total_seconds()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["ofa_progressive", "few_shot", "first_place"])
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--image_dir", default=os.path.join(ROOT, "data", "fashion_mnist"))
    parser.add_argument("--workdir", default=os.path.join(ROOT, "output", "recipe_cost"))
    args = parser.parse_args(argv)
    if not os.path.isdir(args.image_dir):
        subprocess.run([sys.executable, os.path.join(ROOT, "utils", "prepare_fashion_mnist.py"), "--output",
                        args.image_dir, "--image_size", "32"], check=True)
    images = args.per_class * 10
    rows = []
    for recipe in args.recipes:
        config = os.path.join(ROOT, "configs", "recipes", f"{recipe}_small.yaml")
        phases = load_config(config)["Phases"]
        save_dir = os.path.join(args.workdir, recipe)
        shutil.rmtree(save_dir, ignore_errors=True)
        cmd = [sys.executable, os.path.join(ROOT, "train_supernet.py"), "run", "--config", config,
               "--image_dir", args.image_dir, "--save_dir", save_dir, "--num_workers", "0",
               "-o", f"Data.per_class={args.per_class}", "-o", "Data.val_subset=200", "-o", "Train.log_freq=1000"]
        for i in range(len(phases)):
            cmd += ["-o", f"Phases.{i}.epochs=1"]
        subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        total, total_epochs = 0.0, 0
        for index, phase in enumerate(phases):
            folder = os.path.join(save_dir, f"{index}_{phase['name']}")
            logs = sorted(os.path.join(root, "train.log") for root, _, files in os.walk(folder) if "train.log" in files)
            per_k = [phase_seconds(log) / images * 1000 for log in logs]  # one per few-shot child
            seconds = sum(per_k) / 1000 * FULL_IMAGES * phase["epochs"]
            total, total_epochs = total + seconds, total_epochs + phase["epochs"] * len(logs)
            strategy = phase["strategy"] if isinstance(phase["strategy"], str) else phase["strategy"]["name"]
            label = f"{index}_{phase['name']}" + (f" (x{len(logs)} children)" if len(logs) > 1 else "")
            rows.append((recipe, label, strategy, phase["epochs"], sum(per_k) / len(per_k), seconds / 60))
        rows.append((recipe, "**total**", "", total_epochs, None, total / 60))
    print(f"small config, {images} Fashion-MNIST images per phase epoch, 1 thread; "
          f"full = {FULL_IMAGES} images x the phase's epochs\n")
    print("| recipe | phase | strategy | epochs | s per 1,000 images | full phase (min) |")
    print("|---|---|---|---:|---:|---:|")
    for recipe, phase, strategy, epochs, per_k, minutes in rows:
        per = f"{per_k:.1f}" if per_k is not None else ""
        print(f"| {recipe} | {phase} | {strategy} | {epochs} | {per} | {minutes:.0f} |")


if __name__ == "__main__":
    main()
