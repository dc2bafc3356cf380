"""Strict fairness (FairNAS, Chu et al., ICCV 2021): every choice gets the same number of updates."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import paddle

from .. import losses
from ..registry import STRATEGIES
from ..sampling import FairSampler
from .base import StepContext, Strategy, loss_values



@STRATEGIES.register("fairnas")
class FairNAS(Strategy):
    """Per step, one group of ``m`` subnets from the ``fair`` sampler: one depth per stage for
    the whole group, and every searchable width position takes each of its allowed codes
    exactly once across the group (``m = 7`` on the whole space; under a restricted sampler
    ``m`` is the largest choice count and smaller positions cycle as evenly as possible).
    Each subnet learns cross-entropy to the labels (``Train.label_smoothing``); the ``m``
    gradients accumulate into the trainer's one optimizer step.  ``dyna_batch_size`` is not
    used: the group size is the fairness unit.

    Momentum and weight decay move weights that no subnet of a step used (the trainer gives
    every parameter a gradient, zero for unused ones, so momentum SGD applies the old velocity
    and decays them).  In this supernet the width choices are nested slices and the group
    covers the widest code at every position, so the only unused weights of a whole-space step
    are the blocks past the group's shared depths.  ``freeze_unused`` (default on) leaves those
    blocks' parameters and their momentum untouched by the step: they are marked
    ``stop_gradient`` between the step's backward passes and the optimizer step, which Paddle's
    optimizers skip, and released in :meth:`after_optimizer_step` (not on a run's first step,
    which creates every momentum buffer).  The set is decided by the depths (the same on every
    rank), not by gradient values.  Channels that no allowed code of
    a width-restricted sampler reaches are never frozen; they decay with ``weight_decay``.

    Options:
        sampler: a ``fair`` sampler, optionally narrowed (``{name: fair, widths: [...]}``).
        freeze_unused: skip the optimizer update (momentum and weight decay) of the blocks
            the step's depths leave out.
    """

    @dataclass
    class Options(Strategy.Options):
        """``sampler``: ``fair`` (its ``depths``/``widths`` may narrow it); ``freeze_unused``:
        no momentum or weight-decay update for blocks past the step's shared depths."""

        sampler: Any = "fair"
        freeze_unused: bool = True

    def __init__(self, space, cfg, options=None, teacher=None, sampler=None):
        super().__init__(space, cfg, options, teacher=teacher, sampler=sampler)
        if not isinstance(self.sampler, FairSampler):
            raise ValueError(f"strategy 'fairnas' trains fair groups of subnets and needs the 'fair' sampler, "
                             f"got {_sampler_name(self.options.sampler)!r}: set Strategy.sampler to fair "
                             f"(-o Strategy.sampler=fair, or {{name: fair, depths: ..., widths: ...}}), or "
                             f"remove 'sampler' from the config's Strategy section to use the default")
        self._frozen: list = []
        self._optimizer_ready = False  # every parameter has its momentum buffer (see _freeze)

    @property
    def group_size(self) -> int:
        """Subnets per step (``m``)."""
        return self.sampler.group_size

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        self._release()
        images, labels = batch
        group = self.sampler.draw(ctx.rng(0), None)
        total = 0.0
        for arch in group:
            ce = losses.cross_entropy(ctx.forward(images, arch).logits, labels, self.cfg.label_smoothing)
            ctx.backward(ce)
            total = total + ce.detach()
        if self.options.freeze_unused and self._optimizer_ready:
            self._freeze(self.unused_parameters(ctx.supernet))
        return loss_values(loss=total, ce=total / len(group))

    def on_train_begin(self, trainer) -> None:
        self._optimizer_ready = trainer.global_step > 0

    def after_optimizer_step(self, ctx: StepContext) -> None:
        self._release()
        self._optimizer_ready = True

    @staticmethod
    def unused_parameters(supernet) -> list:
        """Trainable parameters of the blocks the active subnet does not run (every subnet of
        a fair group has the same depths); [] for a network without ``active_blocks``."""
        if not hasattr(supernet, "active_blocks"):
            return []
        used = set(supernet.active_blocks())
        return [p for i, block in enumerate(supernet.blocks) if i not in used
                for p in block.parameters() if not p.stop_gradient]

    def _freeze(self, params: list) -> None:
        """Hide ``params`` from this step's optimizer update.  Never on the first step of a
        run: Paddle creates momentum buffers lazily, at a parameter's first update, and a
        checkpoint must hold every parameter's buffer for a resume to load it."""
        missing = [p for p in params if p.grad is None]
        if missing:  # give them the zero gradient the trainer would, while still trainable
            paddle.add_n([(p * 0.0).sum() for p in missing]).backward()
        for p in params:
            p.stop_gradient = True
        self._frozen = params

    def _release(self) -> None:
        for p in self._frozen:
            p.stop_gradient = False
        self._frozen = []


def _sampler_name(spec) -> str:
    """The sampler name a ``Strategy.sampler`` value gives."""
    return spec if isinstance(spec, str) else dict(spec or {}).get("name", "uniform")
