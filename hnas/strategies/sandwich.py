"""The sandwich rule with in-place distillation (BigNAS / AttentiveNAS)."""
from __future__ import annotations

from dataclasses import dataclass

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

    @dataclass
    class Options(Strategy.Options):
        """``distill_temperature``: softmax temperature of the in-place distillation."""

        distill_temperature: float = 1.0

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        images, labels = batch
        teacher_logits = ctx.forward(images, self.largest()).logits
        ce = losses.cross_entropy(teacher_logits, labels, self.cfg.label_smoothing)
        ctx.backward(ce)
        total_kd = 0.0
        for arch in self.students(ctx):
            kd = self.distill(ctx.forward(images, arch).logits, teacher_logits)
            ctx.backward(kd)
            total_kd = total_kd + kd.detach()
        return loss_values(loss=ce + total_kd, ce=ce, kd=total_kd)

    def students(self, ctx: StepContext) -> list:
        """The smallest subnet and ``n - 2`` random ones."""
        return [self.smallest()] + self.sampler.draw(ctx.rng(0), max(self.cfg.dyna_batch_size, 2) - 2)

    def distill(self, student_logits, teacher_logits):
        """In-place distillation loss of one student (teacher side detached)."""
        return losses.inplace_distillation(student_logits, teacher_logits, self.options.distill_temperature)
