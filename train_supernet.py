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
from hnas.config import load_config, save_config, section
from hnas.data import UnreadableImageError, check_batch_size, check_class_folders, error_line, exit_on_loader_thread_error
from hnas.models import ResNetSuperNet
from hnas.models.pretrained import build_teacher, load_resnet48_pretrained
from hnas.search_space import ArchCodeError, SearchSpace
from hnas.registry import SAMPLERS
from hnas.strategies import STRATEGIES, build_options, build_strategy
from hnas.train_config import (TRAIN_FLAGS, DataConfig, TrainConfig, add_train_flags, build_datasets,
                               parse_bool, resolve_config)
from hnas.phases import PLAN_FILE, parse_phases, plan_table, run_phases, write_plan
from hnas.trainer import Trainer, TrainingDiverged

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
                     help="continue from a run folder or checkpoint (weights, optimizer, epoch, RNG), "
                          "or a recipe's save_dir (its running phase)")
    run.add_argument("--dry_run", action="store_true",
                     help="check the config (a recipe's every phase) and print the phase plan; train nothing")
    return parser


def setup(args, cfg: dict):
    """Everything that can fail on bad input, done before any training step.

    Returns the resolved config, a ready :class:`Trainer`, the (train, val, calibration)
    datasets and the data loader worker count.
    """
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


def setup_recipe(args, cfg: dict):
    """Check a ``Phases`` recipe before anything trains; returns its phases, save_dir, space and
    its shared Train and Data configs."""
    if args.strategy is not None or cfg.get("Strategy"):
        raise ValueError("a recipe names a strategy in each phase: drop --strategy and the Strategy section")
    space = SearchSpace.from_config(section(cfg, "SearchSpace"))
    train_section = section(cfg, "Train")
    train_cfg = TrainConfig.from_config(train_section)
    data_cfg = DataConfig.from_config(section(cfg, "Data"))
    save_dir = train_cfg.save_dir
    if args.resume is not None:
        if args.save_dir is not None and os.path.abspath(args.save_dir) != os.path.abspath(args.resume):
            raise ValueError(f"--resume {args.resume!r} and --save_dir {args.save_dir!r} differ: a recipe "
                             f"resumes in its own save_dir")
        save_dir = args.resume
        saved = os.path.join(save_dir, "config.yaml")
        if not os.path.isfile(os.path.join(save_dir, PLAN_FILE)) or not os.path.isfile(saved):
            raise FileNotFoundError(f"--resume {save_dir!r} is not a recipe run (no {PLAN_FILE} and config.yaml)")
        if load_config(saved).get("Phases") != cfg["Phases"]:
            raise ValueError(f"the recipe's Phases differ from the ones {save_dir!r} was started with "
                             f"({saved}); resume with that config, or start a new --save_dir")
    elif os.path.isfile(os.path.join(save_dir, PLAN_FILE)):
        raise FileExistsError(f"{save_dir!r} already holds a recipe run; pass --resume {save_dir} to continue "
                              f"it, or choose another --save_dir")
    return parse_phases(cfg["Phases"], space, save_dir, train_section), save_dir, space, train_cfg, data_cfg


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{parser.prog} run"
    try:
        cfg = resolve_config(args, SUPERNET_FLAGS, sections=KNOWN_SECTIONS)
        if "Phases" in cfg:
            return run_recipe(args, cfg, prog)
        if args.dry_run:
            setup_dry_run(args, cfg)
            return 0
        cfg, trainer, (train_set, val_set, calib_set), num_workers = setup(args, cfg)
        check_class_folders(cfg["Data"]["image_dir"], SearchSpace.from_config(section(cfg, "SearchSpace")).num_classes)
        check_batch_size(len(train_set), trainer.cfg.batch_size, trainer.world_size, getattr(train_set, "root", "the training set"))
        run_lock = lock_run_dir(trainer.save_dir, args.resume) if trainer.is_main and trainer.save_dir else None  # noqa: F841
    except (ValueError, KeyError, OSError, ArchCodeError, LockedError) as exc:
        parser.exit(2, f"{prog}: error: {exc.args[0] if exc.args else exc}\n")
    if trainer.is_main:
        save_config(cfg, os.path.join(trainer.save_dir, "config.yaml"))
    train_guarded(prog, lambda: trainer.fit(train_set, val_set, calib_set, num_workers=num_workers))
    return 0


def setup_dry_run(args, cfg: dict) -> None:
    """``--dry_run`` of a single-phase run: check the sections and print its one-row plan."""
    space = SearchSpace.from_config(section(cfg, "SearchSpace"))
    train = dataclasses.asdict(TrainConfig.from_config(section(cfg, "Train")))
    strategy = {"name": DEFAULT_STRATEGY, **section(cfg, "Strategy")}
    entry = {"name": "run", "strategy": strategy, "epochs": train["max_epoch"]}
    if STRATEGIES.get(strategy["name"]).needs_teacher:
        if not train["pretrained"]:
            raise ValueError(f"strategy {strategy['name']!r} distils from the pretrained full network: "
                             f"pass --pretrained PATH")
        entry["teacher_from"] = train["pretrained"]
    print(plan_table(parse_phases([entry], space, train["save_dir"], train), train))


def run_recipe(args, cfg: dict, prog: str) -> int:
    """Check, then (unless ``--dry_run``) train every phase of a recipe."""
    try:
        phases, save_dir, space, train_cfg, data_cfg = setup_recipe(args, cfg)
        train_section = section(cfg, "Train")
        if args.dry_run:
            print(plan_table(phases, train_section))
            return 0
        datasets = build_datasets(data_cfg, max(space.image_sizes), train_cfg.seed)
        check_class_folders(data_cfg.image_dir, space.num_classes)
        is_main = int(os.environ.get("PADDLE_TRAINER_ID", "0")) == 0
        run_lock = lock_run_dir(save_dir, None) if is_main else None  # noqa: F841
    except (ValueError, KeyError, OSError, ArchCodeError, LockedError) as exc:
        parser_exit(prog, exc)
    if is_main:
        save_config(cfg, os.path.join(save_dir, "config.yaml"))
        write_plan(save_dir, phases)
        print(plan_table(phases, train_section))
    train_guarded(prog, lambda: run_phases(cfg, phases, space, datasets, data_cfg.num_workers))
    return 0


def train_guarded(prog: str, train) -> None:
    """Run ``train``; a dataset error or a diverged run ends with one line, not a traceback."""
    with exit_on_loader_thread_error(prog):  # a dataset error must not hang the loader
        try:
            train()
        except UnreadableImageError as exc:
            sys.stderr.write(f"{prog}: error: {error_line(exc)}\n")
            sys.exit(2)
        except TrainingDiverged as exc:
            sys.stderr.write(f"{prog}: error: {exc}\n")
            sys.exit(1)


def parser_exit(prog: str, exc: Exception) -> None:
    sys.stderr.write(f"{prog}: error: {exc.args[0] if exc.args else exc}\n")
    sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
