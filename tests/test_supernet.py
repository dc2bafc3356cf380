"""Supernet: runs exactly the active subnet, exports it, trains only its slice, loads ResNet48."""
from __future__ import annotations

import dataclasses

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from hnas.models import ResNet, ResNetSuperNet
from hnas.models.pretrained import build_teacher, full_arch, load_resnet48_pretrained, reorder_mid_channels
from hnas.sampling import UniformSampler, make_rng
import paddleslim_ext.layers as paddleslim_layers
from paddleslim_ext import SuperBatchNorm2D, SuperConv2D, SuperLinear

ATOL = 1e-4


def _images(space, n=2, seed=0):
    size = space.image_sizes[0]
    return paddle.to_tensor(np.random.default_rng(seed).normal(size=(n, space.in_channels, size, size)),
                            dtype="float32")


def _max_diff(a, b) -> float:
    return float(paddle.abs(a - b).max())


def _test_archs(space, n_random):
    sampler = UniformSampler(space)
    return [space.largest(), space.smallest()] + [sampler.sample(make_rng(1, i)) for i in range(n_random)]


# ----------------------------------------------------------------------------- supernet == export
def test_supernet_equals_exported_subnet_on_many_archs(small_space, randomize_bn):
    supernet = randomize_bn(ResNetSuperNet(small_space), seed=1)
    supernet.eval()
    x = _images(small_space)
    archs = _test_archs(small_space, 20)
    for arch in archs:
        supernet.set_active(arch)
        expected = supernet(x)
        subnet = supernet.export()
        subnet.eval()
        assert subnet.arch == arch
        assert _max_diff(subnet(x), expected) < ATOL, small_space.encode(arch)
    # different archs really compute different functions (the comparison is not vacuous)
    supernet.set_active(archs[0])
    large = supernet(x)
    supernet.set_active(archs[1])
    assert _max_diff(supernet(x), large) > 1e-2


def test_training_step_inside_equals_the_exported_net(small_space, randomize_bn):
    """The step ``benchmarks/supernet_overhead.py`` times: same logits, gradients, BN updates."""
    supernet = randomize_bn(ResNetSuperNet(small_space), seed=4)
    x, labels = _images(small_space, n=4), paddle.to_tensor([0, 1, 2, 3])
    for arch in _test_archs(small_space, 2):
        supernet.set_active(arch)
        subnet = supernet.export()
        supernet.train()
        subnet.train()
        inside, alone = supernet(x), subnet(x)
        assert _max_diff(inside, alone) < ATOL, small_space.encode(arch)
        F.cross_entropy(inside, labels).backward()
        F.cross_entropy(alone, labels).backward()
        shared = dict(supernet.named_parameters())
        active = supernet.active_blocks()
        for name, param in subnet.named_parameters():
            _, index, rest = name.split(".", 2)
            source = shared[f"blocks.{active[int(index)]}.{rest}"]
            corner = tuple(slice(0, n) for n in param.shape)
            if param.trainable:  # same gradient, in the active corner of the shared parameter
                np.testing.assert_allclose(source.grad.numpy()[corner], param.grad.numpy(),
                                           rtol=1e-4, atol=1e-5, err_msg=name)
            else:  # BN running statistics: the same training-mode update
                np.testing.assert_allclose(source.numpy()[corner], param.numpy(), rtol=1e-5, atol=1e-6,
                                           err_msg=name)
        supernet.clear_gradients()


def test_active_blocks_follow_set_active_and_are_the_callers_own_list(small_space):
    supernet = ResNetSuperNet(small_space)
    supernet.eval()
    arch = supernet.set_active(small_space.smallest())
    expected = [0] + [i for s, blocks in enumerate(supernet.stage_blocks) for i in blocks[:arch.depths[s]]]
    expected.append(len(supernet.blocks) - 1)
    assert supernet.active_blocks() == expected
    x = _images(small_space)
    before = supernet(x)
    supernet.active_blocks().clear()  # a caller's edit must not change what forward runs
    assert supernet.active_blocks() == expected
    assert _max_diff(supernet(x), before) == 0.0
    supernet.set_active(small_space.largest())
    assert len(supernet.active_blocks()) == len(supernet.blocks)


def test_export_of_another_arch_keeps_the_active_one(small_space):
    supernet = ResNetSuperNet(small_space)
    active = supernet.set_active(small_space.smallest())
    subnet = supernet.export(small_space.largest())
    assert subnet.arch == small_space.largest()
    assert supernet.active_arch() == active


@pytest.mark.parametrize("activation", ["relu", "mish", "prelu", "swish"])
def test_every_activation_builds_and_matches_its_export(small_space, randomize_bn, activation):
    space = dataclasses.replace(small_space, activation=activation)
    supernet = randomize_bn(ResNetSuperNet(space), seed=2)
    supernet.eval()
    x = _images(space)
    for arch in _test_archs(space, 1):
        supernet.set_active(arch)
        subnet = supernet.export()
        subnet.eval()
        assert _max_diff(subnet(x), supernet(x)) < ATOL


def test_activations_differ(small_space):
    outputs = []
    for activation in ("relu", "mish", "prelu", "swish"):
        paddle.seed(0)
        net = ResNetSuperNet(dataclasses.replace(small_space, activation=activation))
        net.eval()
        outputs.append(net(_images(small_space)))
    for i in range(len(outputs)):
        for j in range(i):
            assert _max_diff(outputs[i], outputs[j]) > 1e-3


# ----------------------------------------------------------------------------- gradients
def test_gradient_reaches_only_the_active_slice(small_space):
    supernet = ResNetSuperNet(small_space)
    supernet.train()
    arch = UniformSampler(small_space).sample(make_rng(0, 4))
    assert arch.depths != small_space.max_depths
    supernet.set_active(arch)
    logits = supernet(_images(small_space, n=4))
    F.cross_entropy(logits, paddle.to_tensor([0, 1, 2, 3])).backward()

    active = set(supernet.active_blocks())
    corners = _active_corners(supernet)
    checked = 0
    for name, param in supernet.named_parameters():
        if not param.trainable:
            continue  # BN running statistics
        index = int(name.split(".")[1])
        grad = None if param.grad is None else param.grad.numpy()
        if index not in active:
            assert grad is None or not np.any(grad), f"{name} is in an inactive block but got a gradient"
            continue
        assert grad is not None, f"{name} is active but got no gradient"
        corner = tuple(slice(0, n) for n in corners[name.rsplit(".", 1)[0]][:grad.ndim])
        outside = grad.copy()
        outside[corner] = 0
        assert not np.any(outside), f"{name}: gradient outside the active corner {grad[corner].shape}"
        # per (out, in) channel pair: at 1x1 feature maps only a 3x3 kernel's centre tap is used
        inside = np.abs(grad[corner])
        per_channel = inside.sum(axis=(2, 3)) if inside.ndim == 4 else inside
        assert np.count_nonzero(per_channel) > 0.5 * per_channel.size, f"{name}: active slice got no gradient"
        checked += 1
    assert checked > 40


def _active_corners(supernet) -> dict:
    """Layer name -> leading (out, in) channels the active subnet uses (fc: (in, out))."""
    w, space = supernet.active_widths(), supernet.space
    corners = {"blocks.0.conv": (w.stem, space.in_channels), "blocks.0.bn": (w.stem,)}
    cin = w.stem
    for s, blocks in enumerate(supernet.stage_blocks):
        for b, mid in enumerate(w.conv1[s]):
            prefix, out = f"blocks.{blocks[b]}", w.stage[s]
            corners.update({f"{prefix}.conv1": (mid, cin), f"{prefix}.bn1": (mid,),
                            f"{prefix}.conv2": (out, mid), f"{prefix}.bn2": (out,),
                            f"{prefix}.downsample.0": (out, cin), f"{prefix}.downsample.1": (out,)})
            cin = out
    corners[f"blocks.{len(supernet.blocks) - 1}.fc"] = (cin, space.num_classes)
    return corners


# ----------------------------------------------------------------------------- SuperBatchNorm2D
@pytest.mark.parametrize("in_channels, out_channels", [(6, 5), (8, 8), (8, 3), (2, 8)])
def test_super_conv_uses_the_leading_filters(in_channels, out_channels):
    conv = SuperConv2D(8, 8, 3, stride=2, padding=1)
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, in_channels, 7, 7)), dtype="float32")
    weight = paddle.to_tensor(conv.weight.numpy()[:out_channels, :in_channels])
    bias = paddle.to_tensor(conv.bias.numpy()[:out_channels])
    expected = F.conv2d(x, weight, bias, stride=2, padding=1)
    assert _max_diff(conv(x, channel=out_channels), expected) < 1e-6


def test_super_conv_refuses_more_channels_than_it_holds():
    conv = SuperConv2D(4, 4, 1)
    with pytest.raises(ValueError, match="cannot take 6 leading channels of a dimension of 4"):
        conv(paddle.ones([1, 4, 2, 2]), channel=6)


def test_leading_passes_a_full_width_tensor_through_and_cuts_the_rest():
    tensor = paddle.arange(24, dtype="float32").reshape([4, 6])
    assert paddleslim_layers.leading(tensor, 4) is tensor
    assert paddleslim_layers.leading(tensor, 6, axis=1) is tensor
    np.testing.assert_array_equal(paddleslim_layers.leading(tensor, 3, axis=1).numpy(), tensor.numpy()[:, :3])
    with pytest.raises(ValueError, match="cannot take 0 leading channels"):
        paddleslim_layers.leading(tensor, 0)


@pytest.mark.parametrize("in_features, out_features", [(6, 5), (8, 7), (3, 7), (8, None)])
def test_super_linear_uses_the_leading_corner_and_its_gradient_stays_there(in_features, out_features):
    linear = SuperLinear(8, 7)
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(3, in_features)), dtype="float32")
    out = 7 if out_features is None else out_features
    weight, bias = linear.weight.numpy()[:in_features, :out], linear.bias.numpy()[:out]
    logits = linear(x, channel=out_features)
    np.testing.assert_allclose(logits.numpy(), x.numpy() @ weight + bias, rtol=1e-5, atol=1e-6)
    logits.sum().backward()
    grad = linear.weight.grad.numpy()
    column_sums = np.repeat(x.numpy().sum(0)[:, None], out, axis=1)  # d(sum of logits) / dW
    np.testing.assert_allclose(grad[:in_features, :out], column_sums, rtol=1e-5)
    assert not grad[in_features:].any() and not grad[:, out:].any()
    np.testing.assert_array_equal(linear.bias.grad.numpy(), [3.0] * out + [0.0] * (7 - out))


def test_super_linear_refuses_more_features_than_it_holds():
    with pytest.raises(ValueError, match="cannot take 9 leading channels of a dimension of 8"):
        SuperLinear(8, 4)(paddle.ones([1, 9]))


@pytest.mark.parametrize("slices_are_views", [True, False])
def test_super_batch_norm_partial_width_training_updates_only_its_channels(monkeypatch, slices_are_views):
    if not slices_are_views:  # the write-back path taken where Paddle slices into copies
        monkeypatch.setattr(paddleslim_layers, "_sliced_statistics_update_in_place", lambda: False)
    x = paddle.to_tensor(np.random.default_rng(0).normal(3.0, 2.0, (8, 5, 4, 4)), dtype="float32")
    bn = SuperBatchNorm2D(8)
    bn.eval()
    bn(x)  # a first call in eval mode must not freeze the layer into eval behaviour
    bn.train()
    bn(x)
    reference = paddle.nn.BatchNorm2D(5)
    reference.train()
    reference(x)
    np.testing.assert_allclose(bn._mean.numpy()[:5], reference._mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn._variance.numpy()[:5], reference._variance.numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(bn._mean.numpy()[5:] == 0) and np.all(bn._variance.numpy()[5:] == 1)
    assert np.all(np.abs(bn._mean.numpy()[:5]) > 0.1)


@pytest.mark.parametrize("channels", [5, 8])
def test_super_batch_norm_eval_uses_running_statistics_after_training(channels):
    rng = np.random.default_rng(1)
    bn = SuperBatchNorm2D(8)
    bn.train()
    for _ in range(3):
        bn(paddle.to_tensor(rng.normal(3.0, 2.0, (8, channels, 4, 4)), dtype="float32"))
    bn.eval()
    x = paddle.to_tensor(rng.normal(-1.0, 0.5, (4, channels, 4, 4)), dtype="float32")
    mean = bn._mean.numpy()[:channels].reshape(1, -1, 1, 1)
    var = bn._variance.numpy()[:channels].reshape(1, -1, 1, 1)
    expected = (x.numpy() - mean) / np.sqrt(var + bn._epsilon)
    np.testing.assert_allclose(bn(x).numpy(), expected, rtol=1e-4, atol=1e-4)
    running = bn._mean.numpy().copy()
    bn(x)
    assert np.array_equal(bn._mean.numpy(), running)  # eval never updates statistics


# ----------------------------------------------------------------------------- pretrained ResNet48
@pytest.fixture
def official_checkpoint(tmp_path, small_space, randomize_bn):
    """A fake official ``resnet48.pdparams``: a full stand-alone ResNet, saved with paddle.save."""
    full = randomize_bn(ResNet(full_arch(small_space), small_space), seed=3)
    full.eval()
    path = str(tmp_path / "resnet48.pdparams")
    paddle.save(full.state_dict(), path)
    return full, path


def test_full_arch_is_the_largest_and_the_supernet_shape(small_space):
    assert full_arch(small_space) == small_space.largest()
    assert small_space.widths(full_arch(small_space)) == small_space.max_widths()
    restricted = dataclasses.replace(small_space, sample_codes=((2, 3),) * 4)
    assert full_arch(restricted).stage_codes == (1, 1, 1, 1)


@pytest.mark.parametrize("reorder", [False, True])
def test_loading_the_official_checkpoint_reproduces_the_full_resnet(small_space, official_checkpoint,
                                                                    reorder):
    full, path = official_checkpoint
    supernet = load_resnet48_pretrained(ResNetSuperNet(small_space), path, reorder=reorder)
    supernet.eval()
    supernet.set_active(small_space.largest())
    x = _images(small_space)
    assert _max_diff(supernet(x), full(x)) < ATOL
    conv1 = supernet.blocks[1].conv1.weight.numpy()
    assert np.array_equal(conv1, full.blocks[1].conv1.weight.numpy()) != reorder


def test_loading_names_missing_unexpected_and_mismatched_keys(small_space, official_checkpoint):
    _, path = official_checkpoint
    state = paddle.load(path)
    del state["blocks.3.bn1._mean"]
    state["blocks.2.extra.weight"] = paddle.zeros([1])
    state["blocks.0.conv.weight"] = paddle.zeros([4, 3, 7, 7])
    with pytest.raises(ValueError) as info:
        load_resnet48_pretrained(ResNetSuperNet(small_space), state, reorder=False)
    message = str(info.value)
    assert "missing: blocks.3.bn1._mean" in message
    assert "unexpected: blocks.2.extra.weight" in message
    assert "blocks.0.conv.weight: checkpoint [4, 3, 7, 7] vs model [8, 3, 7, 7]" in message


@pytest.mark.parametrize("model_kind", ["supernet", "resnet"])
def test_reorder_permutes_mid_channels_and_keeps_outputs(small_space, randomize_bn, model_kind):
    if model_kind == "supernet":
        model = ResNetSuperNet(small_space)
    else:
        model = ResNet(UniformSampler(small_space).sample(make_rng(0, 1)), small_space)
    randomize_bn(model, seed=4)
    model.eval()
    x = _images(small_space)
    before_out = model(x)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    reorder_mid_channels(model)
    after = {k: v.numpy() for k, v in model.state_dict().items()}
    assert _max_diff(model(x), before_out) < ATOL

    moved = 0
    for key in before:
        if key.endswith("conv1.weight"):
            importance = np.abs(after[key.replace("conv1", "conv2")]).sum(axis=(0, 2, 3))
            assert np.all(np.diff(importance) <= 0), f"{key}: mid channels not sorted by importance"
            rows = sorted(map(bytes, before[key]))
            assert sorted(map(bytes, after[key])) == rows, f"{key}: not a permutation of the rows"
            moved += not np.array_equal(before[key], after[key])
        elif ".bn1." not in key and ".conv2." not in key:
            assert np.array_equal(before[key], after[key]), f"{key} is not a mid channel but changed"
    assert moved >= 5


def test_teacher_is_frozen_in_eval_mode_and_keeps_the_checkpoint_order(small_space, official_checkpoint):
    full, path = official_checkpoint
    teacher = build_teacher(small_space, path)
    assert not teacher.training
    assert all(p.stop_gradient for p in teacher.parameters())
    assert teacher.arch == full_arch(small_space)
    for key, value in full.state_dict().items():
        assert np.array_equal(teacher.state_dict()[key].numpy(), value.numpy()), key
    x = _images(small_space)
    assert _max_diff(teacher(x), full(x)) < ATOL
