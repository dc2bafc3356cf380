"""Training one network as it is: a stand-alone subnet from scratch (the baseline's pretrain)."""
from __future__ import annotations

from .. import losses
from ..registry import STRATEGIES
from .base import StepContext, Strategy, loss_values


@STRATEGIES.register("standalone")
class Standalone(Strategy):
    """CE on the labels through the network as given, no arch switching.

    With a :class:`hnas.models.ResNet` this is plain supervised training (what
    ``train_standalone.py`` runs to build ground truth); with a supernet it trains whichever
    subnet is active.  Validation reports the network itself.
    """

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        images, labels = batch
        ce = losses.cross_entropy(ctx.forward(images).logits, labels, self.cfg.label_smoothing)
        ctx.backward(ce)
        return loss_values(loss=ce)

    def eval_archs(self):
        return {"net": None}
