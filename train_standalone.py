"""Train one subnet from scratch and record its validation top-1 (ground truth for ranking).

    python train_standalone.py run --config configs/resnet48_small.yaml --arch CODE \
        --image_dir data/fashion_mnist --max_epoch 15 --out_json checkpoints/ground_truth.json

The network is the stand-alone ``hnas.models.ResNet`` of ``--arch`` (the baseline's
``pretrain.py``), trained by the same :class:`hnas.trainer.Trainer` as supernets with the
``standalone`` strategy.  Hyper-parameters come from the config's ``Standalone`` section (same
keys as ``Train``), then from the flags, then from ``-o Standalone.key=value``.  The result is
merged into ``--out_json`` in the submission format, ``{"archN": {"acc": top1, "arch": CODE}}``
with top-1 as a fraction; other entries are kept.  An entry for the same code (or ``--name``)
is replaced only with ``--replace``: without it the run is refused before training starts.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import hnas  # noqa: F401  (before paddle: see hnas/__init__.py)
import paddle

from hnas.checkpoint import LockedError, check_run_dir, lock_run_dir
from hnas.config import save_config, section
from hnas.data import UnreadableImageError, check_batch_size, check_class_folders, error_line, exit_on_loader_thread_error
from hnas.io import read_arch_json, refuse_overwrite, write_arch_json
from hnas.models import ResNet
from hnas.search_space import ArchCodeError, SearchSpace
from hnas.strategies import build_strategy
from hnas.train_config import TRAIN_FLAGS, DataConfig, TrainConfig, add_train_flags, build_datasets, resolve_config
from hnas.trainer import Trainer

SECTION = "Standalone"
# The config sections this command reads; -o of any other section is refused.
KNOWN_SECTIONS = ("SearchSpace", SECTION, "Data")


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
    run.add_argument("--replace", action="store_true",
                     help="replace the entry --out_json already holds for this arch (or --name)")
    run.add_argument("--resume", default=None, help="continue from a run folder or checkpoint")
    return parser


def setup(args):
    """Parse, validate and build everything before the first training step."""
    cfg = resolve_config(args, TRAIN_FLAGS, train_section=SECTION, sections=KNOWN_SECTIONS)
    space = SearchSpace.from_config(section(cfg, "SearchSpace"))
    code = space.normalize(args.arch)
    train_section = section(cfg, SECTION)
    if args.save_dir is None:  # one folder per arch, so runs of different archs never mix
        train_section["save_dir"] = os.path.join(train_section.get("save_dir", "checkpoints/standalone"), code)
    train_cfg = TrainConfig.from_config(train_section)
    data_cfg = DataConfig.from_config(section(cfg, "Data"))
    cfg.update({SECTION: dataclasses.asdict(train_cfg), "Data": dataclasses.asdict(data_cfg)})
    check_run_dir(train_cfg.save_dir, args.resume)
    if args.out_json:
        refuse_overwrite(args.out_json, [args.config, args.resume])
        if os.path.exists(args.out_json):  # fail now, not after training
            result_key(read_arch_json(args.out_json), args.out_json, code, args.name, args.replace)
    train_set, val_set, _ = build_datasets(data_cfg, space.widths(code).image_size, train_cfg.seed)
    if val_set is None:
        raise FileNotFoundError(f"{data_cfg.image_dir!r} has no val folder to measure the accuracy on")
    check_class_folders(data_cfg.image_dir, space.num_classes)
    check_batch_size(len(train_set), train_cfg.batch_size, 1, train_set.root)
    paddle.seed(train_cfg.seed)
    model = ResNet(code, space)
    trainer = Trainer(model, build_strategy("standalone", space, train_cfg), train_cfg, config=cfg)
    if args.resume:
        trainer.load(args.resume)
    return cfg, code, trainer, train_set, val_set, data_cfg.num_workers


def result_key(data: dict, path: str, code: str, name: str | None = None, replace: bool = False) -> str:
    """The key of ``code``'s result in ``data`` (the arch list at ``path``).

    Without ``name``: the key already holding ``code``, else ``arch{N+1}``.  An existing entry
    (of ``code``, or at ``name``) is kept unless ``replace``: a second run of one arch would
    otherwise silently replace the first one's result.

    Raises:
        FileExistsError: the entry exists and ``replace`` is false.
    """
    if name is None:
        name = next((k for k, v in data.items() if v["arch"] == code), None)
    if name is not None and name in data and not replace:
        raise FileExistsError(f"{path} already holds a result for {name!r} ({data[name]}); pass --replace "
                              f"to replace it, or choose another --out_json or --name")
    if name is None:
        taken = set(data)
        name = next(f"arch{i}" for i in range(len(data) + 1, 2 * len(data) + 2) if f"arch{i}" not in taken)
    return name


def merge_result(path: str, code: str, acc: float, name: str | None = None, replace: bool = False) -> str:
    """Write ``{name: {"acc": acc, "arch": code}}`` into ``path``, keeping every other entry
    (see :func:`result_key` for ``name`` and ``replace``).  Returns the key."""
    data = read_arch_json(path) if os.path.exists(path) else {}
    name = result_key(data, path, code, name, replace)
    data[name] = {**data.get(name, {}), "acc": float(acc), "arch": code}
    write_arch_json(data, path)
    return name


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{parser.prog} run"
    try:
        cfg, code, trainer, train_set, val_set, num_workers = setup(args)
        run_lock = lock_run_dir(trainer.save_dir, args.resume) if trainer.is_main and trainer.save_dir else None  # noqa: F841
    except (ValueError, KeyError, OSError, ArchCodeError, LockedError) as exc:
        parser.exit(2, f"{prog}: error: {exc.args[0] if exc.args else exc}\n")
    if trainer.is_main:
        save_config(cfg, os.path.join(trainer.save_dir, "config.yaml"))
    with exit_on_loader_thread_error(prog):  # a dataset error must not hang the loader
        try:
            logs = trainer.fit(train_set, val_set, num_workers=num_workers) or trainer.evaluate(val_set)
        except UnreadableImageError as exc:
            parser.exit(2, f"{prog}: error: {error_line(exc)}\n")
    acc = logs["top1_net"]
    if trainer.is_main:
        print(f"{code} top-1 {acc:.4f}")
        if args.out_json:
            try:
                key = merge_result(args.out_json, code, acc, args.name, args.replace)
            except (ValueError, OSError) as exc:  # e.g. another run wrote this arch meanwhile
                parser.exit(2, f"{prog}: error: {exc} (the trained checkpoint is in {trainer.save_dir})\n")
            print(f"wrote {key} to {args.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
