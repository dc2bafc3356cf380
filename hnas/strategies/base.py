"""What every training strategy shares: the step context, its options, the base class.

A strategy is a ``paddle.nn.Layer``.  It decides, for one batch, which subnets run and with
which loss, and calls ``ctx.backward`` on each loss; gradients accumulate and the trainer
then reduces them over processes once and takes one optimizer step.  Whatever a strategy owns
as sublayers, parameters or buffers (a projection head, a momentum encoder, a queue) is trained
by the same optimizer when trainable, wrapped with the supernet for ``paddle.DataParallel``,
and saved in every checkpoint and restored on resume; a frozen external teacher is not (it is
reloaded from ``--pretrained``).

Every random choice comes from ``ctx.rng(k)``, a generator seeded by (seed, epoch, step, k),
so all ranks of a distributed run train the same subnets.  Each strategy reads its own config
section, ``Strategy: {name: ..., <its options>}``, declared as a dataclass ``Options``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn as nn

from ..registry import STRATEGIES
from ..sampling import Sampler, build_sampler, make_rng
from ..search_space import Arch, SearchSpace


class SubnetOutput(NamedTuple):
    """One forward pass of the active subnet.

    Attributes:
        logits: ``[N, num_classes]`` float32.
        features: ``[N, C]`` pooled features that enter the classifier (``C`` = the subnet's
            last-stage width), or None for a network without ``forward_features``.
    """

    logits: paddle.Tensor
    features: paddle.Tensor | None


class TrainingModule(nn.Layer):
    """The model and the strategy as one layer: what the optimizer trains, what
    ``paddle.DataParallel`` wraps, and what a forward pass runs (``images -> SubnetOutput``)."""

    def __init__(self, model: nn.Layer, strategy: nn.Layer | None = None):
        super().__init__()
        self.model = model
        if strategy is not None:
            self.strategy = strategy

    def forward(self, images: paddle.Tensor) -> SubnetOutput:
        if hasattr(self.model, "forward_features"):
            features = self.model.forward_features(images)
            return SubnetOutput(self.model.classify(features), features)
        return SubnetOutput(self.model(images), None)


@dataclass
class StepContext:
    """Everything a ``train_step`` needs besides the batch.

    Attributes:
        supernet: the unwrapped model; ``set_active`` is called on it.
        seed, epoch, step: key the subnet sampling (``step`` counts batches within the epoch).
        network: what forward passes go through: the trainer's :class:`TrainingModule`,
            wrapped in ``paddle.DataParallel`` in a multi-process run (default: a plain
            ``TrainingModule(supernet)``, for single-process use and tests).
        amp: run forward passes under ``paddle.amp.auto_cast`` (GPU only).
        scaler: a ``paddle.amp.GradScaler`` when ``amp``; ``backward`` scales through it.
        rank, world_size: this process and the number of processes.
    """

    supernet: nn.Layer
    seed: int
    epoch: int
    step: int
    network: nn.Layer | None = None
    amp: bool = False
    scaler: Any = None
    rank: int = 0
    world_size: int = 1

    def __post_init__(self):
        if self.network is None:
            self.network = TrainingModule(self.supernet)

    def rng(self, k: int) -> np.random.Generator:
        """The generator of the ``k``-th random draw of this step (same on every rank)."""
        return make_rng(self.seed, self.epoch, self.step, k)

    def forward(self, images: paddle.Tensor, arch: Arch | None = None) -> SubnetOutput:
        """Logits and pooled features of ``arch`` (default: the active subnet), float32."""
        if arch is not None:
            self.supernet.set_active(arch)
        with paddle.amp.auto_cast(enable=self.amp):
            out = self.network(images)
        if self.amp:
            out = SubnetOutput(*(t.astype("float32") if t is not None else None for t in out))
        return out

    def backward(self, loss: paddle.Tensor) -> None:
        """Accumulate the gradients of ``loss`` (loss-scaled under AMP)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def all_gather(self, tensor: paddle.Tensor) -> paddle.Tensor:
        """``tensor`` of every rank concatenated along axis 0 in rank order (no gradient)."""
        if self.world_size == 1:
            return tensor.detach()
        parts: list = []
        dist.all_gather(parts, tensor.detach())
        return paddle.concat(parts, axis=0)


class Strategy(nn.Layer):
    """Base class: one ``train_step`` per strategy, registered by name in ``STRATEGIES``.

    Args:
        space: the search space of the supernet.
        cfg: the training config (reads ``dyna_batch_size``, ``label_smoothing``).
        options: this strategy's :class:`Options` (its ``Strategy`` config section).
        teacher: a frozen network for strategies that distil from one (``needs_teacher``).
        sampler: draws archs (default: the one ``options.sampler`` names).

    Hooks the trainer calls: :meth:`on_train_begin`, :meth:`on_epoch_begin`,
    :meth:`after_optimizer_step`; and :meth:`train_dataset` to change what a batch holds.
    """

    needs_teacher = False
    uses_labels = True  # False: a label-free objective (e.g. contrastive); tests check its own loss

    @dataclass
    class Options:
        """``sampler``: a sampler name or ``{name: ..., <its arguments>}`` (hnas.sampling)."""

        sampler: Any = "uniform"

    def __init__(self, space: SearchSpace, cfg, options: "Strategy.Options | None" = None,
                 teacher: nn.Layer | None = None, sampler: Sampler | None = None):
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise ValueError(f"strategy {self.name()!r} distils from a frozen teacher network: pass "
                             f"--pretrained PATH (a full ResNet48 .pdparams), or choose a strategy "
                             f"without a teacher such as 'spos' or 'sandwich'")
        self.space = space
        self.cfg = cfg
        self.options = options if options is not None else self.Options()
        self.sampler = sampler if sampler is not None else build_sampler(space, self.options.sampler)
        # Kept off the layer tree: frozen input, neither trained, synced nor checkpointed.
        object.__setattr__(self, "teacher", teacher)

    @classmethod
    def name(cls) -> str:
        """The name this class is registered under in ``STRATEGIES``."""
        return next((n for n in STRATEGIES.names() if STRATEGIES.get(n) is cls), cls.__name__.lower())

    def sample(self, ctx: StepContext, k: int) -> Arch:
        """The ``k``-th random arch of this step."""
        return self.sampler.sample(ctx.rng(k))

    def largest(self) -> Arch:
        """The largest subnet this strategy may train (its sampler's constraints apply)."""
        return self.sampler.choices.largest()

    def smallest(self) -> Arch:
        return self.sampler.choices.smallest()

    def eval_archs(self) -> dict[str, Arch | None]:
        """Subnets whose validation top-1 the trainer reports (None: the network as it is)."""
        return {"largest": self.largest(), "smallest": self.smallest()}

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        """Run the forward and backward passes of one batch; return named loss values
        (``loss`` is the total the trainer checks for NaN/inf)."""
        raise NotImplementedError

    def train_dataset(self, dataset):
        """The dataset the trainer draws training batches from (default: ``dataset`` as it is).

        A strategy that needs other samples (e.g. two augmented views per image for
        contrastive learning) returns a wrapper; ``train_step`` then gets its batches.
        """
        return dataset

    def on_train_begin(self, trainer) -> None:
        """Before the first step of a run (also of a resumed one, after its state is loaded)."""

    def on_epoch_begin(self, epoch: int) -> None:
        """Before the first step of each epoch."""

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """After the optimizer step of each batch (e.g. a momentum encoder's EMA update)."""


def build_strategy(spec: str | dict, space: SearchSpace, cfg, teacher: nn.Layer | None = None,
                   sampler_defaults: dict | None = None) -> Strategy:
    """The strategy ``spec`` describes: a name, or its ``Strategy`` config section
    (``{name: ..., <options>}``).  Unknown or mistyped options fail naming the key.

    ``sampler_defaults`` (e.g. a phase's ``depths``/``widths``) narrow the sampler unless the
    section's ``sampler`` sets them.
    """
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if "name" not in spec:
        raise ValueError(f"the Strategy section needs a name; known: {', '.join(STRATEGIES.names())}")
    cls = STRATEGIES.get(spec.pop("name"))
    options = build_options(cls.Options, spec, f"Strategy ({cls.name()})")
    sampler = build_sampler(space, options.sampler, **(sampler_defaults or {}))
    return cls(space, cfg, options, teacher=teacher, sampler=sampler)


def build_options(options_cls, values: dict, section: str):
    """An ``options_cls`` dataclass from a config mapping, each value checked against the
    field's type (an int is accepted for a float field); unknown keys list the known ones."""
    hints = typing.get_type_hints(options_cls)
    fields = [f.name for f in dataclasses.fields(options_cls)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {section} keys {unknown}; known: {sorted(fields)}")
    checked = {key: _check_type(value, hints[key], f"{section}.{key}") for key, value in values.items()}
    return options_cls(**checked)


def _check_type(value, hint, where: str):
    if hint is Any:
        return value
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for kind in options:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (bool, str) and isinstance(value, kind):
            return value
        if typing.get_origin(kind) in (list, tuple) and isinstance(value, (list, tuple)):
            return list(value)
    names = " or ".join("null" if k is type(None) else getattr(k, "__name__", str(k)) for k in options)
    raise ValueError(f"{where} must be {names}, got {value!r}")


def loss_values(**losses: paddle.Tensor) -> dict[str, float]:
    """Named loss tensors as Python floats (for logs)."""
    return {name: float(value.item()) if isinstance(value, paddle.Tensor) else float(value)
            for name, value in losses.items()}
