"""What every training strategy shares: the step context, arch sampling, the base class.

A strategy decides, for one batch, which subnets run and with which loss, and calls
``ctx.backward`` on each loss; gradients of the subnets accumulate and the trainer then takes
one optimizer step.  Every random choice comes from ``ctx.rng(k)``, a generator seeded by
(seed, epoch, step, k), so all ranks of a distributed run train the same subnets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import paddle
import paddle.nn as nn

from ..io import read_arch_json
from ..registry import STRATEGIES
from ..sampling import DistributionSampler, UniformSampler, make_rng
from ..search_space import Arch, SearchSpace

SAMPLERS = ("uniform", "distribution")


@dataclass
class StepContext:
    """Everything a ``train_step`` needs besides the batch.

    Attributes:
        supernet: the unwrapped model; ``set_active`` is called on it.
        network: what forward passes go through (``paddle.DataParallel(supernet)`` in a
            multi-process run, else ``supernet`` itself).
        seed, epoch, step: key the subnet sampling (``step`` counts batches within the epoch).
        amp: run forward passes under ``paddle.amp.auto_cast`` (GPU only).
        scaler: a ``paddle.amp.GradScaler`` when ``amp``; ``backward`` scales through it.
    """

    supernet: nn.Layer
    network: nn.Layer
    seed: int
    epoch: int
    step: int
    amp: bool = False
    scaler: Any = None

    def rng(self, k: int) -> np.random.Generator:
        """The generator of the ``k``-th random draw of this step (same on every rank)."""
        return make_rng(self.seed, self.epoch, self.step, k)

    def forward(self, images: paddle.Tensor, arch: Arch | None = None) -> paddle.Tensor:
        """Logits ``[N, num_classes]`` (float32) of ``arch`` (default: the active subnet)."""
        if arch is not None:
            self.supernet.set_active(arch)
        with paddle.amp.auto_cast(enable=self.amp):
            logits = self.network(images)
        return logits.astype("float32") if self.amp else logits

    def backward(self, loss: paddle.Tensor) -> None:
        """Accumulate the gradients of ``loss`` (loss-scaled under AMP)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()


class Strategy:
    """Base class: one ``train_step`` per strategy, registered by name in ``STRATEGIES``.

    Args:
        space: the search space of the supernet.
        cfg: the training config (reads ``dyna_batch_size``, ``label_smoothing``,
            ``distill_temperature``).
        sampler: draws archs from a generator (``UniformSampler`` or ``DistributionSampler``).
        teacher: a frozen network for strategies that distil from one (``needs_teacher``).
    """

    needs_teacher = False

    def __init__(self, space: SearchSpace, cfg, sampler=None, teacher: nn.Layer | None = None):
        if self.needs_teacher and teacher is None:
            raise ValueError(f"strategy {self.name()!r} distils from a frozen teacher network: pass "
                             f"--pretrained PATH (a full ResNet48 .pdparams), or choose a strategy "
                             f"without a teacher such as 'spos' or 'sandwich'")
        self.space = space
        self.cfg = cfg
        self.sampler = sampler if sampler is not None else UniformSampler(space)
        self.teacher = teacher

    @classmethod
    def name(cls) -> str:
        """The name this class is registered under in ``STRATEGIES``."""
        return next((n for n in STRATEGIES.names() if STRATEGIES.get(n) is cls), cls.__name__.lower())

    def sample(self, ctx: StepContext, k: int) -> Arch:
        """The ``k``-th random arch of this step."""
        return self.sampler.sample(ctx.rng(k))

    def eval_archs(self) -> dict[str, Arch | None]:
        """Subnets whose validation top-1 the trainer reports (None: the network as it is)."""
        return {"largest": self.space.largest(), "smallest": self.space.smallest()}

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        """Run the forward and backward passes of one batch; return named loss values."""
        raise NotImplementedError


def build_sampler(space: SearchSpace, kind: str = "uniform", archs_path: str | None = None):
    """``uniform`` or ``distribution`` (the code distribution of the arch list at ``archs_path``,
    e.g. the 45,000 Track-1 test archs)."""
    if kind == "uniform":
        return UniformSampler(space)
    if kind == "distribution":
        if not archs_path:
            raise ValueError("sampler 'distribution' needs Train.sampler_archs (an arch JSON such as "
                             "checkpoints/CVPR_2022_NAS_Track1_test.json)")
        codes = [entry["arch"] for entry in read_arch_json(archs_path).values()]
        return DistributionSampler.from_codes(space, codes)
    raise ValueError(f"unknown sampler {kind!r}; known: {', '.join(SAMPLERS)}")


def loss_values(**losses: paddle.Tensor) -> dict[str, float]:
    """Named loss tensors as Python floats (for logs)."""
    return {name: float(value.item()) for name, value in losses.items()}
