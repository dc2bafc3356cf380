"""The 1st place's biased sampling: kept archs are larger than draws from the same target
distribution, equal sizes never collide, the random subnet comes every r-th step, and the
external-teacher and in-place modes."""
from __future__ import annotations

import dataclasses

import numpy as np
import paddle
import pytest

from hnas.models import ResNetSuperNet
from hnas.models.pretrained import build_teacher
from hnas.sampling import BiasedSampler, build_sampler, channel_sum, make_rng
from hnas.search_space import Arch
from hnas.strategies import StepContext, build_strategy
from hnas.strategies.biased import Biased
from hnas.trainer import TrainConfig

from conftest import TRACK1_JSON


def test_kept_archs_are_larger_than_draws_from_the_target(imagenet_space):
    """Over 30 steps: the 4 kept of 400 candidates vs the 400 candidates themselves (i.i.d.
    draws from the test archs' code distribution), by FLOPs and by the channel sum."""
    for size, proxy in (("flops", imagenet_space.flops), ("channels", lambda a: channel_sum(imagenet_space, a))):
        sampler = BiasedSampler(imagenet_space, size=size, archs_path=TRACK1_JSON)
        kept, drawn = [], []
        for step in range(30):
            kept += [proxy(a) for a in sampler.draw(make_rng(0, 0, step, 0))]
            drawn += [proxy(a) for a in sampler.target.draw(make_rng(0, 0, step, 0), 400)]  # the same pool
        assert len(kept) == 120
        print(f"{size}: mean of kept {np.mean(kept):.4g}, of target draws {np.mean(drawn):.4g}, "
              f"kept min {np.min(kept):.4g} >= pool 99th percentile {np.percentile(drawn, 99):.4g}")
        assert np.mean(kept) > np.percentile(drawn, 95) > np.mean(drawn)
        assert np.min(kept) >= np.percentile(drawn, 90)


def test_channel_sum_is_the_first_place_arch2size(imagenet_space):
    # Their arch2size of the largest code '1558511...1': 64 + 10 x 64 + 10 x 72 + 16 x 112 + 10 x 128.
    assert channel_sum(imagenet_space, imagenet_space.largest()) == 4496.0
    # A Track-1 test code; 1872 is what their arch2size gives for it (the two agree on the
    # first 3,000 test codes).
    code = "1252233313000000223212122253130000000000006515000000"
    assert channel_sum(imagenet_space, imagenet_space.parse(code)) == 1872.0


class FixedPool:
    """A stand-in target distribution that always draws the same candidates."""

    def __init__(self, archs):
        self.archs, self.image_code = list(archs), 1

    def draw(self, rng, n):
        return self.archs[:n]


def equal_flops_pair(space):
    """Two different archs of equal FLOPs: conv1 codes swapped between blocks 2 and 3 of
    stage 3 (same input, output and resolution)."""
    big = space.largest()
    conv1 = [list(c) for c in big.conv1_codes]
    conv1[2][1], conv1[2][2] = 2, 3
    a = dataclasses.replace(big, conv1_codes=tuple(tuple(c) for c in conv1))
    conv1[2][1], conv1[2][2] = 3, 2
    b = dataclasses.replace(big, conv1_codes=tuple(tuple(c) for c in conv1))
    return a, b


def test_equal_sizes_do_not_collide(small_space):
    a, b = equal_flops_pair(small_space)
    small = small_space.smallest()
    mid = Arch(1, (3, 3, 3, 3), ((4,) * 3,) * 4, (4,) * 4)
    assert a != b and small_space.flops(a) == small_space.flops(b)
    assert small_space.flops(a) > small_space.flops(mid) > small_space.flops(small)
    pool = [small, a, mid, b, a, small]
    sampler = BiasedSampler(small_space, candidates=6, keep=2, target=FixedPool(pool))
    assert sampler.draw(make_rng(0)) == [a, b]  # a dict keyed by size would keep one of them
    sampler = BiasedSampler(small_space, candidates=6, keep=3, target=FixedPool(pool))
    assert sampler.draw(make_rng(0)) == [a, b, mid]  # a drawn twice counts once
    assert sampler.draw(make_rng(0), 4) == [a, b, mid, small]


def make_biased(space, random_every=3, teacher=None, **cfg):
    options = {"name": "biased", "random_every": random_every,
               "sampler": {"name": "biased", "candidates": 40, "archs_path": TRACK1_JSON}}
    return build_strategy(options, space, TrainConfig(**cfg), teacher=teacher)


def test_defaults_are_the_first_place_stage_2(small_space):
    options = Biased.Options()
    assert (options.sampler, options.random_every, options.teacher) == ("biased", 3, "auto")
    sampler = build_sampler(small_space, {"name": "biased", "archs_path": TRACK1_JSON})
    assert (sampler.candidates, sampler.keep, sampler.size) == (400, 4, "flops")


@pytest.mark.parametrize("every", [3, 2, 0])
def test_random_subnet_comes_exactly_every_r_th_step(small_space, every):
    strategy = make_biased(small_space, random_every=every)
    for epoch in (0, 1):
        for step in range(8):
            ctx = StepContext(ResNetSuperNet(small_space), seed=0, epoch=epoch, step=step)
            archs = strategy.archs(ctx)
            expected = every > 0 and step % every == 0
            assert len(archs) == 4 + expected, (every, epoch, step)
            assert archs[:4] == strategy.sampler.draw(ctx.rng(0))
            if expected:
                assert archs[4] == strategy.random_sampler.sample(ctx.rng(1))


class RecordingSupernet(ResNetSuperNet):
    def __init__(self, space):
        super().__init__(space)
        self.forwards = []

    def forward_features(self, x):
        self.forwards.append(self.active_arch())
        return super().forward_features(x)


class CountingTeacher(paddle.nn.Layer):
    def __init__(self, teacher):
        super().__init__()
        self.teacher, self.calls = teacher, 0

    def forward(self, x):
        self.calls += 1
        return self.teacher(x)


def batch():
    images = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype("float32")
    return paddle.to_tensor(images), paddle.to_tensor(np.array([0, 1, 2, 3]))


def test_inplace_mode_distils_from_the_largest(small_space):
    strategy = make_biased(small_space)
    assert strategy.inplace and strategy.teacher is None
    net = RecordingSupernet(small_space)
    logs = strategy.train_step(batch(), StepContext(net, seed=0, epoch=0, step=0))
    archs = strategy.archs(StepContext(net, seed=0, epoch=0, step=0))
    assert net.forwards == [small_space.largest()] + archs and len(archs) == 5
    assert logs["loss"] == pytest.approx(logs["ce"] + logs["kd"], rel=1e-5) and logs["kd"] > 0


def test_teacher_mode_distils_from_the_pretrained_network(small_space, teacher_path):
    teacher = CountingTeacher(build_teacher(small_space, teacher_path))
    strategy = make_biased(small_space, teacher=teacher)
    assert not strategy.inplace
    net = RecordingSupernet(small_space)
    logs = strategy.train_step(batch(), StepContext(net, seed=0, epoch=0, step=1))
    assert teacher.calls == 1  # once per batch, for every subnet
    assert net.forwards == strategy.archs(StepContext(net, seed=0, epoch=0, step=1))
    assert len(net.forwards) == 4 and logs["kd"] > 0
    # Built from Train.pretrained when none is passed; 'teacher: inplace' ignores it.
    assert not make_biased(small_space, pretrained=teacher_path).inplace
    inplace = build_strategy({"name": "biased", "teacher": "inplace",
                              "sampler": {"name": "biased", "candidates": 40, "archs_path": TRACK1_JSON}},
                             small_space, TrainConfig(pretrained=teacher_path))
    assert inplace.inplace
    with pytest.raises(ValueError, match="needs the 'biased' sampler, got 'uniform'"):
        build_strategy({"name": "biased", "sampler": "uniform"}, small_space, TrainConfig())
    with pytest.raises(ValueError, match="teacher must be 'auto' or 'inplace'"):
        build_strategy({"name": "biased", "teacher": "external"}, small_space, TrainConfig())
