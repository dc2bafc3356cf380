"""Train a ResNet48 supernet (CVPR 2022 NAS Track 1) with a chosen strategy.

    python train_supernet.py run --config configs/resnet48_imagenet.yaml \
        --image_dir data/ILSVRC2012 --save_dir checkpoints/res48 --max_epoch 70 \
        --batch_size 256 --lr 0.001 --warmup 5 --dyna_batch_size 2 \
        --strategy baseline --pretrained checkpoints/resnet48.pdparams

Flags keep the official baseline's names and meanings: ``--lr`` is per 256 images (peak =
lr x batch_size x processes / 256), ``--warmup`` is in epochs, ``--batch_size`` is per process,
``--dyna_batch_size`` is the number of subnets per optimizer step.  Values come from the
config's ``Train`` and ``Data`` sections, then from the flags given, then from ``-o
Section.key=value``.  One process trains on CPU or one GPU; ``train_supernet.sh`` starts one
process per GPU through ``paddle.distributed.launch`` (``--nproc_per_node N`` on CPU).
``--resume DIR`` continues a stopped run exactly where its last checkpoint left it.
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
from hnas.models import ResNetSuperNet
from hnas.models.pretrained import build_teacher, load_resnet48_pretrained
from hnas.search_space import ArchCodeError, SearchSpace
from hnas.registry import SAMPLERS
from hnas.strategies import STRATEGIES, build_options, build_strategy
from hnas.train_config import (TRAIN_FLAGS, DataConfig, TrainConfig, add_train_flags, build_datasets,
                               parse_bool, resolve_config)
from hnas.trainer import Trainer

DEFAULT_STRATEGY = "baseline"
SUPERNET_FLAGS = {
    **TRAIN_FLAGS,
    "strategy": ("Strategy", "name", str, f"training strategy: {', '.join(STRATEGIES.names())}"),
    "dyna_batch_size": ("Train", "dyna_batch_size", int, "subnets whose gradients accumulate per step"),
    "pretrained": ("Train", "pretrained", str, "full ResNet48 .pdparams: supernet init and teacher"),
    "reorder": ("Train", "reorder", parse_bool, "sort mid channels by importance after --pretrained"),
    "backbone": ("Train", "backbone", str, "supernet backbone (resnet48)"),
    "sampler": ("Strategy", "sampler", str, f"subnet sampler: {', '.join(SAMPLERS.names())} "
                                              f"(with arguments: -o 'Strategy.sampler={{name: pair, min_distance: 20}}')"),
}


# The config sections this command reads; -o of any other section is refused.
KNOWN_SECTIONS = ("SearchSpace", "Train", "Data", "Strategy", "Phases")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train a supernet",
                              epilog="Flags left out take their value from the config file.")
    add_train_flags(run)
    for name, (_, _, kind, help_text) in SUPERNET_FLAGS.items():
        if name not in TRAIN_FLAGS:
            run.add_argument(f"--{name}", type=kind, default=None, help=help_text)
    run.add_argument("--resume", default=None,
                     help="continue from a run folder or checkpoint (weights, optimizer, epoch, RNG)")
    return parser


def setup(args):
    """Everything that can fail on bad input, done before any training step.

    Returns the resolved config, a ready :class:`Trainer`, the (train, val, calibration)
    datasets and the data loader worker count.
    """
    cfg = resolve_config(args, SUPERNET_FLAGS, sections=KNOWN_SECTIONS)
    space = SearchSpace.from_config(section(cfg, "SearchSpace"))
    train_cfg = TrainConfig.from_config(section(cfg, "Train"))
    data_cfg = DataConfig.from_config(section(cfg, "Data"))
    strategy_section = {"name": DEFAULT_STRATEGY, **section(cfg, "Strategy")}
    strategy_cls = STRATEGIES.get(strategy_section["name"])
    options = build_options(strategy_cls.Options, {k: v for k, v in strategy_section.items() if k != "name"},
                            f"Strategy ({strategy_section['name']})")
    cfg.update(Train=dataclasses.asdict(train_cfg), Data=dataclasses.asdict(data_cfg),
               Strategy={"name": strategy_section["name"], **dataclasses.asdict(options)})  # defaults spelt out
    check_run_dir(train_cfg.save_dir, args.resume)
    if strategy_cls.needs_teacher and not train_cfg.pretrained:
        raise ValueError(f"strategy {strategy_section['name']!r} distils from the pretrained full network: "
                         f"pass --pretrained PATH, or use --strategy sandwich / spos")
    if train_cfg.pretrained and not os.path.isfile(train_cfg.pretrained):
        raise FileNotFoundError(f"--pretrained {train_cfg.pretrained!r} does not exist")
    datasets = build_datasets(data_cfg, max(space.image_sizes), train_cfg.seed)  # train, val, calibration
    paddle.seed(train_cfg.seed)
    supernet = ResNetSuperNet(space)
    teacher = None
    if train_cfg.pretrained:
        load_resnet48_pretrained(supernet, train_cfg.pretrained, reorder=train_cfg.reorder)
        if strategy_cls.needs_teacher:
            teacher = build_teacher(space, train_cfg.pretrained)
    strategy = build_strategy(cfg["Strategy"], space, train_cfg, teacher=teacher)
    trainer = Trainer(supernet, strategy, train_cfg, config=cfg)
    if args.resume:
        trainer.load(args.resume)
    return cfg, trainer, datasets, data_cfg.num_workers


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg, trainer, (train_set, val_set, calib_set), num_workers = setup(args)
        check_class_folders(cfg["Data"]["image_dir"], SearchSpace.from_config(section(cfg, "SearchSpace")).num_classes)
        check_batch_size(len(train_set), trainer.cfg.batch_size, trainer.world_size, getattr(train_set, "root", "the training set"))
        run_lock = lock_run_dir(trainer.save_dir, args.resume) if trainer.is_main and trainer.save_dir else None  # noqa: F841
    except (ValueError, KeyError, OSError, ArchCodeError, LockedError) as exc:
        parser.exit(2, f"{parser.prog} run: error: {exc.args[0] if exc.args else exc}\n")
    if trainer.is_main:
        save_config(cfg, os.path.join(trainer.save_dir, "config.yaml"))
    with exit_on_loader_thread_error(f"{parser.prog} run"):  # a dataset error must not hang the loader
        try:
            trainer.fit(train_set, val_set, calib_set, num_workers=num_workers)
        except UnreadableImageError as exc:
            parser.exit(2, f"{parser.prog} run: error: {error_line(exc)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
