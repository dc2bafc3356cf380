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
        with paddle.no_grad(), paddle.amp.auto_cast(enable=ctx.amp):
            teacher_logits = self.teacher(images).astype("float32")
        total_ce = total_kd = 0.0
        for arch in self.sampler.draw(ctx.rng(0), self.cfg.dyna_batch_size):
            logits = ctx.forward(images, arch).logits
            ce = losses.cross_entropy(logits, labels, self.cfg.label_smoothing)
            kd = losses.soft_cross_entropy(logits, teacher_logits, self.options.distill_temperature)
            ctx.backward(ce + kd)
            total_ce, total_kd = total_ce + ce.detach(), total_kd + kd.detach()
        return loss_values(loss=total_ce + total_kd, ce=total_ce, kd=total_kd)
