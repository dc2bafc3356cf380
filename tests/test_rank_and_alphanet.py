"""What alphanet, rank_flops and rank_zen claim: the alpha-divergence equals a float64
reference (value and gradient) and never overflows; the rank loss pushes only the
larger-prior subnet, ramps its weight, and rank_zen's pairs and prior are as documented."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from hnas import losses
from hnas.proxies import ZenPrior, zen_score_once
from hnas.search_space import hamming_distance
from hnas.strategies import StepContext, build_strategy
from hnas.trainer import TrainConfig
from test_strategies import RecordingSupernet


def reference_alpha_divergence(student, teacher, alpha_min=-1.0, alpha_max=1.0, clip=3.0):
    """AlphaNet's definition in float64 probability space, per sample max of the two."""
    def softmax(z):
        z = np.asarray(z, dtype=np.float64)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    q, p = softmax(student), softmax(teacher)
    w = p / q

    def divergence(a):
        if abs(a) < 1e-3:
            return -(q * np.log(np.minimum(w, clip))).sum(-1)
        if abs(a - 1) < 1e-3:
            return (p * np.log(w)).sum(-1)
        return (q * (np.minimum(w ** a, clip) - 1)).sum(-1) / (a * (a - 1))

    return float(np.maximum(divergence(alpha_max), divergence(alpha_min)).mean())


def paddle_alpha(student, teacher, **kwargs):
    s = paddle.to_tensor(np.asarray(student, dtype=np.float32), stop_gradient=False)
    loss = losses.alpha_divergence(s, paddle.to_tensor(np.asarray(teacher, dtype=np.float32)), **kwargs)
    loss.backward()
    return float(loss), s.grad.numpy()


@pytest.mark.parametrize("alphas", [(-1.0, 1.0), (-0.5, 0.5), (0.0, 1.0), (-1.0, 2.0)])
def test_alpha_divergence_value_and_gradient_match_float64(alphas):
    rng = np.random.default_rng(0)
    teacher = rng.normal(0, 2, (6, 10))
    student = teacher + rng.normal(0, 0.1, (6, 10))  # close enough that no weight is clipped
    kwargs = dict(alpha_min=alphas[0], alpha_max=alphas[1], iw_clip=3.0)
    value, grad = paddle_alpha(student, teacher, **kwargs)
    assert value == pytest.approx(reference_alpha_divergence(student, teacher, *alphas), rel=1e-4, abs=1e-6)
    numeric = np.zeros_like(student)
    h = 1e-6
    for index in np.ndindex(*student.shape):
        up, down = student.copy(), student.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (reference_alpha_divergence(up, teacher, *alphas)
                          - reference_alpha_divergence(down, teacher, *alphas)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-6)


def test_alpha_divergence_is_zero_on_agreement_and_finite_at_extreme_logits():
    logits = np.random.default_rng(1).normal(0, 3, (4, 10))
    assert paddle_alpha(logits, logits)[0] == pytest.approx(0.0, abs=1e-6)
    student = np.zeros((3, 10))
    student[:, 0] = [200.0, -200.0, 90.0]  # probabilities of 0 and 1 in float32
    teacher = np.zeros((3, 10))
    teacher[:, 9] = [300.0, 150.0, -90.0]
    value, grad = paddle_alpha(student, teacher)
    assert np.isfinite(value) and np.isfinite(grad).all() and value > 1.0
    expected = reference_alpha_divergence(student, teacher)
    assert np.isfinite(expected) and value == pytest.approx(expected, rel=1e-4)


def test_rank_hinge_pushes_only_the_larger_prior_subnet():
    large = paddle.to_tensor(2.0, stop_gradient=False)
    small = paddle.to_tensor(1.5, stop_gradient=False)
    loss = losses.pairwise_rank_hinge(large, small, margin=0.1)
    loss.backward()
    assert float(loss) == pytest.approx(0.6)
    assert float(large.grad) == 1.0 and small.grad is None
    assert float(losses.pairwise_rank_hinge(paddle.to_tensor(1.0), paddle.to_tensor(1.5))) == 0.0


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return (paddle.to_tensor(rng.normal(size=(8, 3, 32, 32)).astype("float32")),
            paddle.to_tensor(rng.integers(0, 10, 8)))


def test_rank_flops_weight_pairs_and_loss(small_space, batch):
    cfg = TrainConfig(dyna_batch_size=3)
    strategy = build_strategy({"name": "rank_flops", "num_pairs": 3, "margin": 0.05}, small_space, cfg)
    assert [strategy.rank_weight(e) for e in (0, 5, 10, 30)] == [0.0, 0.5, 1.0, 2.0]
    net = RecordingSupernet(small_space)
    logs = strategy.train_step(batch, StepContext(net, seed=0, epoch=0, step=0))
    assert len(net.activated) == 3 and logs["rank"] == 0.0  # first epoch: no pair forward passes at all
    net.activated.clear()
    logs = strategy.train_step(batch, StepContext(net, seed=0, epoch=20, step=0))
    pairs = net.activated[3:]
    assert len(pairs) == 6
    expected = 0.0
    images, labels = batch
    with paddle.no_grad():  # recompute each pair's hinge apart from training (batch statistics)
        for a, b in zip(pairs[0::2], pairs[1::2]):
            ce = []
            for code in (a, b):
                net.set_active(code)
                ce.append(float(losses.cross_entropy(net(images), labels)))
            fa, fb = small_space.flops(a), small_space.flops(b)
            if fa != fb:
                large, small = (ce[0], ce[1]) if fa > fb else (ce[1], ce[0])
                expected += max(0.0, large - small + 0.05)
    assert logs["rank"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    sandwich_part = logs["ce"] + logs["kd"]
    assert logs["loss"] == pytest.approx(sandwich_part + 2.0 * logs["rank"], rel=1e-5)


def test_rank_zen_pairs_are_far_apart_and_prior_is_a_zen_score(small_space, batch):
    strategy = build_strategy("rank_zen", small_space, TrainConfig(dyna_batch_size=2))
    archs = strategy.pair_sampler.draw(np.random.default_rng(0), 20)
    for a, b in zip(archs[0::2], archs[1::2]):
        assert hamming_distance(small_space.encode(a), small_space.encode(b), start=5) >= 33
    prior = strategy.zen
    code = small_space.encode(archs[0])
    exported = prior.model.export(code)
    assert prior(code) == pytest.approx(zen_score_once(exported, prior.inputs, prior.noise), rel=1e-5)
    assert code in prior.cache and prior(archs[0]) == prior.cache[code]
    assert prior(small_space.largest()) > prior(small_space.smallest()) + 5
    assert ZenPrior(small_space)(code) == prior(code)  # a function of (space, seed), not of history
