"""Single-path one-shot (Guo et al., 2020): one random subnet per step, plain CE."""
from __future__ import annotations

from .. import losses
from ..registry import STRATEGIES
from .base import StepContext, Strategy, loss_values


@STRATEGIES.register("spos")
class SPOS(Strategy):
    """One subnet per optimizer step from the configured sampler (uniform by default),
    trained on the labels only; ``dyna_batch_size`` is ignored."""

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        images, labels = batch
        logits = ctx.forward(images, self.sample(ctx, 0)).logits
        ce = losses.cross_entropy(logits, labels, self.cfg.label_smoothing)
        ctx.backward(ce)
        return loss_values(loss=ce)
