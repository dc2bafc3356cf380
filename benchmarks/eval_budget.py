"""How many images does a ranking need?  Kendall tau of cheaper evaluation settings against the largest.

A supernet ranks a fixed sample of Track-1 archs under every evaluation setting of a grid:
K calibration batches (0: the stored BN statistics, the official baseline's choice) x M
validation images, at batch B.  Each setting is compared with the largest one (the most
K, the most M): Kendall tau-b with a 95% bootstrap interval over archs, and Pearson.  Its cost
is the images forwarded per arch (K x B + M) and the seconds per arch on this CPU.

The grid is not re-ranked setting by setting: per arch and per K the BN statistics are
recalibrated once (``hnas.evaluator.recalibrate_bn``, the ranker's own routine) and the
largest draw of M validation images is scored image by image; a smaller draw of M images
(``load_fixed_images`` draws with one seeded permutation, so it is a subset of the largest
draw, though not its leading part) is the sum of its images' hits.  The costs are measured
per arch: the recalibration's seconds for each K, and the evaluation forwards' seconds per
image; a setting's seconds are its K's recalibration plus M times the per-image cost.
The scores equal ``SubnetRanker(supernet, K, M, B).score`` (tests/test_eval_budget.py).

Per-arch records are appended to ``--workdir`` as they finish (resumable, one file per
worker); the summary goes to ``--results``.  ``--gpu_estimate`` adds what a full 45,000-arch
ranking of the ImageNet config costs: the MACs of every Track-1 arch (counted), CPU seconds
per image at 224 px for a few archs (measured), and GPU hours on 8 GPUs derived from a
published ResNet-50 throughput scaled by MACs (an assumption, see ``GPU_REFERENCE``).

    python benchmarks/eval_budget.py --jobs 2                # rank the sample, then report
    python benchmarks/eval_budget.py --table                 # report from the cached records
    python benchmarks/eval_budget.py --gpu_estimate --table  # the 224 px measurement and the 8-GPU estimate
        [--checkpoint DIR] [--data DIR] [--archs 200] [--calib_batches 0 1 2 5 10 20]
        [--eval_images 100 250 500 1000 2000] [--batch_size 100]
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import subprocess
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # paddle warns about a missing ccache on import
    import hnas  # noqa: F401  (before paddle: see hnas/__init__.py)
    import numpy as np
    import paddle

    from consistency import bootstrap_ci, kendall_tau_b, pearson_r
    from hnas.data import ImageFolder
    from hnas.evaluator import (bn_statistics, load_fixed_images, load_supernet, recalibrate_bn,
                                restore_bn_statistics)
    from hnas.io import read_arch_json
    from hnas.search_space import SearchSpace

SMALL_CONFIG = os.path.join(ROOT, "configs", "resnet48_small.yaml")
IMAGENET_CONFIG = os.path.join(ROOT, "configs", "resnet48_imagenet.yaml")
TRACK1 = os.path.join(ROOT, "checkpoints", "CVPR_2022_NAS_Track1_test.json")
DEFAULT_CHECKPOINT = os.path.join(ROOT, "output", "consistency", "supernet", "b9914e2c95a0")  # spos, 2 epochs
DEFAULT_RESULTS = os.path.join(ROOT, "benchmarks", "results", "eval_budget.json")
TAU_GOAL = 0.95
BOOTSTRAP = 1000
# The GPU side of the estimate is not measured here.  Reference: NVIDIA DeepLearningExamples,
# PyTorch ResNet-50 v1.5, inference on 1 x V100 16 GB (DGX-1), FP32: 1,200 img/s at batch 64,
# 1,229 at batch 128 (the ranking's batch 100 lies between; the lower figure is taken).
GPU_REFERENCE = {"name": "V100 16GB, ResNet-50 v1.5 inference, FP32, batch 64", "images_per_s": 1200.0,
                 "source": "https://github.com/NVIDIA/DeepLearningExamples/tree/master/PyTorch/"
                           "Classification/ConvNets/resnet50v15 (Inference performance results)"}
GPUS = 8


# ---------------------------------------------------------------------------- scoring
def sample_archs(count: int, seed: int = 0) -> list[str]:
    """The first ``count`` Track-1 codes of a ``seed``-ed permutation, so a smaller sample is a
    prefix of a larger one and records carry over."""
    codes = [entry["arch"] for entry in read_arch_json(TRACK1).values()]
    return [codes[i] for i in np.random.default_rng(seed).permutation(len(codes))[:count]]


def subset_masks(image_dir: str, eval_sizes: list[int], seed: int) -> dict[int, np.ndarray]:
    """For each M, which images of the largest draw a draw of M holds (``ImageFolder``'s own draw)."""
    def drawn(m):
        return [path for path, _ in ImageFolder(os.path.join(image_dir, "val"), limit=m, seed=seed).samples]

    largest = drawn(max(eval_sizes))
    masks = {}
    for m in eval_sizes:
        subset = set(drawn(m))
        masks[m] = np.array([path in subset for path in largest])
        if masks[m].sum() != len(subset):
            raise ValueError(f"a draw of {m} validation images is not a subset of the draw of {len(largest)}")
    return masks


class BudgetScorer:
    """Per arch and per K: recalibrate once, score every image of the largest draw once."""

    def __init__(self, supernet, image_dir: str, calib_sizes: list[int], eval_sizes: list[int],
                 batch_size: int, seed: int = 0, image_size: int = 32):
        self.supernet = supernet
        self.supernet.eval()
        self.calib_sizes, self.eval_sizes = sorted(calib_sizes), sorted(eval_sizes)
        self.masks = subset_masks(image_dir, self.eval_sizes, seed)
        self.evaluation = load_fixed_images(image_dir, image_size, 0, batch_size, max(self.eval_sizes), seed)
        self.calibration = {k: list(load_fixed_images(image_dir, image_size, k, batch_size, 1, seed)
                                    .calibration_batches()) for k in self.calib_sizes}
        self.stored_stats = bn_statistics(supernet)

    def restore_stored_stats(self) -> None:
        """K = 0 reads the checkpoint's statistics, which an earlier recalibration overwrote."""
        restore_bn_statistics(self.supernet, self.stored_stats)

    def score(self, code: str) -> dict:
        """``{"hits": {K: {M: hits}}, "calib_secs"/"calib_cpu": {K: s}, "eval_secs"/"eval_cpu":
        {K: s per image}}`` of one arch."""
        self.supernet.set_active(code)
        record = {"arch": code, "hits": {}, "calib_secs": {}, "calib_cpu": {}, "eval_secs": {}, "eval_cpu": {}}
        num_images = self.evaluation.num_eval
        for k in self.calib_sizes:
            key = str(k)  # as the record reads back from JSON
            start, cpu = time.perf_counter(), time.process_time()
            if k == 0:
                self.restore_stored_stats()
            recalibrate_bn(self.supernet, self.calibration[k])
            record["calib_secs"][key] = time.perf_counter() - start
            record["calib_cpu"][key] = time.process_time() - cpu
            start, cpu = time.perf_counter(), time.process_time()
            correct = []
            with paddle.no_grad():
                for images, labels in self.evaluation.eval_batches():
                    correct.append((self.supernet(images).argmax(axis=1) == labels).numpy())
            record["eval_secs"][key] = (time.perf_counter() - start) / num_images
            record["eval_cpu"][key] = (time.process_time() - cpu) / num_images
            correct = np.concatenate(correct)
            record["hits"][key] = {str(m): int(correct[self.masks[m]].sum()) for m in self.eval_sizes}
        return record


# ---------------------------------------------------------------------------- runs
def setting_id(args) -> dict:
    return {"checkpoint": os.path.relpath(os.path.realpath(args.checkpoint), ROOT),
            "data": os.path.relpath(os.path.realpath(args.data), ROOT),
            "arch_seed": args.arch_seed, "seed": args.seed, "batch_size": args.batch_size,
            "calib_batches": sorted(args.calib_batches), "eval_images": sorted(args.eval_images)}


def records_prefix(args) -> str:
    """Records of one setting (any sample size, any number of workers) share this prefix."""
    digest = hashlib.sha1(json.dumps(setting_id(args), sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(args.workdir, digest)


def records_path(args, shard: int, num_shards: int) -> str:
    return f"{records_prefix(args)}.shard{shard}of{num_shards}.jsonl"


def read_records(path: str) -> dict[str, dict]:
    """``{code: record}`` of the complete lines of ``path`` (a line cut short by a kill is dropped)."""
    if not os.path.isfile(path):
        return {}
    records = {}
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):
                record = json.loads(line)
                records[record["arch"]] = record
    return records


def worker(args) -> None:
    """Score this shard's archs that have no record yet, appending one line per arch."""
    space = SearchSpace.from_yaml(SMALL_CONFIG)
    supernet, _ = load_supernet(space, args.checkpoint)
    codes = sample_archs(args.archs, args.arch_seed)[args.shard::args.num_shards]
    path = records_path(args, args.shard, args.num_shards)
    done = read_records(path)
    scorer = BudgetScorer(supernet, args.data, args.calib_batches, args.eval_images, args.batch_size, args.seed)
    with open(path, "a") as f:
        for i, code in enumerate(codes):
            if code in done:
                continue
            f.write(json.dumps(scorer.score(code)) + "\n")
            f.flush()
            print(f"shard {args.shard}: {i + 1}/{len(codes)} archs, load {os.getloadavg()[0]:.2f}", flush=True)


def run_workers(args) -> None:
    os.makedirs(args.workdir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    common = [a for a in sys.argv[1:] if a not in ("--table", "--gpu_estimate")]
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *common, "--worker",
                               "--shard", str(i), "--num_shards", str(args.jobs)], env=env)
             for i in range(args.jobs)]
    if any(proc.wait() for proc in procs):
        raise RuntimeError("a worker failed; its output is above")


# ---------------------------------------------------------------------------- analysis
def interval(scores: np.ndarray, reference: np.ndarray, resamples: int) -> tuple[float, float]:
    """Bootstrap 95% interval of tau over archs; nan when either side is constant (no ranking)."""
    if np.ptp(scores) == 0 or np.ptp(reference) == 0:
        return math.nan, math.nan
    return bootstrap_ci(scores, reference, resamples=resamples)


def summarize(records: list[dict], calib_sizes: list[int], eval_sizes: list[int], batch_size: int,
              resamples: int = BOOTSTRAP) -> list[dict]:
    """One row per setting: tau and Pearson against the largest setting, and its cost."""
    largest = (str(max(calib_sizes)), str(max(eval_sizes)))
    reference = np.array([r["hits"][largest[0]][largest[1]] / max(eval_sizes) for r in records])
    rows = []
    for k in sorted(calib_sizes):
        calib_secs = float(np.mean([r["calib_secs"][str(k)] for r in records]))
        calib_cpu = float(np.mean([r["calib_cpu"][str(k)] for r in records]))
        eval_secs = float(np.mean([r["eval_secs"][str(k)] for r in records]))
        eval_cpu = float(np.mean([r["eval_cpu"][str(k)] for r in records]))
        for m in sorted(eval_sizes):
            scores = np.array([r["hits"][str(k)][str(m)] / m for r in records])
            rows.append({"calib_batches": k, "eval_images": m, "images_per_arch": k * batch_size + m,
                         "tau": kendall_tau_b(scores, reference),
                         "tau_ci": interval(scores, reference, resamples),
                         "pearson": pearson_r(scores, reference),
                         "secs_per_arch": calib_secs + m * eval_secs, "cpu_secs_per_arch": calib_cpu + m * eval_cpu,
                         "mean_acc": float(scores.mean()), "sd_across_archs": float(scores.std(ddof=1))})
    return rows


def split_half(records: list[dict], calib_sizes: list[int], eval_sizes: list[int]) -> dict:
    """Per K: tau between the scores on a draw of M' <= M/2 images and on the other images of the
    largest draw of M (disjoint sets, same calibration), the evaluation images' own noise."""
    largest = max(eval_sizes)
    half = max((m for m in eval_sizes if 2 * m <= largest), default=None)
    if half is None:
        return {}
    out = {}
    for k in sorted(calib_sizes):
        first = np.array([r["hits"][str(k)][str(half)] / half for r in records])
        rest = np.array([(r["hits"][str(k)][str(largest)] - r["hits"][str(k)][str(half)]) / (largest - half)
                         for r in records])
        out[str(k)] = {"images": [half, largest - half], "tau": kendall_tau_b(first, rest),
                       "tau_ci": interval(first, rest, BOOTSTRAP)}
    return out


def cheapest(rows: list[dict], strict: bool = False) -> dict | None:
    """The setting with the fewest images per arch whose tau (or, ``strict``, whose interval's
    lower end) is at least ``TAU_GOAL``."""
    fit = [r for r in rows if (r["tau_ci"][0] if strict else r["tau"]) >= TAU_GOAL]
    return min(fit, key=lambda r: (r["images_per_arch"], r["secs_per_arch"])) if fit else None


def conv_and_fc_macs(model, image_size: int) -> int:
    """Multiply-accumulates of ``model``'s conv and fc layers for one image, counted with forward
    hooks (``SearchSpace.flops``'s convention; ``paddle.flops`` fails on Paddle 3.3)."""
    total = [0]

    def count(layer, inputs, output):
        if isinstance(layer, paddle.nn.Conv2D):
            kernel = int(np.prod(layer.weight.shape[1:]))  # in_channels / groups x kh x kw
            total[0] += kernel * int(np.prod(output.shape[1:]))
        else:
            total[0] += int(np.prod(layer.weight.shape))

    handles = [layer.register_forward_post_hook(count) for layer in model.sublayers()
               if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Linear))]
    model.eval()
    with paddle.no_grad():
        model(paddle.zeros([1, 3, image_size, image_size]))
    for handle in handles:
        handle.remove()
    return total[0]


def measure_imagenet(archs: int, batch: int, seed: int = 0) -> dict:
    """MACs of the 45,000 Track-1 archs at their own image size, and CPU seconds per image at
    224 px (one BN-training-mode and one eval-mode forward of ``batch`` random images) for a few."""
    from hnas.models import ResNetSuperNet

    space = SearchSpace.from_yaml(IMAGENET_CONFIG)
    codes = [entry["arch"] for entry in read_arch_json(TRACK1).values()]
    macs = np.array([space.flops(code) for code in codes], dtype=float)
    resnet50_macs = float(conv_and_fc_macs(paddle.vision.models.resnet50(), 224))
    paddle.seed(seed)
    supernet = ResNetSuperNet(space)
    supernet.eval()
    images = paddle.randn([batch, 3, 224, 224])
    timed = []
    for code in sample_archs(archs + 1, seed + 1):
        arch = supernet.set_active(code)
        size = space.image_sizes[arch.image_code - 1]
        x = images if size == 224 else paddle.nn.functional.interpolate(images, size=[size, size])
        start, cpu = time.perf_counter(), time.process_time()
        recalibrate_bn(supernet, [x])
        train_mode = time.perf_counter() - start
        start = time.perf_counter()
        with paddle.no_grad():
            supernet(x)
        eval_mode = time.perf_counter() - start
        timed.append({"arch": code, "image_size": size, "macs": space.flops(code),
                      "train_mode_secs_per_image": train_mode / batch, "eval_secs_per_image": eval_mode / batch,
                      "cpu_secs_per_image": (time.process_time() - cpu) / (2 * batch)})
    timed = timed[1:]  # the first arch warms up allocations
    return {"archs_macs_mean": float(macs.mean()), "archs_macs_min": float(macs.min()),
            "archs_macs_max": float(macs.max()), "resnet50_macs": resnet50_macs, "batch": batch,
            "timed": timed, "load": os.getloadavg()[0]}


def gpu_estimate(imagenet: dict, images_per_arch: int, archs: int = 45000) -> dict:
    """Derived: hours of the full ranking on ``GPUS`` GPUs, each forward priced at the reference
    GPU's ResNet-50 seconds per image times the arch's MACs over ResNet-50's."""
    per_image = imagenet["archs_macs_mean"] / imagenet["resnet50_macs"] / GPU_REFERENCE["images_per_s"]
    cpu = [t["cpu_secs_per_image"] / t["macs"] * imagenet["archs_macs_mean"] for t in imagenet["timed"]]
    cpu_per_image = float(np.mean(cpu))
    return {"gpu_secs_per_image": per_image, "gpu_hours": archs * images_per_arch * per_image / GPUS / 3600,
            "cpu_secs_per_image_at_mean_macs": cpu_per_image,
            "cpu_core_hours": archs * images_per_arch * cpu_per_image / 3600, "images_per_arch": images_per_arch}


def print_report(result: dict, imagenet: dict | None) -> None:
    """The table of one supernet's run, its cheapest settings, and the 8-GPU estimate."""
    run = result["run"]
    setting = run["setting"]
    print(f"\n{run['archs_done']} Track-1 archs (sample of {setting['archs']}, seed {setting['arch_seed']}), checkpoint"
          f" {setting['checkpoint']}, batch {setting['batch_size']}; reference: K="
          f"{max(setting['calib_batches'])}, M={max(setting['eval_images'])}; load average "
          f"{run['load']:.2f}\n")
    print("| K calib batches | M eval images | images/arch | Kendall tau [95% CI] | Pearson | s/arch (wall) "
          "| CPU s/arch | top-1 mean | top-1 sd over archs |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        print(f"| {r['calib_batches']} | {r['eval_images']} | {r['images_per_arch']} | {r['tau']:.3f} "
              f"[{r['tau_ci'][0]:.2f}, {r['tau_ci'][1]:.2f}] | {r['pearson']:.3f} | {r['secs_per_arch']:.2f} "
              f"| {r['cpu_secs_per_arch']:.2f} | {r['mean_acc']:.3f} | {r['sd_across_archs']:.4f} |")
    for k, half in result["split_half"].items():
        print(f"K={k}: tau between disjoint sets of {half['images'][0]} and {half['images'][1]} evaluation images "
              f"{half['tau']:.3f} [{half['tau_ci'][0]:.2f}, {half['tau_ci'][1]:.2f}]")
    for strict in (False, True):
        best = cheapest(result["rows"], strict)
        what = "whose 95% interval lies above" if strict else "with tau >="
        if best is None:
            print(f"\nno setting {what} {TAU_GOAL}")
        else:
            print(f"\ncheapest setting {what} {TAU_GOAL}: K={best['calib_batches']}, M={best['eval_images']} "
                  f"({best['images_per_arch']} images/arch, tau {best['tau']:.3f})")
    if imagenet is not None and cheapest(result["rows"]) is not None:
        im = imagenet
        est = gpu_estimate(im, cheapest(result["rows"])["images_per_arch"])
        print(f"\nImageNet config: Track-1 MACs mean {im['archs_macs_mean'] / 1e9:.2f} G "
              f"({im['archs_macs_min'] / 1e9:.2f}..{im['archs_macs_max'] / 1e9:.2f}), ResNet-50 "
              f"{im['resnet50_macs'] / 1e9:.2f} G (counted); CPU s/image at 224 px (measured, batch "
              f"{im['batch']}, load {im['load']:.2f}):")
        for t in im["timed"]:
            print(f"  {t['arch']} {t['macs'] / 1e9:.2f} GMACs: BN-train {t['train_mode_secs_per_image']:.3f}, "
                  f"eval {t['eval_secs_per_image']:.3f}, CPU {t['cpu_secs_per_image']:.3f}")
        print(f"derived: {est['gpu_secs_per_image'] * 1e3:.3f} GPU ms/image at the mean MACs "
              f"({GPU_REFERENCE['name']}: {GPU_REFERENCE['images_per_s']:.0f} img/s); 45,000 archs x "
              f"{est['images_per_arch']} images = {est['gpu_hours']:.2f} h on {GPUS} GPUs "
              f"(one CPU core: {est['cpu_core_hours']:.0f} h)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="trained small-config supernet (folder)")
    parser.add_argument("--data", default=os.path.join(ROOT, "data", "fmnist_gt"), help="ImageNet-layout train/ val/")
    parser.add_argument("--archs", type=int, default=200, help="Track-1 archs in the sample")
    parser.add_argument("--arch_seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="which images (as eval_supernet.py --seed)")
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--calib_batches", type=int, nargs="+", default=[0, 1, 2, 5, 10, 20])
    parser.add_argument("--eval_images", type=int, nargs="+", default=[100, 250, 500, 1000, 2000])
    parser.add_argument("--jobs", type=int, default=1, help="worker processes, one math thread each")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "output", "eval_budget"))
    parser.add_argument("--results", default=DEFAULT_RESULTS)
    parser.add_argument("--table", action="store_true", help="report from the records so far, rank nothing")
    parser.add_argument("--gpu_estimate", action="store_true", help="measure 224 px CPU cost (3 archs) and MACs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--num_shards", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    data = {}
    if os.path.isfile(args.results):
        with open(args.results) as f:
            data = json.load(f)
    if args.gpu_estimate:
        data["imagenet"] = {**measure_imagenet(archs=3, batch=8), "date": time.strftime("%Y-%m-%d")}
        save_results(data, args.results)
    if not args.table:
        run_workers(args)
    order = sample_archs(args.archs, args.arch_seed)
    records = {}
    for path in sorted(glob.glob(records_prefix(args) + ".shard*.jsonl")):
        records.update(read_records(path))
    done = [records[code] for code in order if code in records]
    if len(done) < 3:
        raise SystemExit(f"only {len(done)} archs scored so far; run without --table first")
    result = {"run": {"setting": {**setting_id(args), "archs": args.archs}, "archs_done": len(done),
                      "load": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d"), "jobs": args.jobs},
              "rows": summarize(done, args.calib_batches, args.eval_images, args.batch_size),
              "split_half": split_half(done, args.calib_batches, args.eval_images), "records": done}
    if "imagenet" in data and cheapest(result["rows"]) is not None:
        result["gpu_estimate"] = {**gpu_estimate(data["imagenet"], cheapest(result["rows"])["images_per_arch"]),
                                  "reference": GPU_REFERENCE, "gpus": GPUS}
    runs = {**data.get("runs", {}), result["run"]["setting"]["checkpoint"]: result}  # one entry per supernet
    data = {"imagenet": data.get("imagenet"), "runs": runs}
    save_results(data, args.results)
    print_report(result, data["imagenet"])


def save_results(data: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
