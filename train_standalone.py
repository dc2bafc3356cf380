"""Train one subnet from scratch and record its validation top-1 (ground truth for ranking).

    python train_standalone.py run --config configs/resnet48_small.yaml --arch CODE \
        --image_dir data/fashion_mnist --max_epoch 15 --out_json checkpoints/ground_truth.json

The network is the stand-alone ``hnas.models.ResNet`` of ``--arch`` (the baseline's
``pretrain.py``), trained by the same :class:`hnas.trainer.Trainer` as supernets with the
``standalone`` strategy.  Hyper-parameters come from the config's ``Standalone`` section (same
keys as ``Train``), then from the flags, then from ``-o Standalone.key=value``.  The result is
merged into ``--out_json`` in the submission format, ``{"archN": {"acc": top1, "arch": CODE}}``
with top-1 as a fraction: an entry with the same code is updated, other entries are kept.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import hnas  # noqa: F401  (before paddle: see hnas/__init__.py)
import paddle

from hnas.checkpoint import check_run_dir
from hnas.config import save_config, section
from hnas.io import read_arch_json, write_arch_json
from hnas.models import ResNet
from hnas.search_space import ArchCodeError, SearchSpace
from hnas.strategies import build_strategy
from hnas.train_config import TRAIN_FLAGS, DataConfig, TrainConfig, add_train_flags, build_datasets, resolve_config
from hnas.trainer import Trainer

SECTION = "Standalone"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train one subnet from scratch",
                              epilog="Flags left out take their value from the config file.")
    add_train_flags(run)
    run.add_argument("--arch", required=True, help="arch code (52 digits, or 51 without the image digit)")
    run.add_argument("--out_json", default=None, help="submission-format JSON to merge the result into")
    run.add_argument("--name", default=None,
                     help="key in --out_json (default: the key already holding this code, else the next archN)")
    run.add_argument("--resume", default=None, help="continue from a run folder or checkpoint")
    return parser


def setup(args):
    """Parse, validate and build everything before the first training step."""
    cfg = resolve_config(args, TRAIN_FLAGS, train_section=SECTION)
    space = SearchSpace.from_config(section(cfg, "SearchSpace"))
    code = space.normalize(args.arch)
    train_section = {"strategy": "standalone", **section(cfg, SECTION)}
    if train_section["strategy"] != "standalone":
        raise ValueError(f"{SECTION}.strategy must be 'standalone', got {train_section['strategy']!r}")
    if args.save_dir is None:  # one folder per arch, so runs of different archs never mix
        train_section["save_dir"] = os.path.join(train_section.get("save_dir", "checkpoints/standalone"), code)
    train_cfg = TrainConfig.from_config(train_section)
    data_cfg = DataConfig.from_config(section(cfg, "Data"))
    cfg.update({SECTION: dataclasses.asdict(train_cfg), "Data": dataclasses.asdict(data_cfg)})
    check_run_dir(train_cfg.save_dir, args.resume)
    if args.out_json and os.path.exists(args.out_json):
        read_arch_json(args.out_json)  # fail now, not after training, on a broken file
    train_set, val_set, _ = build_datasets(data_cfg, space.widths(code).image_size, train_cfg.seed)
    if val_set is None:
        raise FileNotFoundError(f"{data_cfg.image_dir!r} has no val folder to measure the accuracy on")
    paddle.seed(train_cfg.seed)
    model = ResNet(code, space)
    trainer = Trainer(model, build_strategy("standalone", space, train_cfg), train_cfg, config=cfg)
    if args.resume:
        trainer.load(args.resume)
    return cfg, code, trainer, train_set, val_set, data_cfg.num_workers


def merge_result(path: str, code: str, acc: float, name: str | None = None) -> str:
    """Write ``{name: {"acc": acc, "arch": code}}`` into ``path``, keeping every other entry.

    Without ``name``: the key already holding ``code``, else ``arch{N+1}``.  Returns the key.
    """
    data = read_arch_json(path) if os.path.exists(path) else {}
    if name is None:
        name = next((k for k, v in data.items() if v["arch"] == code), None)
    if name is None:
        taken = set(data)
        name = next(f"arch{i}" for i in range(len(data) + 1, 2 * len(data) + 2) if f"arch{i}" not in taken)
    data[name] = {**data.get(name, {}), "acc": float(acc), "arch": code}
    write_arch_json(data, path)
    return name


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg, code, trainer, train_set, val_set, num_workers = setup(args)
    except (ValueError, KeyError, OSError, ArchCodeError) as exc:
        parser.exit(2, f"{parser.prog} run: error: {exc.args[0] if exc.args else exc}\n")
    if trainer.is_main:
        save_config(cfg, os.path.join(trainer.save_dir, "config.yaml"))
    logs = trainer.fit(train_set, val_set, num_workers=num_workers) or trainer.evaluate(val_set)
    acc = logs["top1_net"]
    if trainer.is_main:
        print(f"{code} top-1 {acc:.4f}")
        if args.out_json:
            print(f"wrote {merge_result(args.out_json, code, acc, args.name)} to {args.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
