"""How well does a supernet rank subnets?  Kendall tau against a stand-alone ground truth.

    python benchmarks/consistency.py --strategy spos sandwich            # one setting per strategy
    python benchmarks/consistency.py --strategy spos --epochs 2 4 8      # a lever: one row per value
    python benchmarks/consistency.py --table                             # print the cached results

The ground truth (``--ground_truth``, by default the shared ``gt_fmnist_dev.jsonl``) is one JSON
line per stand-alone run, ``{"arch", "seed", "acc", ...}``: small-config archs trained from
scratch on a fixed Fashion-MNIST protocol.  The benchmark

1. exports the same data subsets (``utils/prepare_fashion_mnist.py --subset_seeds 0 1
   --pad_value 73``: 2,000 training images per class drawn with ``RandomState(0)``, 500
   validation images per class of t10k with ``RandomState(1)``, 28 px padded to 32 with the
   grey level of the normalised zero);
2. trains one supernet per setting through ``train_supernet.py run --strategy NAME`` and
   ranks the ground-truth archs with it through ``eval_supernet.py run``;
   A recipe (``--recipe NAME``: ``configs/recipes/NAME_small.yaml``, several phases) is trained
   at the same budget of images seen as a single-phase row, ``epochs x train_images``: every
   phase (every few-shot child) runs one epoch, without warmup, over a fixed subset of
   ``budget / phases`` training images, with the recipe's own strategies, learning rates and
   optimiser; it is ranked through its recipe folder (few-shot archs by their own child);
3. scores every predictor (each setting, and the zero-cost proxies FLOPs, params, Zen-score,
   SNIP, SynFlow) against the ground truth's per-arch mean over seeds: Kendall tau-b and
   Pearson, each with a 95% bootstrap interval over archs (2,000 resamples);
4. reports the ground truth's own noise: seed-to-seed tau over the archs trained twice, and
   the ceiling a perfect predictor reaches (see :func:`ceilings`).

A setting is every knob of the training and of the ranking; its key lists them all, so a
cached result is only reused for exactly the same knobs.  Supernets and rankings are cached
in ``--workdir``, results in ``--results`` (JSON, beside the README table).  Every process
runs with one math thread, ``--jobs`` at a time (default 1).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG = os.path.join(ROOT, "configs", "resnet48_small.yaml")
TRACK1 = os.path.join(ROOT, "checkpoints", "CVPR_2022_NAS_Track1_test.json")
DEFAULT_GT = os.path.join(os.path.dirname(ROOT), "shared", "data", "gt_fmnist_dev.jsonl")
DEFAULT_RESULTS = os.path.join(ROOT, "benchmarks", "results", "consistency.json")
PROXIES = ("flops", "params", "zen", "snip", "synflow")
BOOTSTRAP = 2000

# Knobs of a setting and their defaults.  Training: the ground truth's recipe where it applies
# (SGD Nesterov 0.9, peak lr 0.1 at batch 128 = 0.2 per 256 images, wd 5e-4, cosine, no warmup).
TRAIN_KNOBS = {"strategy": "spos", "epochs": 8, "batch_size": 128, "lr": 0.2, "weight_decay": 5e-4,
               "nesterov": True, "warmup": 0.0, "dyna_batch_size": 4, "sampler": "uniform", "seed": 0,
               "train_images": 20000, "recipe": "none"}
# Knobs a recipe sets per phase itself; a recipe row records them as "-".
RECIPE_OWNS = ("strategy", "lr", "weight_decay", "nesterov", "warmup", "dyna_batch_size", "sampler")
RECIPES = os.path.join(ROOT, "configs", "recipes")
TRAIN_SET = 20000  # images in the exported training subset (2,000 per class)
RANK_KNOBS = {"calib_batches": 5, "eval_batch": 100, "eval_images": 1000, "score": "acc",
              "finetune_steps": 0, "finetune_lr": 0.02, "finetune_batch": 128, "finetune_init": "supernet"}
KNOB_TYPES = {"nesterov": lambda s: s.lower() in ("1", "true", "yes")}


# ---------------------------------------------------------------------------- ground truth
def read_ground_truth(path: str) -> dict[str, dict[int, float]]:
    """``{arch: {seed: acc}}`` from a JSON-lines file; a bad line is an error naming it."""
    runs: dict[str, dict[int, float]] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where} is not JSON ({exc})") from None
            if not isinstance(record, dict) or any(k not in record for k in ("arch", "seed", "acc")):
                raise ValueError(f"{where} needs the keys arch, seed and acc; got {line.strip()[:80]!r}")
            arch, seed, acc = record["arch"], record["seed"], record["acc"]
            if not (isinstance(arch, str) and arch.isdigit()):
                raise ValueError(f"{where}: arch must be a string of digits, got {arch!r}")
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise ValueError(f"{where}: seed must be an integer, got {seed!r}")
            if not isinstance(acc, (int, float)) or isinstance(acc, bool) or not 0 <= acc <= 1:
                raise ValueError(f"{where}: acc must be a fraction in [0, 1], got {acc!r}")
            if seed in runs.setdefault(arch, {}):
                raise ValueError(f"{where}: arch {arch} with seed {seed} appears twice")
            runs[arch][seed] = float(acc)
    if len(runs) < 3:
        raise ValueError(f"{path} holds {len(runs)} arch(s); a ranking needs at least 3")
    return runs


def target(runs: dict[str, dict[int, float]]) -> dict[str, float]:
    """The accuracy every predictor is compared with: each arch's mean over its seeds."""
    return {arch: float(np.mean(list(seeds.values()))) for arch, seeds in runs.items()}


def seed_pairs(runs: dict[str, dict[int, float]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Archs with at least two seeds, and their accuracies at the two lowest seeds."""
    archs = [a for a, seeds in runs.items() if len(seeds) >= 2]
    first = np.array([runs[a][sorted(runs[a])[0]] for a in archs])
    second = np.array([runs[a][sorted(runs[a])[1]] for a in archs])
    return archs, first, second


# ---------------------------------------------------------------------------- statistics
def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b (ties as in scipy); nan when either side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


def pearson_r(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def bootstrap_ci(pred, truth, stat=kendall_tau_b, resamples: int = BOOTSTRAP, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(pred, truth)`` over archs: ``resamples`` draws of
    the archs with replacement (degenerate draws, where a side is constant, are dropped)."""
    pred, truth = np.asarray(pred, dtype=float), np.asarray(truth, dtype=float)
    if len(pred) != len(truth) or len(pred) < 3:
        raise ValueError(f"need two equally long score lists of at least 3 archs, got {len(pred)}, {len(truth)}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, len(pred), len(pred))
        v = stat(pred[idx], truth[idx])
        if not math.isnan(v):
            values.append(v)
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def ceilings(runs: dict[str, dict[int, float]], sims: int = BOOTSTRAP, seed: int = 0) -> dict:
    """What a perfect predictor (one that knows each arch's true expected accuracy) can reach.

    - ``seed_tau``: tau between the two seeds over the archs trained twice (with its interval).
    - ``seed1_vs_mean``: tau between seed 1 and the two-seed mean over those archs, the
      ceiling as the shared notes define it (optimistic: seed 1 is half of the mean).
    - ``perfect_vs_target`` (the headline ceiling): expected tau between the true accuracies
      and the target used here (per-arch mean over its k seeds), by simulation.  Run-to-run
      noise variance s2 = mean over the twice-trained archs of (acc1 - acc2)^2 / 2; the true
      accuracies are the targets shrunk toward their mean so their variance is var(target) -
      mean(s2 / k); each simulation adds N(0, s2 / k) to them and takes tau with the truth.
      Reported as the mean and the 2.5-97.5% range over ``sims`` simulations, and also for a
      single-seed target (``perfect_vs_one_seed``).
    """
    archs, first, second = seed_pairs(runs)
    out = {"archs": len(runs), "twice_trained": len(archs)}
    if len(archs) < 3:
        return out
    mean12 = (first + second) / 2
    out["seed_tau"] = kendall_tau_b(first, second)
    out["seed_tau_ci"] = bootstrap_ci(first, second, seed=seed)
    out["seed_pearson"] = pearson_r(first, second)
    out["seed_mean_abs_diff"] = float(np.abs(first - second).mean())
    out["seed1_vs_mean"] = kendall_tau_b(first, mean12)
    noise_var = float(((first - second) ** 2).mean() / 2)
    t = target(runs)
    values = np.array([t[a] for a in runs])
    k = np.array([len(runs[a]) for a in runs], dtype=float)
    observed_var = float(values.var(ddof=1))
    true_var = max(observed_var - float((noise_var / k).mean()), 1e-12)
    truth = values.mean() + math.sqrt(true_var / observed_var) * (values - values.mean())
    rng = np.random.default_rng(seed)
    for name, ks in (("perfect_vs_target", k), ("perfect_vs_one_seed", np.ones_like(k))):
        taus = [kendall_tau_b(truth, truth + rng.normal(0, np.sqrt(noise_var / ks))) for _ in range(sims)]
        out[name] = float(np.mean(taus))
        out[name + "_range"] = (float(np.quantile(taus, 0.025)), float(np.quantile(taus, 0.975)))
    out["noise_sd"] = math.sqrt(noise_var)
    out["true_sd"] = math.sqrt(true_var)
    return out


def score_predictor(pred: dict[str, float], truth: dict[str, float]) -> dict:
    """Tau and Pearson of ``pred`` against ``truth`` (both ``{arch: value}``) with intervals."""
    missing = [a for a in truth if a not in pred]
    if missing:
        raise ValueError(f"the predictor has no score for {len(missing)} ground-truth arch(s), e.g. {missing[0]}")
    archs = list(truth)
    p, t = np.array([pred[a] for a in archs]), np.array([truth[a] for a in archs])
    return {"n": len(archs), "tau": kendall_tau_b(p, t), "tau_ci": bootstrap_ci(p, t),
            "pearson": pearson_r(p, t), "pearson_ci": bootstrap_ci(p, t, stat=pearson_r),
            "score_range": (float(p.min()), float(p.max()))}


# ---------------------------------------------------------------------------- settings
def setting_key(knobs: dict) -> str:
    """The cache key of a setting: every knob, sorted by name, ``name=value`` joined by spaces
    (``recipe=none`` left out, so keys from before recipes existed still match)."""
    return " ".join(f"{k}={_fmt(v)}" for k, v in sorted(knobs.items()) if (k, v) != ("recipe", "none"))


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def short_hash(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def expand_settings(grid: dict[str, list]) -> list[dict]:
    """Every combination of the knob values in ``grid`` (knobs left out take their default)."""
    defaults = {**TRAIN_KNOBS, **RANK_KNOBS}
    unknown = sorted(set(grid) - set(defaults))
    if unknown:
        raise ValueError(f"unknown knob(s) {', '.join(unknown)}; known: {', '.join(sorted(defaults))}")
    names = sorted(grid)
    out = []
    for values in itertools.product(*(grid[n] for n in names)):
        knobs = {**defaults, **dict(zip(names, values))}
        if knobs["recipe"] != "none":
            clash = sorted(set(grid) & set(RECIPE_OWNS))
            if clash:
                raise ValueError(f"--{clash[0]} does not apply to --recipe rows: the recipe sets it per phase")
            path = recipe_config(knobs["recipe"])
            if not os.path.isfile(path):
                known = sorted(f[:-len("_small.yaml")] for f in os.listdir(RECIPES) if f.endswith("_small.yaml"))
                raise ValueError(f"no recipe {knobs['recipe']!r} ({path} is missing); known: {', '.join(known)}")
            knobs.update({k: "-" for k in RECIPE_OWNS})
        out.append(knobs)
    return out


def recipe_config(name: str) -> str:
    return os.path.join(RECIPES, f"{name}_small.yaml")


def recipe_phase_runs(name: str) -> tuple[int, int]:
    """``(entries, runs)`` of a recipe: its ``Phases`` entries, and the phases they train
    (a few-shot split entry trains one child per value)."""
    from hnas.config import load_config, section
    from hnas.phases import parse_phases
    from hnas.search_space import SearchSpace

    cfg = load_config(recipe_config(name))
    space = SearchSpace.from_config(section(cfg, "SearchSpace"))
    return len(cfg["Phases"]), len(parse_phases(cfg["Phases"], space, os.devnull, section(cfg, "Train")))


def split_knobs(knobs: dict) -> tuple[dict, dict]:
    train = {k: knobs[k] for k in TRAIN_KNOBS}
    return train, {**train, **{k: knobs[k] for k in RANK_KNOBS}}


# ---------------------------------------------------------------------------- running the CLIs
def run(cmd: list[str], log: str) -> float:
    """Run one CLI with one math thread, output in ``log``; returns wall seconds; fails loudly."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    start = time.time()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if code != 0:
        with open(log) as f:
            tail = "".join(f.readlines()[-15:])
        raise RuntimeError(f"{os.path.basename(cmd[1])} failed ({code}); end of {log}:\n{tail}")
    return time.time() - start


def export_data(folder: str) -> None:
    subprocess.check_call([sys.executable, "utils/prepare_fashion_mnist.py", "--output", folder,
                           "--image_size", "32", "--train_per_class", "2000", "--val_per_class", "500",
                           "--subset_seeds", "0", "1", "--pad_value", "73"], cwd=ROOT)


def train_supernet(args, knobs: dict) -> tuple[str, float]:
    """The run folder of the supernet of ``knobs`` (trained now unless cached), and its seconds."""
    key = setting_key(knobs)
    folder = os.path.join(args.workdir, "supernet", short_hash(key))
    meta = os.path.join(folder, "benchmark.json")
    if os.path.isfile(meta):
        with open(meta) as f:
            return folder, json.load(f)["secs"]
    if knobs["recipe"] != "none":
        return train_recipe(args, knobs, key, folder, meta)
    cmd = [sys.executable, "train_supernet.py", "run", "--config", CONFIG, "--image_dir", args.data,
           "--save_dir", folder, "--strategy", knobs["strategy"], "--max_epoch", str(knobs["epochs"]),
           "--batch_size", str(knobs["batch_size"]), "--lr", str(knobs["lr"]),
           "--weight_decay", str(knobs["weight_decay"]), "--warmup", str(knobs["warmup"]),
           "--dyna_batch_size", str(knobs["dyna_batch_size"]),
           "--seed", str(knobs["seed"]), "--num_workers", "0", "--log_freq", "50",
           "--save_freq", str(knobs["epochs"]), "-o", f"Train.nesterov={_fmt(knobs['nesterov'])}",
           "-o", f"Train.eval_freq={knobs['epochs']}"]
    if knobs["train_images"] < TRAIN_SET:  # a fixed random subset of the training images
        cmd += ["--train_subset", str(knobs["train_images"])]
    if knobs["sampler"] == "distribution":  # the distribution of the 45,000 Track-1 test archs
        cmd += ["-o", f"Strategy.sampler={{name: distribution, archs_path: {TRACK1}}}"]
    elif knobs["sampler"] != "default":  # "default": the strategy's own (fairnas: fair, biased: biased)
        cmd += ["--sampler", knobs["sampler"]]
    if os.path.isfile(os.path.join(folder, "latest")):
        cmd += ["--resume", folder]
    elif os.path.isdir(folder):  # a run killed before its first checkpoint: start again
        import shutil
        shutil.rmtree(folder)
    print(f"  training {key}", flush=True)
    secs = run(cmd, os.path.join(args.workdir, "logs", f"train_{short_hash(key)}.log"))
    with open(meta, "w") as f:
        json.dump({"key": key, "secs": secs, "command": " ".join(cmd)}, f, indent=1)
    return folder, secs


def train_recipe(args, knobs: dict, key: str, folder: str, meta: str) -> tuple[str, float]:
    """Train a recipe at the budget of ``knobs`` (see the module docstring); returns like
    :func:`train_supernet`."""
    entries, runs = recipe_phase_runs(knobs["recipe"])
    per_epoch = knobs["epochs"] * knobs["train_images"] // runs
    if per_epoch < knobs["batch_size"]:
        raise ValueError(f"a budget of {knobs['epochs'] * knobs['train_images']} images over the {runs} phases "
                         f"of {knobs['recipe']} gives {per_epoch} per phase, less than one batch")
    cmd = [sys.executable, "train_supernet.py", "run", "--config", recipe_config(knobs["recipe"]),
           "--image_dir", args.data, "--batch_size", str(knobs["batch_size"]), "--seed", str(knobs["seed"]),
           "--num_workers", "0", "--log_freq", "50", "--train_subset", str(per_epoch), "-o", "Train.warmup=0"]
    for i in range(entries):
        cmd += ["-o", f"Phases.{i}.epochs=1", "-o", f"Phases.{i}.warmup=0"]
    if os.path.isfile(os.path.join(folder, "recipe.json")):
        cmd += ["--resume", folder]
    else:
        cmd += ["--save_dir", folder]
    print(f"  training {key} ({runs} phases of {per_epoch} images)", flush=True)
    secs = run(cmd, os.path.join(args.workdir, "logs", f"train_{short_hash(key)}.log"))
    with open(meta, "w") as f:
        json.dump({"key": key, "secs": secs, "command": " ".join(cmd)}, f, indent=1)
    return folder, secs


def rank_archs(args, knobs: dict, folder: str, archs_path: str) -> tuple[dict, float]:
    """``{arch code: score}`` of the ranking of ``knobs`` (cached), and its seconds."""
    key = setting_key(knobs)
    out = os.path.join(args.workdir, "rank", short_hash(key) + ".json")
    meta = out + ".benchmark.json"
    if not os.path.isfile(meta):
        cmd = [sys.executable, "eval_supernet.py", "run", "--config", CONFIG, "--image_dir", args.data,
               "--resume", folder, "--json_path", archs_path, "--save_path", out, "--no_progress",
               "--calib_batches", str(knobs["calib_batches"]), "--eval_images", str(knobs["eval_images"]),
               "--batch_size", str(knobs["eval_batch"]), "--score", knobs["score"],
               "--finetune_steps", str(knobs["finetune_steps"]),
               "-o", f"Eval.finetune_lr={knobs['finetune_lr']}",
               "-o", f"Eval.finetune_batch_size={knobs['finetune_batch']}",
               "-o", f"Eval.finetune_init={knobs['finetune_init']}"]
        print(f"  ranking {key}", flush=True)
        secs = run(cmd, os.path.join(args.workdir, "logs", f"rank_{short_hash(key)}.log"))
        with open(meta, "w") as f:
            json.dump({"key": key, "secs": secs, "command": " ".join(cmd)}, f, indent=1)
    with open(meta) as f:
        secs = json.load(f)["secs"]
    with open(out) as f:
        ranked = json.load(f)
    return {entry["arch"]: float(entry["acc"]) for entry in ranked.values()}, secs


def proxy_scores(args, codes: list[str]) -> dict[str, tuple[dict, float]]:
    """``{proxy: ({code: score}, seconds per arch)}``; SNIP uses one real batch of 16 images."""
    from hnas.config import load_config, section
    from hnas.proxies import load_batch, score_archs
    from hnas.search_space import SearchSpace

    space = SearchSpace.from_config(section(load_config(CONFIG), "SearchSpace"))
    inputs, labels = load_batch(args.data, 32, 16)
    out = {}
    for proxy in PROXIES:
        options = {"inputs": inputs, "labels": labels} if proxy == "snip" else {}
        start = time.time()
        scores = score_archs(space, codes, proxy, **options)
        out[proxy] = (dict(zip(codes, scores)), (time.time() - start) / len(codes))
    return out


# ---------------------------------------------------------------------------- results file
@contextlib.contextmanager
def locked_results(path: str):
    """Read-modify-write ``path`` under an exclusive lock (two benchmark processes may share it)."""
    import fcntl

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = {}
        if os.path.isfile(path):
            with open(path) as f:
                data = json.load(f)
        data.setdefault("predictors", {})
        yield data
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)


def print_table(data: dict, keys: list[str] | None = None, vary: list[str] | None = None) -> None:
    """Markdown table of the predictors ``keys`` (default: all), naming the knobs in ``vary``."""
    gt = data.get("ground_truth", {})
    if gt:
        c = gt["ceilings"]
        print(f"ground truth: {gt['path']} ({c['archs']} archs, {c['twice_trained']} trained twice); "
              f"seed-to-seed tau {c['seed_tau']:.3f} [{c['seed_tau_ci'][0]:.2f}, {c['seed_tau_ci'][1]:.2f}]; "
              f"ceiling (perfect predictor vs the target) {c['perfect_vs_target']:.3f} "
              f"[{c['perfect_vs_target_range'][0]:.2f}, {c['perfect_vs_target_range'][1]:.2f}]; "
              f"seed 1 vs two-seed mean {c['seed1_vs_mean']:.3f}\n")
    print("| predictor | Kendall tau [95% CI] | Pearson [95% CI] | score range | train min | rank s/arch |")
    print("|---|---:|---:|---:|---:|---:|")
    predictors = data["predictors"]
    for key in keys or sorted(predictors, key=lambda k: (not k.startswith("proxy"), k)):
        r = predictors[key]
        name = key
        if "knobs" in r:  # the strategy, then the knobs asked for (default: those off their default)
            defaults = {**TRAIN_KNOBS, **RANK_KNOBS}
            shown = vary if vary is not None else [k for k in sorted(r["knobs"]) if r["knobs"][k] != defaults.get(k)]
            recipe = r["knobs"].get("recipe", "none")
            name = r["knobs"]["strategy"] if recipe == "none" else f"recipe {recipe}"
            name += "".join(f", {k} {_fmt(r['knobs'][k])}" for k in shown
                            if k not in ("strategy", "recipe") and r["knobs"][k] != "-")
        train = f"{r['train_secs'] / 60:.1f}" if r.get("train_secs") else "-"
        lo, hi = r["score_range"]
        print(f"| {name} | {r['tau']:.3f} [{r['tau_ci'][0]:.2f}, {r['tau_ci'][1]:.2f}] | "
              f"{r['pearson']:.3f} [{r['pearson_ci'][0]:.2f}, {r['pearson_ci'][1]:.2f}] | "
              f"{lo:.4g}..{hi:.4g} | {train} | {r['rank_secs_per_arch']:.3g} |")


# ---------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ground_truth", default=DEFAULT_GT, help="JSON lines {arch, seed, acc} (default: %(default)s)")
    p.add_argument("--workdir", default=os.path.join(ROOT, "output", "consistency"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fmnist_gt"), help="where the subsets are exported")
    p.add_argument("--results", default=DEFAULT_RESULTS)
    p.add_argument("--table", action="store_true", help="only print the cached results")
    p.add_argument("--no_proxies", action="store_true", help="skip the zero-cost proxies")
    for name, default in {**TRAIN_KNOBS, **RANK_KNOBS}.items():
        kind = KNOB_TYPES.get(name, type(default))
        p.add_argument(f"--{name}", nargs="+", type=kind, default=None,
                       help=f"one or more values (default {_fmt(default)})")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    grid = {k: v for k, v in vars(args).items() if k in {**TRAIN_KNOBS, **RANK_KNOBS} and v is not None}
    vary = [k for k, v in grid.items() if len(v) > 1]
    if args.table:  # the cached rows of the settings the flags give (all rows without flags)
        with open(args.results) as f:
            data = json.load(f)
        keys = None
        if grid:
            keys = [k for k in (setting_key(split_knobs(s)[1]) for s in expand_settings(grid))
                    if k in data["predictors"]]
            keys = [k for k in data["predictors"] if k.startswith("proxy=")] + keys
        print_table(data, keys, vary=(vary or ["strategy"]) if grid else None)
        return
    runs = read_ground_truth(args.ground_truth)
    truth = target(runs)
    codes = list(truth)
    with locked_results(args.results) as data:
        data["ground_truth"] = {"path": os.path.relpath(os.path.realpath(args.ground_truth), ROOT),
                                "target": "per-arch mean over its seeds", "ceilings": ceilings(runs)}
    export_data(args.data)
    os.makedirs(args.workdir, exist_ok=True)
    archs_path = os.path.join(args.workdir, "gt_archs.json")
    archs = json.dumps({f"gt{i:03d}": {"acc": 0.0, "arch": code} for i, code in enumerate(codes)}, indent=1)
    if not os.path.isfile(archs_path) or open(archs_path).read() != archs:  # atomic: another run may read it
        with open(archs_path + ".tmp", "w") as f:
            f.write(archs)
        os.replace(archs_path + ".tmp", archs_path)

    shown = []
    if not args.no_proxies:
        for proxy, (scores, per_arch) in proxy_scores(args, codes).items():
            key = f"proxy={proxy}"
            with locked_results(args.results) as data:
                data["predictors"][key] = {**score_predictor(scores, truth), "rank_secs_per_arch": per_arch,
                                           "command": "python benchmarks/consistency.py (proxies)"}
            shown.append(key)
    settings = expand_settings(grid)
    for knobs in settings:
        train_knobs, rank_knobs = split_knobs(knobs)
        folder, train_secs = train_supernet(args, train_knobs)
        scores, rank_secs = rank_archs(args, rank_knobs, folder, archs_path)
        key = setting_key(rank_knobs)
        with locked_results(args.results) as data:
            data["predictors"][key] = {**score_predictor(scores, truth), "knobs": rank_knobs,
                                       "train_secs": train_secs, "rank_secs_per_arch": rank_secs / len(codes),
                                       "command": "python benchmarks/consistency.py " + " ".join(
                                           f"--{k} {_fmt(v)}" for k, v in sorted(knobs.items())
                                           if v != {**TRAIN_KNOBS, **RANK_KNOBS}[k] and v != "-")}
        shown.append(key)
    with open(args.results) as f:
        print_table(json.load(f), shown, vary=vary or ["strategy"])


if __name__ == "__main__":
    main()
