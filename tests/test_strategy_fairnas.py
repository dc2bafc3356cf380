"""FairNAS: the fair group's counts, one forward per group member, and what momentum and
weight decay do to the blocks a step leaves out (with and without ``freeze_unused``)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hnas.callbacks import Callback
from hnas.data import build_dataset, make_image_folder
from hnas.models import ResNetSuperNet
from hnas.sampling import FairSampler, build_sampler, make_rng
from hnas.strategies import STRATEGIES, StepContext, build_strategy
from hnas.strategies.fairnas import FairNAS
from hnas.trainer import TrainConfig, Trainer


def position_counts(sampler, group):
    """Per searchable width position, the Counter of codes the group gives it."""
    depths = group[0].depths
    counts = {}
    for s, b in sampler.choices.positions(depths):
        counts[(s, b)] = Counter(a.conv1_codes[s][b] if b >= 0 else a.stage_codes[s] for a in group)
    return counts


def test_fair_group_on_whole_space_takes_every_code_once(small_space):
    sampler = build_sampler(small_space, "fair")
    assert sampler.group_size == 7
    for step in range(20):
        group = sampler.draw(make_rng(0, 0, step, 0))
        assert len(group) == 7
        assert len({a.depths for a in group}) == 1, "depths are shared by the group"
        for pos, counts in position_counts(sampler, group).items():
            assert counts == Counter(range(1, 8)), f"step {step} position {pos}: {counts}"


@pytest.mark.parametrize("widths,m", [([[1, 2, 3]] * 4, 3), ([[1, 2, 3], [1, 2, 3, 4, 5], [2, 7], [4]], 5)])
def test_fair_group_under_restricted_widths_is_as_even_as_possible(small_space, widths, m):
    sampler = build_sampler(small_space, {"name": "fair", "widths": widths, "depths": [[2, 3]] * 4})
    assert sampler.group_size == m
    for step in range(20):
        group = sampler.draw(make_rng(1, 0, step, 0))
        assert len(group) == m and len({a.depths for a in group}) == 1
        assert all(d in (2, 3) for d in group[0].depths)
        for (s, b), counts in position_counts(sampler, group).items():
            allowed = widths[s]
            assert set(counts) == set(allowed), (s, b, counts)  # every allowed code, no other
            values = [counts[c] for c in allowed]
            assert max(values) - min(values) <= 1 and sum(values) == m, (s, b, counts)


class CountingSupernet(ResNetSuperNet):
    def __init__(self, space):
        super().__init__(space)
        self.forwards = []

    def forward_features(self, x):
        self.forwards.append(self.active_code())
        return super().forward_features(x)


@pytest.mark.parametrize("sampler,m", [("fair", 7), ({"name": "fair", "widths": [[1, 2, 3]] * 4}, 3)])
def test_fairnas_runs_one_forward_per_group_member(small_space, sampler, m):
    net = CountingSupernet(small_space)
    strategy = build_strategy({"name": "fairnas", "sampler": sampler}, small_space, TrainConfig(label_smoothing=0.1))
    images = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype("float32")
    import paddle

    batch = (paddle.to_tensor(images), paddle.to_tensor(np.array([0, 1, 2, 3])))
    logs = strategy.train_step(batch, StepContext(net, seed=0, epoch=0, step=0))
    assert len(net.forwards) == m == strategy.group_size
    assert len(set(net.forwards)) == m  # the group's members differ
    assert logs["loss"] == pytest.approx(m * logs["ce"], rel=1e-5)


def test_fairnas_default_sampler_is_fair_and_refuses_others(small_space):
    assert FairNAS.Options().sampler == "fair" and STRATEGIES.get("fairnas") is FairNAS
    assert isinstance(build_strategy("fairnas", small_space, TrainConfig()).sampler, FairSampler)
    for spec in ("uniform", {"name": "pair", "min_distance": 3}):
        with pytest.raises(ValueError, match="needs the 'fair' sampler"):
            build_strategy({"name": "fairnas", "sampler": spec}, small_space, TrainConfig())


class AlternatingDepths(FairSampler):
    """Fair groups at full depth on even draws, at the smallest depths on odd ones."""

    def __init__(self, space):
        super().__init__(space)
        self.calls = 0

    def draw(self, rng, n=None):
        full = self.calls % 2 == 0
        self.calls += 1
        self.choices.depths = [(hi if full else lo,) for lo, hi in self.space.depth_ranges]
        return super().draw(rng, n)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("images")), num_classes=4, per_class=8,
                             image_size=32, seed=0)


def deep_block_weights(small_space, momentum, weight_decay, freeze_unused, image_root):
    """Weights of a block past stage 1's smallest depth after each of 4 steps: full depth at
    steps 0 and 2 (the block trains), smallest depths at steps 1 and 3 (no subnet uses it)."""
    net = ResNetSuperNet(small_space)
    block = net.blocks[net.stage_blocks[0][-1]]
    cfg = TrainConfig(max_epoch=1, batch_size=8, lr=0.2, scale_lr=False, warmup=0, momentum=momentum,
                      weight_decay=weight_decay, log_freq=1000)
    strategy = FairNAS(small_space, cfg, FairNAS.Options(freeze_unused=freeze_unused),
                       sampler=AlternatingDepths(small_space))
    snapshots = [block.conv1.weight.numpy().copy()]

    class Record(Callback):
        def on_train_batch_end(self, step, logs=None):
            snapshots.append(block.conv1.weight.numpy().copy())

    Trainer(net, strategy, cfg, save_dir="", callbacks=[Record()]).fit(build_dataset(image_root, "train", 32))
    assert len(snapshots) == 5 and all(not p.stop_gradient for p in net.parameters() if p.name.endswith("w_0"))
    return snapshots


@pytest.mark.parametrize("momentum,weight_decay,freeze,moves", [
    (0.9, 0.0, False, True),    # momentum applies the old velocity to an unused block
    (0.0, 1e-2, False, True),   # weight decay shrinks it
    (0.0, 0.0, False, False),   # plain SGD leaves it alone
    (0.9, 1e-2, True, False),   # freeze_unused: neither moves it
])
def test_unused_blocks_move_with_momentum_and_weight_decay_unless_frozen(small_space, image_root, momentum,
                                                                          weight_decay, freeze, moves):
    w = deep_block_weights(small_space, momentum, weight_decay, freeze, image_root)
    trained = np.abs(w[1] - w[0]).mean()
    assert trained > 0  # step 0 trains the block
    for unused_step in (1, 3):
        drift = np.abs(w[unused_step + 1] - w[unused_step]).mean()
        assert (drift > 0) == moves, f"step {unused_step}: drift {drift:.3g} vs trained step {trained:.3g}"
    assert np.abs(w[3] - w[2]).mean() > 0  # step 2 (full depth) trains it again
