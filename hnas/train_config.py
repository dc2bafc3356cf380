"""The ``Train`` and ``Data`` config sections, the optimizer they describe (and its portable
state), the datasets, and the command-line flags that set them.

Defaults are the official baseline's (``configs/resnet48_imagenet.yaml`` repeats them); unknown
keys fail at once, so a typo in ``-o Train.lrr=0.1`` never trains with a default silently.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass

import paddle

from .config import apply_override, check_keys, load_config
from .data import build_dataset, build_transform


# Keys that strategies now read from their own section (``Strategy: {name: ..., ...}``).
MOVED_TO_STRATEGY = {"strategy": "Strategy.name", "sampler": "Strategy.sampler",
                     "sampler_archs": "Strategy.sampler: {name: distribution, archs_path: FILE}",
                     "distill_temperature": "Strategy.distill_temperature"}


@dataclass
class TrainConfig:
    """Supernet training hyper-parameters (the ``Train`` section).

    ``lr`` is the learning rate per 256 images: with ``scale_lr`` the peak is
    ``lr * batch_size * world_size / 256``, as in the baseline.  ``warmup`` is in epochs
    (linear from 0), then cosine to 0 at ``max_epoch``, both stepped every iteration.
    ``batch_size`` is per process; ``dyna_batch_size`` is the number of subnets whose
    gradients accumulate per optimizer step.
    """

    backbone: str = "resnet48"
    max_epoch: int = 70
    batch_size: int = 256
    lr: float = 0.001
    scale_lr: bool = True
    warmup: float = 5
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-5
    dyna_batch_size: int = 2
    grad_clip: float | None = None
    amp: bool = True
    label_smoothing: float = 0.0
    seed: int = 0
    save_dir: str = "checkpoints/supernet"
    save_freq: int = 1
    log_freq: int = 100
    eval_freq: int = 1
    bn_calib_batches: int = 10
    pretrained: str | None = None
    reorder: bool = True
    decay_bn_bias: bool = True

    @classmethod
    def from_config(cls, section: dict) -> "TrainConfig":
        moved = sorted(set(section) & set(MOVED_TO_STRATEGY))
        if moved:
            raise ValueError("strategy settings have their own section now: "
                             + "; ".join(f"Train.{k} is {MOVED_TO_STRATEGY[k]}" for k in moved))
        check_keys(section, (f.name for f in dataclasses.fields(cls)), "Train")
        cfg = cls(**section)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        positive = ("max_epoch", "batch_size", "dyna_batch_size", "save_freq", "log_freq", "eval_freq")
        for key in positive:
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"Train.{key} must be a positive integer, got {getattr(self, key)!r}")
        if not isinstance(self.bn_calib_batches, int) or self.bn_calib_batches < 0:
            raise ValueError(f"Train.bn_calib_batches must be an integer >= 0, got {self.bn_calib_batches!r}")
        if not self.lr > 0:
            raise ValueError(f"Train.lr must be positive, got {self.lr!r}")
        if self.warmup < 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("Train.warmup and Train.weight_decay must be >= 0 and momentum in [0, 1)")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"Train.grad_clip must be positive or null, got {self.grad_clip!r}")
        if self.backbone != "resnet48":
            raise ValueError(f"backbone {self.backbone!r} is not supported; the supernet is 'resnet48' "
                             f"(its widths come from the config's SearchSpace section)")

    def peak_lr(self, world_size: int = 1) -> float:
        return self.lr * self.batch_size * world_size / 256 if self.scale_lr else self.lr


@dataclass
class DataConfig:
    """Where the images are and which of them to use (the ``Data`` section).

    ``image_dir`` holds ``train/<class>/*`` and ``val/<class>/*``.  ``train_subset`` keeps a
    fixed random subset of N training images, ``per_class`` the first N of every class
    (ImageNet-mini style runs); ``val_*`` do the same for validation.
    """

    image_dir: str | None = None
    num_workers: int = 4
    train_subset: int | None = None
    per_class: int | None = None
    val_subset: int | None = None
    val_per_class: int | None = None
    on_error: str = "raise"

    @classmethod
    def from_config(cls, section: dict) -> "DataConfig":
        check_keys(section, (f.name for f in dataclasses.fields(cls)), "Data")
        return cls(**section)


def build_datasets(data: DataConfig, image_size: int, seed: int = 0):
    """``(train_set, val_set, calib_set)``; the last two are None when ``image_dir`` has no
    ``val`` folder.  ``calib_set`` is the training images with the evaluation transform, for
    BN recalibration before each validation.

    Raises before any training when ``image_dir`` is unset, missing, or has no images.
    """
    if not data.image_dir:
        raise ValueError("no image folder given: pass --image_dir DIR (with DIR/train/<class>/<image>)")
    if not os.path.isdir(data.image_dir):
        raise FileNotFoundError(f"image folder {data.image_dir!r} does not exist")
    train = build_dataset(data.image_dir, "train", image_size, train=True, per_class=data.per_class,
                          limit=data.train_subset, on_error=data.on_error, seed=seed)
    val = calib = None
    if os.path.isdir(os.path.join(data.image_dir, "val")):
        val = build_dataset(data.image_dir, "val", image_size, train=False, per_class=data.val_per_class,
                            limit=data.val_subset, on_error=data.on_error, seed=seed)
        calib = copy.copy(train)  # same files, listed once; evaluation transform
        calib.transform = build_transform(image_size, train=False)
    return train, val, calib


def build_optimizer(parameters, cfg: TrainConfig, steps_per_epoch: int, world_size: int = 1):
    """Momentum SGD with weight decay and optional global-norm clipping, and its schedule:
    linear warmup over ``cfg.warmup`` epochs, then cosine to 0 at ``cfg.max_epoch``.

    With ``cfg.decay_bn_bias`` false, one-dimensional parameters (BN scales and shifts, biases,
    PReLU slopes) get no weight decay, as OFA's ``no_decay_keys: bn#bias``.
    Returns ``(optimizer, lr_scheduler)``; step the scheduler once per iteration.
    """
    peak = cfg.peak_lr(world_size)
    total = cfg.max_epoch * steps_per_epoch
    warmup = min(int(round(cfg.warmup * steps_per_epoch)), total)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(peak, T_max=max(total - warmup, 1))
    if warmup > 0:
        schedule = paddle.optimizer.lr.LinearWarmup(schedule, warmup, 0.0, peak)
    clip = paddle.nn.ClipGradByGlobalNorm(cfg.grad_clip) if cfg.grad_clip else None
    parameters = list(parameters)
    if not cfg.decay_bn_bias and cfg.weight_decay:
        parameters = [{"params": [p for p in parameters if len(p.shape) > 1], "weight_decay": cfg.weight_decay},
                      {"params": [p for p in parameters if len(p.shape) <= 1], "weight_decay": 0.0}]
    optimizer = paddle.optimizer.Momentum(learning_rate=schedule, momentum=cfg.momentum,
                                          parameters=parameters, use_nesterov=cfg.nesterov,
                                          weight_decay=cfg.weight_decay or None, grad_clip=clip)
    return optimizer, schedule



def portable_optimizer_state(optimizer, named_parameters: dict) -> dict:
    """The optimizer's state keyed by structured parameter names (``blocks.3.conv1.weight@velocity``).

    Paddle keys accumulators by generated tensor names (``super_conv2d_7.w_0_velocity_0``),
    which depend on how many layers a process created before; structured names do not.
    ``named_parameters`` maps structured names to the optimizer's parameters.
    """
    by_tensor_name = sorted(((p.name, n) for n, p in named_parameters.items()), key=lambda x: -len(x[0]))
    portable = {}
    for key, value in optimizer.state_dict().items():
        if key in ("LR_Scheduler", "master_weights"):
            portable[key] = value
            continue
        for tensor_name, structured in by_tensor_name:
            if key.startswith(tensor_name + "_"):
                accumulator = re.sub(r"_\d+$", "", key[len(tensor_name) + 1:])
                portable[f"{structured}@{accumulator}"] = value
                break
        else:
            raise ValueError(f"optimizer state {key!r} belongs to no parameter of the model")
    return portable


def load_portable_optimizer_state(optimizer, named_parameters: dict, portable: dict) -> None:
    """Inverse of :func:`portable_optimizer_state` for this process's tensor names."""
    params = named_parameters
    state = {}
    for key, value in portable.items():
        if key in ("LR_Scheduler", "master_weights"):
            state[key] = value
            continue
        structured, accumulator = key.rsplit("@", 1)
        if structured not in params:
            raise ValueError(f"checkpoint optimizer state names parameter {structured!r}, "
                             f"which the model does not have")
        state[f"{params[structured].name}_{accumulator}_0"] = value
    optimizer.set_state_dict(state)


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also yes/no, on/off, 1/0) for argparse."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# Command-line flag -> (config section, key, type, help).  The section "Train" is renamed by
# CLIs that keep their hyper-parameters elsewhere (train_standalone.py uses "Standalone").
TRAIN_FLAGS = {
    "image_dir": ("Data", "image_dir", str, "folder with train/<class>/* and val/<class>/*"),
    "num_workers": ("Data", "num_workers", int, "data loader worker processes"),
    "train_subset": ("Data", "train_subset", int, "train on a fixed random subset of N images"),
    "per_class": ("Data", "per_class", int, "train on the first N images of every class"),
    "on_error": ("Data", "on_error", str, "unreadable image: raise (default) or skip with a warning"),
    "save_dir": ("Train", "save_dir", str, "checkpoints, train.log, VisualDL scalars, config.yaml"),
    "max_epoch": ("Train", "max_epoch", int, "epochs"),
    "batch_size": ("Train", "batch_size", int, "images per process per step"),
    "lr": ("Train", "lr", float, "learning rate per 256 images (peak = lr * batch * processes / 256)"),
    "warmup": ("Train", "warmup", float, "linear warmup epochs before the cosine decay"),
    "momentum": ("Train", "momentum", float, "SGD momentum"),
    "weight_decay": ("Train", "weight_decay", float, "L2 weight decay"),
    "seed": ("Train", "seed", int, "seed of data order, augmentation and subnet sampling"),
    "save_freq": ("Train", "save_freq", int, "save a checkpoint every N epochs"),
    "log_freq": ("Train", "log_freq", int, "log every N steps"),
}


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``-o`` and the flags of :data:`TRAIN_FLAGS`."""
    parser.add_argument("--config", default="configs/resnet48_imagenet.yaml", help="YAML config")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value",
                        help="set any config value (applied last; repeatable)")
    for name, (_, _, kind, help_text) in TRAIN_FLAGS.items():
        kwargs = {"choices": ("raise", "skip")} if name == "on_error" else {}
        parser.add_argument(f"--{name}", type=kind, default=None, help=help_text, **kwargs)


def resolve_config(args, flags: dict, train_section: str = "Train", sections=None) -> dict:
    """The config file, then the flags given on the command line, then ``-o`` overrides.

    ``sections`` are the config sections the calling CLI reads (its ``KNOWN_SECTIONS``): an
    override of any other section, or a section in the file that no hnas CLI reads, is refused
    (a misspelt ``-o Trian.lr=0.1`` would otherwise be ignored).  Values of the ``Train`` (or
    ``train_section``) and ``Data`` sections must have the types of :class:`TrainConfig` and
    :class:`DataConfig` (``lr: abc`` is refused naming the key; ``lr: 1e-3``, which YAML reads as
    a string, is taken as the number it spells).
    """
    cfg = load_config(args.config, sections=sections)
    for name, (section, key, _, _) in flags.items():
        value = getattr(args, name, None)
        if value is not None:
            section = train_section if section == "Train" else section
            if not isinstance(cfg.setdefault(section, {}), dict):
                raise ValueError(f"config section {section!r} must be a mapping")
            cfg[section][key] = value
    for item in args.override:
        apply_override(cfg, item, sections)
    for name, kind in ((train_section, TrainConfig), ("Data", DataConfig)):
        if isinstance(cfg.get(name), dict):
            cfg[name] = checked_types(cfg[name], kind, name)
    if isinstance(cfg.get("SearchSpace"), dict):
        cfg["SearchSpace"] = check_space_section(cfg["SearchSpace"])
    data = cfg.get("Data") if isinstance(cfg.get("Data"), dict) else {}
    for key in ("train_subset", "per_class", "val_subset", "val_per_class"):
        if data.get(key) is not None and data[key] < 1:
            raise ValueError(f"Data.{key} must be a positive integer or null, got {data[key]!r}")
    if data.get("num_workers") is not None and data["num_workers"] < 0:
        raise ValueError(f"Data.num_workers must be >= 0, got {data['num_workers']!r}")
    return cfg


def checked_types(values: dict, kind, name: str) -> dict:
    """``values`` (one config section) with each known key checked against the type of the
    dataclass field ``kind`` gives it (lists stand for tuples); numbers spelt as strings become
    numbers for float fields (YAML reads ``1e-3`` as a string).

    Raises:
        ValueError: ``Section.key must be <type>, got <value>``.
    """
    hints = typing.get_type_hints(kind)
    out = dict(values)
    for key, value in values.items():
        if key not in hints or _matches(value, hints[key]):
            continue  # unknown keys are reported by the section's own check
        if isinstance(value, str) and float in _alternatives(hints[key]):
            try:
                out[key] = float(value)
                continue
            except ValueError:
                pass
        raise ValueError(f"{name}.{key} must be {_describe(hints[key])}, got {value!r}")
    return out


def check_space_section(values: dict) -> dict:
    """The ``SearchSpace`` section with its types checked (see :func:`checked_types`) and every
    count, width and size at least 1 (a zero ``channel_divisor`` would divide by zero)."""
    from .search_space import SearchSpace  # here: search_space imports config, not this module

    out = checked_types(values, SearchSpace, "SearchSpace")
    for key, value in out.items():
        numbers = list(_leaves(value))
        if any(isinstance(v, (int, float)) and not isinstance(v, bool) and not v > 0 for v in numbers):
            raise ValueError(f"SearchSpace.{key} must be positive, got {value!r}")
    return out


def _leaves(value):
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _alternatives(hint) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _matches(value, hint) -> bool:
    """Whether a YAML value fits a field annotation (bool, int, float, str, None, tuples, unions)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, h) for v, h in zip(value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True  # other annotations are checked where the value is used


def _describe(hint, plural: bool = False) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h, plural) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return ("lists" if plural else "a list") + f" of {_describe(args[0], plural=True)}"
        kinds = " or ".join(dict.fromkeys(_describe(h, plural=True) for h in args))
        return f"{'' if plural else 'a '}{len(args)}-item list{'s' if plural else ''} of {kinds}"
    names = {bool: ("true/false", "true/false"), int: ("an integer", "integers"), float: ("a number", "numbers"),
             str: ("a string", "strings"), type(None): ("null", "null")}
    return names.get(hint, (getattr(hint, "__name__", str(hint)),) * 2)[plural]
