"""The ``contrastive`` strategy (MoCo v2 warm-up of the largest subnet, 1st place stage 1):
its InfoNCE value, the queue, the momentum key encoder, the two views, and that its loss falls.

Resume (head, queue and key encoder restored bitwise) and two-process agreement are covered by
the shared tests in test_strategies.py and test_distributed.py, parametrised over the registry.
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from hnas.data import build_contrastive_transform, build_dataset, make_image_folder
from hnas.models import ResNetSuperNet
from hnas.strategies import StepContext, build_strategy
from hnas.strategies.contrastive import TwoViews, _statistics, info_nce
from hnas.trainer import EpochSeededDataset, TrainConfig, build_optimizer


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("images")), num_classes=4, per_class=4,
                             image_size=32, seed=0)


@pytest.fixture()
def batch(image_root):
    views = TwoViews(build_dataset(image_root, "train", 32), build_contrastive_transform(32))
    items = [EpochSeededDataset(views, seed=0)[i] for i in range(8)]
    return tuple(paddle.to_tensor(np.stack([item[j] for item in items])) for j in range(3))


def make(space, **options):
    cfg = TrainConfig(batch_size=8, lr=0.05, scale_lr=False, warmup=0, weight_decay=0.0, max_epoch=1)
    return cfg, build_strategy({"name": "contrastive", "queue_size": 64, **options}, space, cfg)


def numpy_info_nce(q, k, queue, t):
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], axis=1).astype(np.float64) / t
    logits -= logits.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0]))


def unit(rng, *shape):
    x = rng.standard_normal(shape).astype("float32")
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_info_nce_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    q, k, queue = unit(rng, 6, 16), unit(rng, 6, 16), unit(rng, 40, 16)
    for t in (0.1, 0.5):
        value = float(info_nce(*(paddle.to_tensor(a) for a in (q, k, queue)), t))
        assert value == pytest.approx(numpy_info_nce(q, k, queue, t), rel=1e-5)
    # a query equal to its key and orthogonal-ish to the queue costs little; its negation a lot
    assert float(info_nce(paddle.to_tensor(k), paddle.to_tensor(k), paddle.to_tensor(queue), 0.1)) < \
        float(info_nce(paddle.to_tensor(-k), paddle.to_tensor(k), paddle.to_tensor(queue), 0.1))


def test_queue_takes_keys_in_order_and_the_pointer_wraps(small_space):
    _, strategy = make(small_space, queue_size=5, dim=4)
    initial = strategy.queue.numpy().copy()
    np.testing.assert_allclose(np.linalg.norm(initial, axis=1), 1.0, rtol=1e-5)
    keys = np.arange(1, 33, dtype="float32").reshape(8, 4)
    strategy.enqueue(paddle.to_tensor(keys[:3]))
    assert int(strategy.queue_ptr.item()) == 3
    np.testing.assert_array_equal(strategy.queue.numpy()[:3], keys[:3])
    np.testing.assert_array_equal(strategy.queue.numpy()[3:], initial[3:])
    strategy.enqueue(paddle.to_tensor(keys[3:6]))  # positions 3, 4, then 0
    assert int(strategy.queue_ptr.item()) == 1 and strategy.queue_ptr.dtype == paddle.int64
    np.testing.assert_array_equal(strategy.queue.numpy(), keys[[5, 1, 2, 3, 4]])
    strategy.enqueue(paddle.to_tensor(np.concatenate([keys, keys[:1] * -1])))  # 9 > 5: the newest 5 stay
    assert int(strategy.queue_ptr.item()) == (1 + 9) % 5
    expected = np.zeros((5, 4), "float32")
    for i, key in enumerate(np.concatenate([keys, keys[:1] * -1])):
        expected[(1 + i) % 5] = key
    np.testing.assert_array_equal(strategy.queue.numpy(), expected)


def test_a_step_enqueues_its_keys_and_the_key_encoder_is_the_ema(small_space, batch):
    paddle.seed(0)
    net = ResNetSuperNet(small_space)
    cfg, strategy = make(small_space, momentum=0.9)
    ctx = StepContext(net, seed=0, epoch=0, step=0)
    strategy.initialise(net)
    key_state = {k: v.numpy() for k, v in strategy.key_encoder.state_dict().items()}
    for k, v in net.state_dict().items():  # a fresh run starts from a copy of the supernet
        np.testing.assert_array_equal(key_state[k], v.numpy(), err_msg=k)
    keys = strategy.keys(batch[1], ctx).numpy()
    assert all(np.array_equal(key_state[k], v.numpy()) for k, v in strategy.key_encoder.state_dict().items()), \
        "computing keys changed the key encoder"
    optimizer, _ = build_optimizer([p for p in net.parameters() if not p.stop_gradient] +
                                   [p for p in strategy.parameters() if not p.stop_gradient], cfg, 10)
    strategy.train_step(batch, ctx)
    np.testing.assert_allclose(strategy.queue.numpy()[:8], keys, rtol=1e-6, atol=1e-7)
    assert int(strategy.queue_ptr.item()) == 8
    optimizer.step()
    before_key = [t.numpy() for t in strategy._key_tensors()]
    query = [t.numpy() for t in strategy._query_tensors(net)]
    assert any(not np.array_equal(a, b) for a, b in zip(before_key, query)), "the step changed nothing"
    strategy.after_optimizer_step(ctx)
    after = [t.numpy() for t in strategy._key_tensors()]
    m = np.float32(0.9)
    for a, k, q in zip(after, before_key, query):
        np.testing.assert_array_equal(a, k * m + q * np.float32(1.0 - 0.9))
    names = list(strategy.key_encoder.state_dict()) + [f"head.{n}" for n in strategy.key_head.state_dict()]
    assert any(n.endswith("._mean") for n in names), "BN statistics must be part of the EMA"


def test_key_encoder_and_queue_are_checkpointed_state_not_trained(small_space):
    _, strategy = make(small_space)
    state = strategy.state_dict()
    for key in ("queue", "queue_ptr", "initialised", "head.0.weight", "key_head.2.weight",
                "key_encoder.blocks.0.conv.weight", "key_encoder.blocks.0.bn._mean"):
        assert key in state, key
    trainable = {n for n, p in strategy.named_parameters() if not p.stop_gradient}
    assert trainable == {"head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"}
    assert strategy.queue.stop_gradient


def test_a_resumed_run_keeps_its_key_encoder(small_space):
    paddle.seed(0)
    net = ResNetSuperNet(small_space)
    _, strategy = make(small_space)
    paddle.seed(5)
    _, restored = make(small_space)
    restored.initialise(ResNetSuperNet(small_space))  # as if loaded from a checkpoint
    saved = {k: v.numpy() for k, v in restored.state_dict().items()}
    strategy.set_state_dict(restored.state_dict())
    strategy.on_train_begin(type("T", (), {"model": net})())
    for k, v in strategy.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), saved[k], err_msg=k)


def test_two_views_differ_and_are_reproducible(image_root):
    dataset = build_dataset(image_root, "train", 32)
    transform_before = dataset.transform
    views = TwoViews(dataset, build_contrastive_transform(32, color_jitter=True, blur=True))
    assert dataset.transform is transform_before, "the caller's dataset must keep its transform"
    seeded = EpochSeededDataset(views, seed=3)
    first = seeded[5]
    assert len(first) == 3 and first[0].shape == (3, 32, 32) and first[2] == dataset[5][1]
    assert not np.array_equal(first[0], first[1])
    again = EpochSeededDataset(views, seed=3)[5]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    seeded.set_epoch(1)
    assert not np.array_equal(seeded[5][0], first[0])


def test_infonce_falls_on_a_fixed_batch_and_labels_do_not_matter(small_space, batch):
    paddle.seed(0)
    net = ResNetSuperNet(small_space)
    cfg, strategy = make(small_space)
    optimizer, _ = build_optimizer([p for p in net.parameters() if not p.stop_gradient] +
                                   [p for p in strategy.parameters() if not p.stop_gradient], cfg, 10)
    relabelled = (batch[0], batch[1], paddle.zeros_like(batch[2]))
    ctx = StepContext(net, seed=0, epoch=0, step=0)
    queue = strategy.queue.numpy().copy()
    losses = []
    for _ in range(5):
        strategy.queue.set_value(paddle.to_tensor(queue))  # the same negatives every time
        loss = strategy.train_step(batch if not losses else relabelled, ctx)["loss"]
        losses.append(loss)
        optimizer.step()
        optimizer.clear_grad()
        strategy.after_optimizer_step(ctx)
    assert losses[-1] < losses[0] - 0.1, losses


def test_labels_are_not_used(small_space, batch):
    def loss(labels):
        paddle.seed(0)
        net = ResNetSuperNet(small_space)
        _, strategy = make(small_space)
        return strategy.train_step((batch[0], batch[1], labels), StepContext(net, seed=0, epoch=0, step=0))["loss"]

    assert loss(batch[2]) == loss(paddle.zeros_like(batch[2]))


@pytest.mark.parametrize("key_batch_stats", [True, False])
def test_symmetric_and_key_encoder_statistics_untouched_by_its_passes(small_space, batch, key_batch_stats):
    paddle.seed(0)
    net = ResNetSuperNet(small_space)
    _, strategy = make(small_space, symmetric=True, key_batch_stats=key_batch_stats)
    strategy.initialise(net)
    stats = [t.numpy() for t in _statistics(strategy.key_encoder)]
    logs = strategy.train_step(batch, StepContext(net, seed=0, epoch=0, step=0))
    assert np.isfinite(logs["loss"]) and int(strategy.queue_ptr.item()) == 16  # both key sets enqueued
    for a, b in zip(stats, _statistics(strategy.key_encoder)):
        np.testing.assert_array_equal(a, b.numpy())  # only the EMA moves them
    plain = strategy.train_step(batch[::2], StepContext(net, seed=0, epoch=0, step=1))  # (images, labels)
    assert np.isfinite(plain["loss"])


def test_bad_options_fail_by_name(small_space):
    with pytest.raises(ValueError, match="temperature > 0"):
        make(small_space, temperature=0)
    with pytest.raises(ValueError, match=r"unknown Strategy \(contrastive\) keys \['queue'\]"):
        make(small_space, queue=5)
