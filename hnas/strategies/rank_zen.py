"""Sandwich rule plus a pairwise rank loss guided by the Zen-score (3rd place, RD-NAS)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..proxies import ZenPrior
from ..registry import STRATEGIES
from .rank_flops import RankFlops


@STRATEGIES.register("rank_zen")
class RankZen(RankFlops):
    """:class:`RankFlops` with the Zen-score as the prior, each pair's second arch drawn at
    Hamming distance >= 33 from the first on ``code[5:]`` (the 3rd place's pairs).

    The prior is :class:`hnas.proxies.ZenPrior`: one fixed random-weight supernet, one
    Gaussian batch of ``zen_batch_size`` at the training resolution, cached per code, so a
    score costs two small forward passes the first time and nothing after (the 3rd place
    recomputed full Zen-scores on every step).
    """

    @dataclass
    class Options(RankFlops.Options):
        pair_sampler: Any = field(default_factory=lambda: {"name": "pair", "min_distance": 33, "start": 5})
        zen_batch_size: int = 8
        zen_seed: int = 0

    def __init__(self, space, cfg, options=None, teacher=None, sampler=None):
        super().__init__(space, cfg, options, teacher=teacher, sampler=sampler)
        self.zen = ZenPrior(space, seed=self.options.zen_seed, batch_size=self.options.zen_batch_size)

    def prior(self, arch) -> float:
        return self.zen(arch)
