"""The official Track-1 baseline: random subnets distilled from a frozen pretrained ResNet48."""
from __future__ import annotations

from dataclasses import dataclass

import paddle

from .. import losses
from ..registry import STRATEGIES
from .base import StepContext, Strategy, loss_values


@STRATEGIES.register("baseline")
class Baseline(Strategy):
    """``dyna_batch_size`` random subnets per step, each with CE to the labels plus soft CE
    to the teacher's predictions (the baseline's ``CrossEntropyLoss`` + distillation pair).

    The teacher (the full network from ``--pretrained``, original channel order, eval mode)
    runs once per batch; its logits serve every subnet of the step.  Losses are summed over
    subnets, not averaged, as in the baseline.
    """

    needs_teacher = True

    @dataclass
    class Options(Strategy.Options):
        """``distill_temperature``: softmax temperature of the distillation term."""

        distill_temperature: float = 1.0

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        images, labels = batch
        teacher_logits = frozen_teacher_logits(self.teacher, images, ctx)
        archs = self.sampler.draw(ctx.rng(0), self.cfg.dyna_batch_size)
        total_ce, total_kd = learn_labels_and_teacher(ctx, images, labels, archs, teacher_logits,
                                                      self.cfg.label_smoothing, self.options.distill_temperature)
        return loss_values(loss=total_ce + total_kd, ce=total_ce, kd=total_kd)


def frozen_teacher_logits(teacher, images, ctx: StepContext) -> paddle.Tensor:
    """Logits ``[N, num_classes]`` (float32) of a frozen external teacher, without gradient."""
    with paddle.no_grad(), paddle.amp.auto_cast(enable=ctx.amp):
        return teacher(images).astype("float32")


def learn_labels_and_teacher(ctx: StepContext, images, labels, archs, teacher_logits, label_smoothing: float,
                             temperature: float, total_ce=0.0, total_kd=0.0):
    """For each arch: CE to the labels + soft CE to ``teacher_logits``, one backward pass each.

    Returns the summed ``(ce, kd)`` (detached), added to ``total_ce`` / ``total_kd``.
    """
    for arch in archs:
        logits = ctx.forward(images, arch).logits
        ce = losses.cross_entropy(logits, labels, label_smoothing)
        kd = losses.soft_cross_entropy(logits, teacher_logits, temperature)
        ctx.backward(ce + kd)
        total_ce, total_kd = total_ce + ce.detach(), total_kd + kd.detach()
    return total_ce, total_kd
