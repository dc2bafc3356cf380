"""Samplers: determinism per (seed, keys), validity, extremes, matching a reference list."""
from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from hnas.sampling import DistributionSampler, UniformSampler, make_rng


@pytest.fixture(scope="module")
def track1_sampler(imagenet_space, track1_codes):
    return DistributionSampler.from_codes(imagenet_space, track1_codes)


def _draws(sampler, seed, n, *keys):
    return [sampler.sample(make_rng(seed, *keys, i)) for i in range(n)]


def test_make_rng_is_a_function_of_seed_and_keys():
    def draw(*seed_and_keys):
        return make_rng(*seed_and_keys).integers(0, 2**31, 5).tolist()

    assert draw(7, 2, 30) == draw(7, 2, 30)
    assert draw(7, 2, 30) != draw(7, 2, 31)
    assert draw(7, 2, 30) != draw(8, 2, 30)
    assert draw(7, 2, 30) != draw(7, 30, 2)


@pytest.mark.parametrize("kind", ["uniform", "distribution"])
def test_same_seed_and_keys_give_the_same_archs(small_space, imagenet_space, track1_sampler, kind):
    sampler = UniformSampler(small_space) if kind == "uniform" else track1_sampler
    first = _draws(sampler, 0, 20, 3, 5)
    np.random.seed(123)  # global RNG state must not matter
    assert _draws(sampler, 0, 20, 3, 5) == first
    assert _draws(sampler, 0, 20, 3, 6) != first
    assert _draws(sampler, 1, 20, 3, 5) != first
    assert len({sampler.space.encode(a) for a in first}) == 20


def test_uniform_sampler_draws_only_valid_codes_and_covers_the_space(small_space):
    archs = _draws(UniformSampler(small_space), 0, 500)
    for arch in archs:
        assert small_space.parse(small_space.encode(arch)) == arch
    for s, (lo, hi) in enumerate(small_space.depth_ranges):
        assert {a.depths[s] for a in archs} == set(range(lo, hi + 1))
        codes = {c for a in archs for c in (*a.conv1_codes[s], a.stage_codes[s])}
        assert codes == set(range(1, len(small_space.width_ratios) + 1))


def test_uniform_sampler_respects_sample_codes(small_space):
    allowed = ((1, 2, 3), (1, 2, 3), (1, 2, 3, 4, 5), (2, 4))
    space = dataclasses.replace(small_space, sample_codes=allowed)
    for arch in _draws(UniformSampler(space), 0, 300):
        space.validate(space.encode(arch))
        for s, codes in enumerate(allowed):
            assert set(arch.conv1_codes[s]) | {arch.stage_codes[s]} <= set(codes)


def test_largest_and_smallest_bound_every_sample(small_space):
    largest, smallest = small_space.largest(), small_space.smallest()
    assert largest.depths == small_space.max_depths and smallest.depths == (2, 2, 2, 2)
    assert largest.stage_codes == (1, 1, 1, 1) and smallest.stage_codes == (7, 7, 7, 7)
    assert small_space.widths(largest) == small_space.max_widths()
    flops = [small_space.flops(a) for a in _draws(UniformSampler(small_space), 0, 200)]
    assert small_space.flops(smallest) <= min(flops) and max(flops) <= small_space.flops(largest)


def test_largest_and_smallest_follow_sample_codes(small_space):
    space = dataclasses.replace(small_space, sample_codes=((1, 2, 3), (1, 2, 3), (1, 2, 3, 4, 5), (2, 4)))
    assert space.largest().stage_codes == (1, 1, 1, 2)
    assert space.smallest().stage_codes == (3, 3, 5, 4)
    assert space.smallest().conv1_codes[3] == (4, 4)


def _tv_distance(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


def test_distribution_sampler_reproduces_the_track1_marginals(imagenet_space, track1_codes, track1_sampler):
    reference = [imagenet_space.parse(c) for c in track1_codes]
    draws = _draws(track1_sampler, 0, 5000)
    for arch in draws[:500]:
        imagenet_space.validate(imagenet_space.encode(arch))
    assert {a.stem_code for a in draws} == {1, 2, 3}
    for s, top in enumerate((3, 3, 5, 7)):
        codes = Counter(c for a in draws for c in (*a.conv1_codes[s], a.stage_codes[s]))
        assert set(codes) == set(range(1, top + 1)), f"stage {s + 1}"
        ref_codes = Counter(c for a in reference for c in (*a.conv1_codes[s], a.stage_codes[s]))
        assert _tv_distance(codes, ref_codes) < 0.03, f"stage {s + 1} width codes"
        depths = Counter(a.depths[s] for a in draws)
        assert _tv_distance(depths, Counter(a.depths[s] for a in reference)) < 0.03, f"stage {s + 1} depth"
    # the largest arch is outside the list and (all code 1 at full depth) practically never drawn
    assert imagenet_space.largest() not in draws


def test_distribution_sampler_needs_reference_archs(small_space):
    with pytest.raises(ValueError, match="at least one reference arch"):
        DistributionSampler(small_space, [])
