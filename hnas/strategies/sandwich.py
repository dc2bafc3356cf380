"""The sandwich rule with in-place distillation (BigNAS / AttentiveNAS)."""
from __future__ import annotations

from .. import losses
from ..registry import STRATEGIES
from .base import StepContext, Strategy, loss_values


@STRATEGIES.register("sandwich")
class Sandwich(Strategy):
    """Per step: the largest subnet learns the labels; the smallest and ``n - 2`` random
    subnets learn the largest's detached predictions on the same batch, with
    ``n = max(dyna_batch_size, 2)``.

    Training both extremes every step bounds the whole space from above and below, and the
    in-place teacher needs no pretrained network.
    """

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        images, labels = batch
        teacher_logits = ctx.forward(images, self.space.largest())
        ce = losses.cross_entropy(teacher_logits, labels, self.cfg.label_smoothing)
        ctx.backward(ce)
        teacher_logits = teacher_logits.detach()
        students = [self.space.smallest()]
        students += [self.sample(ctx, k) for k in range(max(self.cfg.dyna_batch_size, 2) - 2)]
        total_kd = 0.0
        for arch in students:
            kd = losses.inplace_distillation(ctx.forward(images, arch), teacher_logits,
                                             self.cfg.distill_temperature)
            ctx.backward(kd)
            total_kd = total_kd + kd.detach()
        return loss_values(loss=ce + total_kd, ce=ce, kd=total_kd)
