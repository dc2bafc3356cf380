"""Arch samplers, chosen by name from ``hnas.registry.SAMPLERS`` and configured from YAML.

Every draw comes from an explicit generator, never global RNG: distributed training needs
every rank to train the same subnet at the same step, and seeding a generator from
(seed, epoch, step, k) gives that without any communication.

A sampler answers ``draw(rng, n) -> list[Arch]``.  Most draw ``n`` independent archs; the
group samplers (``fair``, ``pair``, ``biased``) return a group whose members depend on one
another, which is why the interface draws groups rather than single archs.

``Strategy.sampler`` (or ``--sampler``) is a name, or a mapping with ``name`` and the
sampler's own arguments, e.g. ``{name: biased, candidates: 400, keep: 4}``.
"""
from __future__ import annotations

import inspect
import os
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from .registry import SAMPLERS
from .search_space import Arch, SearchSpace, code_digits, hamming_distances

DEFAULT_TARGET_ARCHS = "checkpoints/CVPR_2022_NAS_Track1_test.json"


def make_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator determined by ``seed`` and ``keys`` (e.g. epoch, step, subnet index)."""
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


class Choices:
    """The depths and width codes a sampler may use, per stage: the search space, optionally
    narrowed (OFA-style phases train a part of the space at a time).

    Args:
        space: the search space.
        depths: per stage, the allowed depths (default: the stage's whole range).
        widths: per stage, the allowed width codes of every conv1, and of the tied stage code
            unless ``stage_widths`` says otherwise (default: ``space.sampleable_codes``).
        stage_widths: per stage, the allowed tied code (conv2s, shortcut; stage 1's also sets
            the stem), e.g. one code per few-shot child (default: ``widths``).
    """

    def __init__(self, space: SearchSpace, depths: Sequence[Sequence[int]] | None = None,
                 widths: Sequence[Sequence[int]] | None = None,
                 stage_widths: Sequence[Sequence[int]] | None = None):
        self.space = space
        full_depths = [tuple(range(lo, hi + 1)) for lo, hi in space.depth_ranges]
        all_codes = [tuple(range(1, len(space.width_ratios) + 1))] * space.num_stages
        self.depths = self._narrow("depths", depths, full_depths)
        self.widths = self._narrow("widths", widths, all_codes) if widths is not None else \
            [tuple(space.sampleable_codes(s)) for s in range(space.num_stages)]
        self.stage_widths = self._narrow("stage_widths", stage_widths, all_codes) \
            if stage_widths is not None else self.widths

    def codes_at(self, position: tuple[int, int]) -> tuple[int, ...]:
        """Allowed codes at a width position (see :meth:`positions`)."""
        stage, block = position
        return self.widths[stage] if block >= 0 else self.stage_widths[stage]

    def largest(self, image_code: int = 1) -> Arch:
        """Deepest and widest allowed arch (code 1 is the widest ratio)."""
        return self._extreme(image_code, max, min)

    def smallest(self, image_code: int = 1) -> Arch:
        return self._extreme(image_code, min, max)

    def _extreme(self, image_code: int, depth_pick, code_pick) -> Arch:
        depths = tuple(depth_pick(d) for d in self.depths)
        conv1 = tuple((code_pick(self.widths[s]),) * d for s, d in enumerate(depths))
        return Arch(image_code, depths, conv1, tuple(code_pick(c) for c in self.stage_widths))

    def _narrow(self, name: str, given, full: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        if given is None:
            return full
        if not isinstance(given, (list, tuple)) or len(given) != self.space.num_stages:
            raise ValueError(f"sampler {name} must list one group of values per stage "
                             f"({self.space.num_stages} stages), got {given!r}")
        narrowed = []
        for s, values in enumerate(given):
            values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
            bad = [v for v in values if not isinstance(v, int) or v not in full[s]]
            if not values or bad:
                raise ValueError(f"sampler {name} of stage {s + 1}: {list(values)} must be a non-empty "
                                 f"subset of {list(full[s])}")
            narrowed.append(tuple(sorted(set(values))))
        return narrowed

    def positions(self, depths: Sequence[int]) -> list[tuple[int, int]]:
        """Searchable width positions of a subnet with ``depths``: ``(stage, block)`` for each
        conv1, ``(stage, -1)`` for each stage's tied code (stem and shortcut included)."""
        return [(s, b) for s, d in enumerate(depths) for b in range(d)] + \
               [(s, -1) for s in range(self.space.num_stages)]


class Sampler:
    """Base class: ``draw(rng, n)`` of ``sample(rng)`` draws; subclasses override either."""

    def __init__(self, space: SearchSpace, depths=None, widths=None, stage_widths=None, image_code: int = 1):
        self.space = space
        self.choices = Choices(space, depths, widths, stage_widths)
        self.image_code = image_code

    def sample(self, rng: np.random.Generator) -> Arch:
        return self.draw(rng, 1)[0]

    def draw(self, rng: np.random.Generator, n: int) -> list[Arch]:
        return [self.sample(rng) for _ in range(n)]

    def _build(self, depths: Sequence[int], code_at) -> Arch:
        """An arch from ``depths`` and ``code_at((stage, block))`` per width position."""
        conv1 = tuple(tuple(int(code_at((s, b))) for b in range(d)) for s, d in enumerate(depths))
        stage = tuple(int(code_at((s, -1))) for s in range(self.space.num_stages))
        return Arch(self.image_code, tuple(int(d) for d in depths), conv1, stage)


@SAMPLERS.register("uniform")
class UniformSampler(Sampler):
    """Depth uniform per stage, every width code uniform over the stage's allowed codes."""

    def sample(self, rng: np.random.Generator) -> Arch:
        ch = self.choices
        depths = [int(rng.choice(ch.depths[s])) for s in range(self.space.num_stages)]
        conv1 = [tuple(int(c) for c in rng.choice(ch.widths[s], size=d)) for s, d in enumerate(depths)]
        stage = [int(rng.choice(ch.stage_widths[s])) for s in range(self.space.num_stages)]
        return self._build(depths, lambda pos: conv1[pos[0]][pos[1]] if pos[1] >= 0 else stage[pos[0]])


@SAMPLERS.register("distribution")
class DistributionSampler(Sampler):
    """Draws archs whose codes follow the distribution of a reference arch list.

    Depth tuples come from their empirical joint distribution; each block's conv1 code from
    the empirical distribution at its (stage, block) position, and each stage's tied code from
    its own.  This trains the subnets the test list actually contains (stage 1 only uses codes
    1-3 in the 45,000 Track-1 archs).  ``draw`` is vectorised: 400 archs take about a millisecond.

    Args:
        archs: the reference list (``Arch`` objects), or use :meth:`from_codes` / ``archs_path``.
    """

    def __init__(self, space: SearchSpace, archs: Iterable[Arch] | None = None,
                 archs_path: str = DEFAULT_TARGET_ARCHS):
        super().__init__(space)
        if archs is None:
            archs = [space.parse(code) for code in _read_codes(archs_path)]
        archs = list(archs)
        if not archs:
            raise ValueError("sampler 'distribution' needs at least one reference arch")
        self.image_code = archs[0].image_code
        self._depths = _Categorical(a.depths for a in archs)
        self._stage = [_Categorical(a.stage_codes[s] for a in archs) for s in range(space.num_stages)]
        self._conv1 = [[_Categorical(a.conv1_codes[s][b] for a in archs if a.depths[s] > b)
                        for b in range(space.max_depths[s])] for s in range(space.num_stages)]

    @classmethod
    def from_codes(cls, space: SearchSpace, codes: Sequence[str]) -> "DistributionSampler":
        return cls(space, (space.parse(c) for c in codes))

    def draw(self, rng: np.random.Generator, n: int) -> list[Arch]:
        depths = self._depths.draw(rng, n)
        conv1 = [[cat.draw(rng, n) if cat.values else None for cat in stage] for stage in self._conv1]
        stage = [cat.draw(rng, n) for cat in self._stage]
        archs = []
        for i in range(n):
            d = depths[i]
            archs.append(self._build(d, lambda pos: conv1[pos[0]][pos[1]][i] if pos[1] >= 0 else stage[pos[0]][i]))
        return archs


@SAMPLERS.register("fair")
class FairSampler(Sampler):
    """Strict fairness (FairNAS, Chu et al. 2021): a group of ``m`` subnets shares one depth per
    stage, and every searchable width position takes each of its allowed codes exactly once
    across the group.  Tied widths (a stage's conv2 codes, the stem) are one position.

    ``m`` is the largest number of allowed codes at any position (7 on the whole space).  A
    position with fewer codes cycles through them as evenly as possible (counts differ by at
    most one).  ``draw(rng, n)`` ignores ``n``: the group size is the fairness unit.
    """

    @property
    def group_size(self) -> int:
        return max(len(codes) for codes in self.choices.widths + self.choices.stage_widths)

    def draw(self, rng: np.random.Generator, n: int | None = None) -> list[Arch]:
        m = self.group_size
        depths = [int(rng.choice(d)) for d in self.choices.depths]
        columns = {}
        for pos in self.choices.positions(depths):
            codes = np.resize(rng.permutation(self.choices.codes_at(pos)), m)
            rng.shuffle(codes)
            columns[pos] = codes
        return [self._build(depths, lambda pos: columns[pos][i]) for i in range(m)]


@SAMPLERS.register("pair")
class PairSampler(Sampler):
    """Pairs of uniform archs at least ``min_distance`` apart (Hamming distance between their
    codes from digit ``start``): the 3rd place compared ``code[5:]`` at distance >= 33, so a
    rank loss sees pairs that differ enough for their order to be learnable.

    ``draw(rng, n)`` returns ``n`` archs: pairs ``(0, 1), (2, 3), ...`` (``n`` even).
    """

    MAX_TRIES = 1000

    def __init__(self, space: SearchSpace, min_distance: int = 33, start: int = 5, depths=None, widths=None,
                 stage_widths=None):
        super().__init__(space, depths, widths, stage_widths)
        if not 0 <= start < space.code_length:
            raise ValueError(f"sampler 'pair': start must be in 0..{space.code_length - 1}, got {start}")
        if not 0 <= min_distance <= space.code_length - start:
            raise ValueError(f"sampler 'pair': min_distance must be in 0..{space.code_length - start}, "
                             f"got {min_distance}")
        self.min_distance, self.start = min_distance, start
        self._uniform = UniformSampler(space, depths, widths, stage_widths)

    def draw(self, rng: np.random.Generator, n: int = 2) -> list[Arch]:
        if n % 2:
            raise ValueError(f"sampler 'pair' draws pairs: n must be even, got {n}")
        archs = []
        for _ in range(n // 2):
            first = self._uniform.sample(rng)
            archs += [first, self.partner(first, rng)]
        return archs

    def partner(self, first: Arch, rng: np.random.Generator) -> Arch:
        """A uniform arch at least ``min_distance`` from ``first``, by rejection in batches."""
        code = self.space.encode(first)
        for _ in range(self.MAX_TRIES // 50):
            candidates = self._uniform.draw(rng, 50)
            codes = [self.space.encode(a) for a in candidates]
            far = hamming_distances(code_digits(codes)[:, self.start:],
                                    code_digits([code])[:, self.start:])
            hits = np.nonzero(far >= self.min_distance)[0]
            if hits.size:
                return candidates[int(hits[0])]
        raise ValueError(f"sampler 'pair' found no arch at distance >= {self.min_distance} from {code} in "
                         f"{self.MAX_TRIES} draws; lower min_distance")


@SAMPLERS.register("biased")
class BiasedSampler(Sampler):
    """Sampling biased toward large subnets (1st place, stage 2): draw ``candidates`` archs
    from the target distribution, keep the ``keep`` largest by a size proxy.

    Args:
        candidates: N archs drawn per group (1st place: 400).
        keep: k largest kept (1st place: 4, their ``dyna_batch_size``); ``draw(rng, n)``
            keeps ``n`` when given.
        size: ``flops`` (analytic MACs of the arch, the default) or ``channels`` (the 1st
            place's channel sum, :func:`channel_sum`).
        archs_path: the arch list whose code distribution the candidates follow (read once
            per process and search space).

    Equal sizes never collide: the 1st place keyed candidates by size in a dict, so an arch of
    the same size as a kept one overwrote it and the freed slot went to the next candidate
    whatever its size (the 45,000 test archs have only 364 distinct channel sums).  Here
    candidates are ordered by size, ties in draw order, and k distinct archs are kept (a
    candidate drawn twice counts once).
    """

    def __init__(self, space: SearchSpace, candidates: int = 400, keep: int = 4, size: str = "flops",
                 archs_path: str = DEFAULT_TARGET_ARCHS, target: DistributionSampler | None = None):
        super().__init__(space)
        if size not in SIZE_PROXIES:
            raise ValueError(f"sampler 'biased': size must be one of {sorted(SIZE_PROXIES)}, got {size!r}")
        if not 1 <= keep <= candidates:
            raise ValueError(f"sampler 'biased': need 1 <= keep <= candidates, got keep {keep}, "
                             f"candidates {candidates}")
        self.candidates, self.keep, self.size = candidates, keep, size
        self.target = target if target is not None else _target_distribution(space, archs_path)
        self.image_code = self.target.image_code

    def draw(self, rng: np.random.Generator, n: int | None = None) -> list[Arch]:
        keep = self.keep if n is None else n
        pool = self.target.draw(rng, max(self.candidates, keep))
        sizes = np.array([SIZE_PROXIES[self.size](self.space, a) for a in pool], dtype=np.float64)
        kept: dict[Arch, None] = {}
        for i in np.argsort(-sizes, kind="stable"):
            kept.setdefault(pool[i])
            if len(kept) == keep:
                break
        return list(kept)


_TARGETS: dict = {}


def _target_distribution(space: SearchSpace, path: str) -> DistributionSampler:
    """The :class:`DistributionSampler` of ``path`` (45,000 codes take seconds to parse),
    cached per search space and file version.  A relative path missing from the working
    directory is taken from the repository (where the default list lives)."""
    in_repo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
    if not os.path.isabs(path) and not os.path.exists(path) and os.path.exists(in_repo):
        path = in_repo
    key = (space, os.path.abspath(path), os.path.getmtime(path) if os.path.exists(path) else None)
    if key not in _TARGETS:
        _TARGETS[key] = DistributionSampler(space, archs_path=path)
    return _TARGETS[key]


# The 1st place's channel-sum weights: per stage, the channel count that ratio 1.0 stands for
# (their ``arch2size``: 64, 64 x 1.1, 64 x 1.7, 64 x 1.9, not the stage widths 64..512).
CHANNEL_SUM_BASES = (64.0, 64 * 1.1, 64 * 1.7, 64 * 1.9)


def channel_sum(space: SearchSpace, arch: Arch) -> float:
    """The 1st place's size proxy (``arch2size`` in their ``hapi_wrapper.py``): over the stem
    and both convs of every active block, ``ratio x base`` rounded up to a multiple of 8, with
    the stem's base 64 and per-stage bases :data:`CHANNEL_SUM_BASES`.

    It reads only the codes: the stage weights 64/70.4/108.8/121.6 flatten the real widths
    (64/128/256/512), so a deep narrow stage counts for more than its FLOPs.  A conv2 takes its
    stage's tied code.  Spaces with another number of stages repeat the last base.
    """
    ratios = space.width_ratios

    def up8(ratio: float, base: float) -> float:
        value = ratio * base
        return value if value % 8 == 0 else value + 8 - value % 8

    total = up8(ratios[arch.stem_code - 1], CHANNEL_SUM_BASES[0])
    for s, codes in enumerate(arch.conv1_codes):
        base = CHANNEL_SUM_BASES[min(s, len(CHANNEL_SUM_BASES) - 1)]
        conv2 = up8(ratios[arch.stage_codes[s] - 1], base)
        total += sum(up8(ratios[c - 1], base) + conv2 for c in codes)
    return float(total)


SIZE_PROXIES = {"flops": lambda space, arch: space.flops(arch), "channels": channel_sum}


def build_sampler(space: SearchSpace, spec: str | dict | None = "uniform", **defaults) -> Sampler:
    """The sampler ``spec`` names: ``"uniform"`` or ``{name: biased, keep: 4, ...}``.

    ``defaults`` (e.g. ``depths``/``widths`` of a training phase) apply unless ``spec`` sets them.
    Unknown arguments fail with the sampler's known ones listed.
    """
    spec = {"name": spec} if isinstance(spec, str) or spec is None else dict(spec)
    name = spec.pop("name", None) or "uniform"
    cls = SAMPLERS.get(name)
    known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "space", "target")]
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise ValueError(f"unknown arguments {unknown} for sampler {name!r}; known: {known}")
    kwargs = {k: v for k, v in defaults.items() if k in known and v is not None}
    kwargs.update(spec)
    return cls(space, **kwargs)


def _read_codes(path: str) -> list[str]:
    from .io import read_arch_json

    return [entry["arch"] for entry in read_arch_json(path).values()]


class _Categorical:
    """An empirical distribution over hashable values, drawn ``n`` at a time."""

    def __init__(self, values: Iterable):
        counts = Counter(values)
        self.values = sorted(counts)
        total = sum(counts.values())
        self.probs = np.array([counts[v] / total for v in self.values]) if total else None

    def draw(self, rng: np.random.Generator, n: int) -> list:
        if self.probs is None:
            raise ValueError("no reference arch reaches this position")
        return [self.values[i] for i in rng.choice(len(self.values), size=n, p=self.probs)]
