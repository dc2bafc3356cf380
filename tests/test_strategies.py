"""Every registered strategy: the subnets it trains learn, it trains the largest subnet, it
samples the same subnets for the same (seed, epoch, step), and a resumed run (weights,
optimizer and strategy state) equals an uninterrupted one.

Parametrised over ``STRATEGIES.names()``, so a newly registered strategy is tested here
without a new test.
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from hnas.callbacks import Callback
from hnas.data import build_dataset, make_image_folder
from hnas.models import ResNetSuperNet
from hnas.models.pretrained import build_teacher
from hnas import losses
from hnas.strategies import STRATEGIES, StepContext, build_strategy
from hnas.trainer import TrainConfig, Trainer, build_optimizer

ALL_STRATEGIES = STRATEGIES.names()


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("images")), num_classes=4, per_class=8,
                             image_size=32, seed=0)


@pytest.fixture(scope="module")
def fixed_batch(image_root):
    dataset = build_dataset(image_root, "train", 32, train=False)
    indices = range(0, len(dataset), 4)  # 8 images, 2 per class
    images = np.stack([dataset[i][0] for i in indices])
    labels = np.array([dataset[i][1] for i in indices])
    return paddle.to_tensor(images), paddle.to_tensor(labels)


def make_strategy(name, space, teacher_path, options=None, **overrides):
    settings = dict(dyna_batch_size=3, max_epoch=2, batch_size=8, lr=0.05, scale_lr=False, warmup=0,
                    weight_decay=0.0, log_freq=1000)
    cfg = TrainConfig(**{**settings, **overrides})
    teacher = build_teacher(space, teacher_path) if STRATEGIES.get(name).needs_teacher else None
    return cfg, build_strategy({"name": name, **(options or {})}, space, cfg, teacher=teacher)


class RecordingSampler:
    """Wraps a sampler and records the codes it draws."""

    def __init__(self, sampler, space):
        self.sampler, self.space, self.codes = sampler, space, []
        self.choices = sampler.choices

    def sample(self, rng):
        return self.draw(rng, 1)[0]

    def draw(self, rng, n=None):
        archs = self.sampler.draw(rng, n)
        self.codes += [self.space.encode(a) for a in archs]
        return archs


class RecordingSupernet(ResNetSuperNet):
    """Records every arch that a strategy activates."""

    def __init__(self, space):
        super().__init__(space)  # activates the largest subnet before recording starts
        self.activated = []

    def set_active(self, arch):
        arch = super().set_active(arch)
        if "activated" in self.__dict__:
            self.activated.append(self.space.encode(arch))
        return arch


def label_loss(net, archs, batch):
    """Mean cross-entropy to the labels of ``archs`` on ``batch`` (batch statistics, no grad)."""
    images, labels = batch
    values = []
    with paddle.no_grad():
        for arch in archs:
            net.set_active(arch)
            values.append(float(losses.cross_entropy(net(images), labels)))
    return float(np.mean(values))


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_the_subnets_a_step_trains_learn_the_labels(name, small_space, teacher_path, fixed_batch):
    """Not the strategy's own loss (a hinge rank loss may start at 0): the cross-entropy of the
    subnets it trains, measured apart from training, falls when one step is repeated.  A
    label-free strategy (``uses_labels = False``) cannot claim that; its own loss must fall."""
    paddle.seed(0)
    net = RecordingSupernet(small_space)
    cfg, strategy = make_strategy(name, small_space, teacher_path)
    params = [p for p in net.parameters() if not p.stop_gradient] + \
             [p for p in strategy.parameters() if not p.stop_gradient]
    optimizer, _ = build_optimizer(params, cfg, 100)
    trained, before, own = None, None, []
    for _ in range(6):  # same (epoch, step): the same subnets every time, so only learning moves the loss
        logs = strategy.train_step(fixed_batch, StepContext(net, seed=0, epoch=0, step=0))
        assert "loss" in logs and all(np.isfinite(list(logs.values()))), f"{name}: {logs}"
        own.append(logs["loss"])
        if trained is None:
            trained = sorted(set(net.activated)) or [net.active_code()]
            before = label_loss(net, trained, fixed_batch)
        optimizer.step()
        optimizer.clear_grad()
    if not STRATEGIES.get(name).uses_labels:
        assert own[-1] < own[0], f"{name} (label-free): its own loss {own[0]:.3f} -> {own[-1]:.3f}"
        return
    after = label_loss(net, trained, fixed_batch)
    assert after < 0.8 * before, f"{name}: label loss of its subnets {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_training_changes_the_largest_subnet(name, small_space, teacher_path, image_root):
    paddle.seed(0)
    net = ResNetSuperNet(small_space)
    before = {k: v.numpy() for k, v in net.export(small_space.largest()).state_dict().items()}
    cfg, strategy = make_strategy(name, small_space, teacher_path, max_epoch=1)
    Trainer(net, strategy, cfg, save_dir="").fit(build_dataset(image_root, "train", 32))
    after = net.export(small_space.largest()).state_dict()
    changed = {k for k, v in after.items() if not np.array_equal(v.numpy(), before[k])}
    last = f"blocks.{len(net.blocks) - 1}.fc.weight" if strategy.uses_labels else \
        f"blocks.{len(net.blocks) - 2}.conv2.weight"  # a label-free objective does not train the classifier
    for key in ("blocks.0.conv.weight", last):
        assert key in changed, f"{name}: {key} of the largest subnet did not change"
    assert len(changed) > len(before) // 4


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_same_seed_epoch_step_trains_the_same_subnets(name, small_space, teacher_path, fixed_batch):
    def activated(step, global_seed):
        paddle.seed(0)
        np.random.seed(global_seed)  # global RNG must not matter
        net = RecordingSupernet(small_space)
        _, strategy = make_strategy(name, small_space, teacher_path)
        strategy.sampler = RecordingSampler(strategy.sampler, small_space)
        strategy.train_step(fixed_batch, StepContext(net, seed=3, epoch=1, step=step))
        return net.activated, strategy.sampler.codes

    first, drawn = activated(step=5, global_seed=0)
    again, _ = activated(step=5, global_seed=123)
    assert first == again
    other, _ = activated(step=6, global_seed=0)
    if drawn:  # strategies that sample must sample differently at another step
        assert other != first
    assert set(drawn) <= set(first)


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_resume_equals_uninterrupted_run(name, small_space, teacher_path, image_root, tmp_path):
    train_set = build_dataset(image_root, "train", 32)

    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.trainer.stop_training = True

    def run(save_dir, callbacks=(), resume=None):
        paddle.seed(0)
        net = ResNetSuperNet(small_space)
        cfg, strategy = make_strategy(name, small_space, teacher_path, weight_decay=1e-4, warmup=0.5)
        trainer = Trainer(net, strategy, cfg, save_dir=str(save_dir), callbacks=list(callbacks))
        if resume is not None:
            paddle.seed(99)  # a different global state must not matter once resumed
            trainer.load(str(resume))
        trainer.fit(train_set)
        state = {k: v.numpy() for k, v in net.state_dict().items()}
        state.update({f"strategy.{k}": v.numpy() for k, v in strategy.state_dict().items()})
        return state, trainer

    uninterrupted, _ = run(tmp_path / "a")
    _, stopped = run(tmp_path / "b", callbacks=[StopAfterFirstEpoch()])
    assert stopped.epoch == 1 and not (tmp_path / "b" / "final.pdparams").exists()
    resumed, trainer = run(tmp_path / "b", resume=tmp_path / "b")
    assert trainer.epoch == 2 and trainer.global_step == 2 * trainer.steps_per_epoch
    assert uninterrupted.keys() == resumed.keys()
    for key, value in uninterrupted.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=f"{name}: {key} differs after resume")


def test_teacher_strategies_fail_fast_without_a_teacher(small_space):
    needing = [n for n in ALL_STRATEGIES if STRATEGIES.get(n).needs_teacher]
    assert "baseline" in needing
    for name in needing:
        with pytest.raises(ValueError, match="--pretrained"):
            build_strategy(name, small_space, TrainConfig())


def test_unknown_strategy_lists_the_known_ones(small_space):
    with pytest.raises(KeyError, match="baseline, .*sandwich, spos"):
        build_strategy("nope", small_space, TrainConfig())


def test_strategy_options_are_checked_by_name_and_type(small_space):
    with pytest.raises(ValueError, match=r"unknown Strategy \(spos\) keys \['distill_temperature'\]; known: \['sampler'\]"):
        build_strategy({"name": "spos", "distill_temperature": 2}, small_space, TrainConfig())
    with pytest.raises(ValueError, match=r"Strategy \(sandwich\).distill_temperature must be float, got 'hot'"):
        build_strategy({"name": "sandwich", "distill_temperature": "hot"}, small_space, TrainConfig())
    strategy = build_strategy({"name": "sandwich", "distill_temperature": 2}, small_space, TrainConfig())
    assert strategy.options.distill_temperature == 2.0 and isinstance(strategy.options.distill_temperature, float)
    with pytest.raises(ValueError, match=r"unknown arguments \['keep'\] for sampler 'uniform'"):
        build_strategy({"name": "spos", "sampler": {"name": "uniform", "keep": 3}}, small_space, TrainConfig())


def test_sandwich_runs_largest_smallest_then_random(small_space, teacher_path, fixed_batch):
    net = RecordingSupernet(small_space)
    _, strategy = make_strategy("sandwich", small_space, teacher_path, dyna_batch_size=4)
    logs = strategy.train_step(fixed_batch, StepContext(net, seed=0, epoch=0, step=0))
    codes = net.activated
    assert len(codes) == 4
    assert codes[0] == small_space.encode(small_space.largest())
    assert codes[1] == small_space.encode(small_space.smallest())
    assert logs["loss"] == pytest.approx(logs["ce"] + logs["kd"], rel=1e-5)


def test_spos_trains_one_subnet_and_baseline_dyna_batch_size(small_space, teacher_path, fixed_batch):
    for name, expected in (("spos", 1), ("baseline", 3)):
        net = RecordingSupernet(small_space)
        _, strategy = make_strategy(name, small_space, teacher_path, dyna_batch_size=3)
        strategy.train_step(fixed_batch, StepContext(net, seed=0, epoch=0, step=0))
        assert len(net.activated) == expected, name
