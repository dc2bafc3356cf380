"""Sandwich rule plus a pairwise rank loss guided by FLOPs (3rd place, RD-NAS)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import paddle

from .. import losses
from ..registry import STRATEGIES
from ..sampling import build_sampler
from .base import StepContext, loss_values
from .sandwich import Sandwich


@STRATEGIES.register("rank_flops")
class RankFlops(Sandwich):
    """Per step: the sandwich rule, then ``num_pairs`` pairs of random subnets, each scored
    by its cross-entropy on the batch; a pair is penalised when the subnet with the larger
    prior (analytic FLOPs, from the search space without building a network) has the larger
    loss: ``relu(ce_large - ce_small.detach() + margin)``, weighted by
    ``min(weight_max, epoch / weight_ramp)`` (0 in the first epoch).

    Both forward passes of a pair run before its one backward pass.  As published, the pairs'
    cross-entropies feed only the rank loss (``pair_ce`` adds them as ordinary losses too), and
    a pair with equal priors is skipped (it says nothing about order).  The 3rd place's code
    sent the gradient to the smaller subnet in one branch; here only the larger-prior subnet is
    pushed, always.
    """

    @dataclass
    class Options(Sandwich.Options):
        """3rd-place defaults: 2 pairs, margin 0, weight min(2, epoch / 10)."""

        num_pairs: int = 2
        margin: float = 0.0
        weight_max: float = 2.0
        weight_ramp: float = 10.0
        pair_ce: bool = False
        pair_sampler: Any = field(default="uniform")

        def __post_init__(self):
            if self.num_pairs < 1 or self.margin < 0 or self.weight_max < 0 or not self.weight_ramp > 0:
                raise ValueError("Strategy (rank): need num_pairs >= 1, margin >= 0, weight_max >= 0 and "
                                 f"weight_ramp > 0, got {self.num_pairs}, {self.margin}, {self.weight_max}, "
                                 f"{self.weight_ramp}")

    def __init__(self, space, cfg, options=None, teacher=None, sampler=None):
        super().__init__(space, cfg, options, teacher=teacher, sampler=sampler)
        self.pair_sampler = build_sampler(space, self.options.pair_sampler)

    def prior(self, arch) -> float:
        """Larger means the subnet should rank higher (here: its FLOPs)."""
        return float(self.space.flops(arch))

    def rank_weight(self, epoch: int) -> float:
        return min(self.options.weight_max, epoch / self.options.weight_ramp)

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        logs = super().train_step(batch, ctx)
        weight = self.rank_weight(ctx.epoch)
        if weight == 0 and not self.options.pair_ce:
            return {**logs, "rank": 0.0}
        images, labels = batch
        archs = self.pair_sampler.draw(ctx.rng(1), 2 * self.options.num_pairs)
        total_rank = total_ce = 0.0
        for first, second in zip(archs[0::2], archs[1::2]):
            priors = (self.prior(first), self.prior(second))
            ce = [losses.cross_entropy(ctx.forward(images, a).logits, labels, self.cfg.label_smoothing)
                  for a in (first, second)]
            large, small = (0, 1) if priors[0] > priors[1] else (1, 0)
            rank = losses.pairwise_rank_hinge(ce[large], ce[small], self.options.margin) \
                if priors[0] != priors[1] else paddle.zeros([])
            loss = weight * rank + (ce[0] + ce[1] if self.options.pair_ce else 0.0)
            if not loss.stop_gradient:
                ctx.backward(loss)
            total_rank = total_rank + rank.detach()
            total_ce = total_ce + (ce[0] + ce[1]).detach()
        extra = loss_values(rank=total_rank, pair_ce=total_ce)
        return {**logs, "loss": logs["loss"] + weight * extra["rank"]
                + (extra["pair_ce"] if self.options.pair_ce else 0.0), **extra}
