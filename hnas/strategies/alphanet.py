"""AlphaNet (Wang et al., ICML 2021): the sandwich rule with adaptive alpha-divergence distillation."""
from __future__ import annotations

from dataclasses import dataclass

from .. import losses
from ..registry import STRATEGIES
from .sandwich import Sandwich


@STRATEGIES.register("alphanet")
class AlphaNet(Sandwich):
    """The sandwich rule (largest on labels; smallest and random subnets distilled in place),
    with each student's KL replaced by the larger of two alpha-divergences per sample.

    KL(p || q) is mass-covering: it barely penalises a student that over-estimates the
    teacher's uncertainty, while the reverse direction barely penalises under-estimating it.
    Taking, per sample, the larger of the divergences at ``alpha_min`` < 0 and ``alpha_max`` > 0
    penalises both, and clipping the importance weights keeps the gradient bounded.  Used by
    the 3rd place (RD-NAS), which switched it off because its probability-ratio version
    underflowed; :func:`hnas.losses.alpha_divergence` works in log space.
    ``distill_temperature`` divides both sides' logits first (1 = as published).
    """

    @dataclass
    class Options(Sandwich.Options):
        """AlphaNet's published values: alpha in [-1, 1], importance weights clipped at 3."""

        alpha_min: float = -1.0
        alpha_max: float = 1.0
        iw_clip: float = 3.0

        def __post_init__(self):
            if not self.alpha_min <= self.alpha_max or not self.iw_clip > 1.0:
                raise ValueError(f"Strategy (alphanet): need alpha_min <= alpha_max and iw_clip > 1, got "
                                 f"{self.alpha_min}, {self.alpha_max}, {self.iw_clip}")

    def distill(self, student_logits, teacher_logits):
        t = self.options.distill_temperature
        o = self.options
        return losses.alpha_divergence(student_logits / t, teacher_logits / t, o.alpha_min, o.alpha_max,
                                       o.iw_clip)
