"""Arch samplers: every draw comes from an explicit generator, never global RNG.

Distributed training needs every rank to train the same subnet at the same step; seeding a
generator from (seed, epoch, step, k) gives that without any communication.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from .search_space import Arch, SearchSpace


def make_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator determined by ``seed`` and ``keys`` (e.g. epoch, step, subnet index)."""
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


class UniformSampler:
    """Depth uniform per stage, every width code uniform over the stage's sampleable codes."""

    def __init__(self, space: SearchSpace, image_code: int = 1):
        self.space = space
        self.image_code = image_code

    def sample(self, rng: np.random.Generator) -> Arch:
        sp = self.space
        depths = tuple(int(rng.integers(lo, hi + 1)) for lo, hi in sp.depth_ranges)
        conv1, stage = [], []
        for s, d in enumerate(depths):
            choices = sp.sampleable_codes(s)
            conv1.append(tuple(int(c) for c in rng.choice(choices, size=d)))
            stage.append(int(rng.choice(choices)))
        return Arch(self.image_code, depths, tuple(conv1), tuple(stage))


class DistributionSampler:
    """Draws archs whose codes follow the distribution of a reference arch list.

    Depth tuples are drawn from their empirical joint distribution; each block's conv1 code
    from the empirical distribution at its (stage, block) position, and each stage's tied
    code from its own.  This is what users ask for to train on the subnets the test list
    actually contains (e.g. stage 1 only uses codes 1-3 in the 45,000 Track-1 archs).
    """

    def __init__(self, space: SearchSpace, archs: Iterable[Arch]):
        self.space = space
        archs = list(archs)
        if not archs:
            raise ValueError("DistributionSampler needs at least one reference arch")
        self._depths = _Categorical(a.depths for a in archs)
        self._image = _Categorical(a.image_code for a in archs)
        self._stage = [_Categorical(a.stage_codes[s] for a in archs) for s in range(space.num_stages)]
        self._conv1 = [[_Categorical(a.conv1_codes[s][b] for a in archs if a.depths[s] > b)
                        for b in range(space.max_depths[s])] for s in range(space.num_stages)]

    @classmethod
    def from_codes(cls, space: SearchSpace, codes: Sequence[str]) -> "DistributionSampler":
        return cls(space, (space.parse(c) for c in codes))

    def sample(self, rng: np.random.Generator) -> Arch:
        depths = self._depths.draw(rng)
        conv1 = tuple(tuple(self._conv1[s][b].draw(rng) for b in range(d)) for s, d in enumerate(depths))
        stage = tuple(cat.draw(rng) for cat in self._stage)
        return Arch(self._image.draw(rng), depths, conv1, stage)


class _Categorical:
    def __init__(self, values: Iterable):
        counts = Counter(values)
        self.values = sorted(counts)
        total = sum(counts.values())
        self.probs = np.array([counts[v] / total for v in self.values]) if total else None

    def draw(self, rng: np.random.Generator):
        if self.probs is None:
            raise ValueError("no reference arch reaches this position")
        return self.values[int(rng.choice(len(self.values), p=self.probs))]
