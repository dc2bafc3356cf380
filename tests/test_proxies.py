"""Zero-cost proxies against hand (numpy) computations on tiny networks."""
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from hnas.models import ResNet
from hnas.proxies import (init_weights, plain_features, score_archs, snip_proxy, snip_score,
                          synflow_proxy, synflow_score, zen_proxy, zen_score_once)
from hnas.registry import PROXIES
from hnas.sampling import make_rng
from hnas.search_space import ArchCodeError, SearchSpace


def mlp(rng, batch_norm=False):
    """Linear(4, 3) [-> BN1D] -> ReLU -> Linear(3, 2) with random weights and biases."""
    layers = [nn.Linear(4, 3)] + ([nn.BatchNorm1D(3)] if batch_norm else []) + [nn.ReLU(), nn.Linear(3, 2)]
    net = nn.Sequential(*layers)
    for p in net.parameters():
        if not p.stop_gradient:  # Paddle keeps BN statistics as non-trainable parameters
            p.set_value(rng.normal(0, 1, p.shape).astype("float32"))
    return net


def test_registry_has_every_proxy():
    assert {"flops", "params", "zen", "snip", "synflow"} <= set(PROXIES.names())


def test_flops_and_params_proxies_equal_search_space(small_space, track1_codes):
    codes = track1_codes[:6]
    assert score_archs(small_space, codes, "flops") == [float(small_space.flops(c)) for c in codes]
    assert score_archs(small_space, codes, "params") == [float(small_space.params(c)) for c in codes]


def test_score_archs_validates_first_and_reports_progress(small_space, track1_codes):
    calls = []
    scores = score_archs(small_space, track1_codes[:3], "flops", progress=lambda d, t: calls.append((d, t)))
    assert len(scores) == 3 and calls == [(1, 3), (2, 3), (3, 3)]
    bad = track1_codes[:2] + ["1952233313000000223212122253130000000000006515000000"]
    with pytest.raises(ArchCodeError, match="#2"):
        score_archs(small_space, bad, lambda space, arch: pytest.fail("scored before validation"))
    with pytest.raises(KeyError, match="unknown proxy 'nope'"):
        score_archs(small_space, track1_codes[:1], "nope")


def test_snip_matches_numpy_backprop():
    rng = np.random.default_rng(0)
    net = mlp(rng)
    x = rng.normal(0, 1, (5, 4)).astype("float32")
    y = np.array([0, 1, 1, 0, 1])
    w1, b1, w2, b2 = (p.numpy().astype(np.float64) for p in net.parameters())
    pre = x @ w1 + b1
    h = np.maximum(pre, 0)
    z = h @ w2 + b2
    prob = np.exp(z - z.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    dz = (prob - np.eye(2)[y]) / len(y)
    dw2 = h.T @ dz
    dw1 = x.T @ ((dz @ w2.T) * (pre > 0))
    expected = np.abs(w1 * dw1).sum() + np.abs(w2 * dw2).sum()
    before = [p.numpy().copy() for p in net.parameters()]
    assert snip_score(net, x, y) == pytest.approx(expected, rel=1e-5)
    for p, old in zip(net.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), old)
        assert p.grad is None
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        snip_score(net, x, np.array([0, 1, 2, 0, 1]))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_synflow_matches_numpy(batch_norm):
    rng = np.random.default_rng(1)
    net = mlp(rng, batch_norm)
    params = [p.numpy().astype(np.float64) for p in net.parameters() if not p.stop_gradient]
    a1, c1 = np.abs(params[0]), np.abs(params[1])
    pre = np.ones((1, 4)) @ a1 + c1
    if batch_norm:  # eval mode: |stored statistics|, |gamma| and |beta|
        bn = net[1]
        mean = rng.normal(0, 1, 3).astype("float32").astype(np.float64)
        var = rng.uniform(0.5, 2, 3).astype("float32").astype(np.float64)
        bn._mean.set_value(mean.astype("float32"))
        bn._variance.set_value(var.astype("float32"))
        gamma, beta = np.abs(params[2]), np.abs(params[3])
        scale = gamma / np.sqrt(var + 1e-5)
        h_pre = (pre - np.abs(mean)) * scale + beta
    else:
        scale, h_pre = np.ones(3), pre
    a2 = np.abs(params[-2])
    h = np.maximum(h_pre, 0)
    dh = np.ones((1, 2)) @ a2.T * (h_pre > 0)  # d(sum out)/dh through ReLU
    da1 = np.ones((4, 1)) @ (dh * scale)
    expected = (a1 * da1).sum() + (a2 * (h.T @ np.ones((1, 2)))).sum()
    before = [p.numpy().copy() for p in net.parameters()]
    assert synflow_score(net, (4,)) == pytest.approx(expected, rel=1e-9)
    for p, old in zip(net.parameters(), before):  # the model itself is untouched
        assert p.dtype == paddle.float32
        np.testing.assert_array_equal(p.numpy(), old)


def test_init_weights_schemes(small_space):
    model = ResNet(small_space.largest(), small_space)
    conv = model.blocks[1].conv1  # [16, 16, 3, 3] at tiny widths
    init_weights(model, make_rng(0), "gaussian")
    assert conv.weight.numpy().std() == pytest.approx(1.0, rel=0.1)
    assert np.all(model.blocks[1].bn1.weight.numpy() == 1) and np.all(model.blocks[1].bn1.bias.numpy() == 0)
    init_weights(model, make_rng(0), "kaiming")
    fan_in = int(np.prod(conv.weight.shape[1:]))
    assert conv.weight.numpy().std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.1)
    with pytest.raises(ValueError, match="unknown init scheme"):
        init_weights(model, make_rng(0), "xavier")


def _reference_zen(model, x, noise, alpha):
    """Zen-score of a stem + one block per stage network, written out layer by layer."""
    log_stds = []

    def bn(t, record):
        mean, var = t.mean(axis=(0, 2, 3), keepdims=True), t.var(axis=(0, 2, 3), keepdims=True)
        if record:
            log_stds.append(0.5 * np.log(var.mean()))
        return (t - mean) / np.sqrt(var + 1e-5)  # gamma = 1, beta = 0

    def conv(t, layer, stride, padding):
        return F.conv2d(paddle.to_tensor(t.astype("float32")), layer.weight, stride=stride,
                        padding=padding).numpy().astype(np.float64)

    def features(t, record):
        stem = model.blocks[0]
        t = np.maximum(bn(conv(t, stem.conv, 2, 3), record), 0)
        t = F.max_pool2d(paddle.to_tensor(t.astype("float32")), 3, 2, 1).numpy().astype(np.float64)
        for i, block in enumerate(model.blocks[1:-1]):
            t = np.maximum(bn(conv(t, block.conv1, 1 if i == 0 else 2, 1), record), 0)
            t = np.maximum(bn(conv(t, block.conv2, 1, 1), record), 0)  # no shortcut added
        return t

    clean, perturbed = features(x, True), features(x + alpha * noise, False)
    delta = np.sqrt(((clean - perturbed) ** 2).reshape(len(x), -1).sum(1)).mean()
    return np.log(delta) + sum(log_stds), len(log_stds)


def test_zen_score_matches_layer_by_layer_reference():
    space = SearchSpace(base_widths=(4, 8), depth_ranges=((1, 1), (1, 1)), width_ratios=(1.0,),
                        channel_divisor=2, image_sizes=(16,), num_classes=3)
    model = ResNet("1111111", space)
    assert model.blocks[2].downsample is not None  # stage 2 has a projection shortcut to drop
    rng = make_rng(5)
    init_weights(model, rng, "gaussian")
    x, noise = rng.standard_normal((4, 3, 16, 16)), rng.standard_normal((4, 3, 16, 16))
    expected, num_bn = _reference_zen(model, x, noise, 0.01)
    assert num_bn == 5  # stem + 2 per block; the projection's BN is not on the plain path
    assert zen_score_once(model, x, noise, 0.01) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(FloatingPointError, match="perturbation vanished"):
        zen_score_once(model, x, noise, 0.0)


def test_plain_features_drop_the_shortcuts(small_space, track1_codes):
    model = ResNet(track1_codes[0], small_space)
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(0).normal(0, 1, (2, 3, 32, 32)).astype("float32"))
    with paddle.no_grad():
        residual = x
        for block in model.blocks[:-1]:
            residual = block(residual)
        log_stds = []
        plain = plain_features(model, x, log_stds)
    assert plain.shape == residual.shape
    assert not np.allclose(plain.numpy(), residual.numpy())
    assert len(log_stds) == 1 + 2 * sum(small_space.parse(track1_codes[0]).depths)


def test_zen_is_deterministic_and_grows_with_the_network(small_space, track1_codes):
    code = track1_codes[0]
    first = zen_proxy(small_space, code, seed=0, repeats=2, batch_size=4)
    assert zen_proxy(small_space, code, seed=0, repeats=2, batch_size=4) == first
    assert zen_proxy(small_space, code, seed=1, repeats=2, batch_size=4) != first
    small = zen_proxy(small_space, small_space.smallest(), repeats=2, batch_size=4)
    large = zen_proxy(small_space, small_space.largest(), repeats=2, batch_size=4)
    assert large > small + 10  # 23 vs 8 blocks: each BN adds about log sqrt(4.5 * width)


def test_snip_and_synflow_proxies(small_space):
    small, large = small_space.smallest(), small_space.largest()
    assert snip_proxy(small_space, large) == snip_proxy(small_space, large)
    assert snip_proxy(small_space, large) > snip_proxy(small_space, small)
    assert synflow_proxy(small_space, large) > synflow_proxy(small_space, small)
    assert math.isfinite(synflow_proxy(small_space, large))
    rng = np.random.default_rng(0)
    images = rng.normal(0, 1, (4, 3, 32, 32)).astype("float32")
    real = snip_proxy(small_space, large, inputs=images, labels=np.array([0, 1, 2, 3]))
    assert real > 0 and real != snip_proxy(small_space, large)
    with pytest.raises(ValueError, match="without labels"):
        snip_proxy(small_space, large, inputs=images)
