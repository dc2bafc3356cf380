"""utils/convert_model.py: key layouts round-trip; the official ResNet48 becomes a supernet."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import paddle
import pytest
import yaml

from conftest import randomize_bn_and_prelu
from hnas.models import ResNet, ResNetSuperNet
from hnas.models.pretrained import full_arch
from utils.convert_model import main, to_multi, to_single


def _numpy(state):
    return {k: np.asarray(v.numpy() if isinstance(v, paddle.Tensor) else v) for k, v in state.items()}


def _assert_same_state(actual, expected):
    actual, expected = _numpy(actual), _numpy(expected)
    assert list(actual) == list(expected)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


@pytest.fixture
def supernet_file(small_space, tmp_path):
    state = randomize_bn_and_prelu(ResNetSuperNet(small_space), seed=7).state_dict()
    path = str(tmp_path / "single.pdparams")
    paddle.save(state, path)
    return path, state


def test_multi_and_single_card_layouts_round_trip(supernet_file, tmp_path):
    single, state = supernet_file
    multi, back = str(tmp_path / "multi.pdparams"), str(tmp_path / "back.pdparams")
    main(["to_multi", single, multi])
    multi_state = paddle.load(multi)
    assert all(k.startswith("_layers.") for k in multi_state) and len(multi_state) == len(state)
    main(["to_single", multi[: -len(".pdparams")], back])  # the suffix is optional
    _assert_same_state(paddle.load(back), state)
    _assert_same_state(to_single(to_multi(state)), state)


def test_converters_refuse_the_wrong_layout(supernet_file, tmp_path):
    _, state = supernet_file
    with pytest.raises(ValueError, match="already single-card"):
        to_single(state)
    with pytest.raises(ValueError, match="already multi-GPU"):
        to_multi(to_multi(state))
    mixed = dict(to_multi(state))
    mixed["blocks.0.conv.weight"] = mixed.pop("_layers.blocks.0.conv.weight")
    with pytest.raises(ValueError, match="1 of .* keys lack '_layers.'.*blocks.0.conv.weight"):
        to_single(mixed)


def test_input_is_never_overwritten(supernet_file, tmp_path):
    single, _ = supernet_file
    before = os.path.getmtime(single), os.path.getsize(single)
    with pytest.raises(SystemExit, match="is the input"):
        main(["to_multi", single, single])
    with pytest.raises(SystemExit, match="is the input"):
        main(["to_multi", single[: -len(".pdparams")], single])
    assert (os.path.getmtime(single), os.path.getsize(single)) == before
    out = str(tmp_path / "out.pdparams")
    main(["to_multi", single, out])
    with pytest.raises(SystemExit, match="exists; pass --force"):
        main(["to_multi", single, out])
    main(["to_multi", single, out, "--force"])
    with pytest.raises(SystemExit, match="no checkpoint found"):
        main(["to_multi", str(tmp_path / "absent.pdparams"), str(tmp_path / "x.pdparams")])


@pytest.fixture
def official(small_space, tmp_path):
    """A full 'official' ResNet48 of the small space, saved as the baseline ships it."""
    net = randomize_bn_and_prelu(ResNet(full_arch(small_space), small_space), seed=8)
    net.eval()
    path = str(tmp_path / "resnet48.pdparams")
    paddle.save(net.state_dict(), path)
    config = str(tmp_path / "small.yaml")
    fields = {f.name: getattr(small_space, f.name) for f in dataclasses.fields(small_space) if f.init}
    with open(config, "w") as f:
        yaml.safe_dump({"SearchSpace": json.loads(json.dumps(fields))}, f)
    return net, path, config


def test_official_resnet48_becomes_a_supernet_whose_full_arch_is_it(small_space, official, tmp_path):
    net, path, config = official
    out = str(tmp_path / "supernet.pdparams")
    main(["from_official", path, out, "--config", config])
    supernet = ResNetSuperNet(small_space)
    supernet.set_state_dict(paddle.load(out))
    _assert_same_state(supernet.export(full_arch(small_space)).state_dict(), net.state_dict())


def test_reordered_supernet_computes_the_official_function(small_space, official, tmp_path):
    net, path, config = official
    plain, reordered = str(tmp_path / "plain.pdparams"), str(tmp_path / "reordered.pdparams")
    main(["from_official", path, plain, "--config", config])
    main(["from_official", path, reordered, "--config", config, "--reorder"])
    assert not np.array_equal(paddle.load(plain)["blocks.1.conv1.weight"].numpy(),
                              paddle.load(reordered)["blocks.1.conv1.weight"].numpy())
    supernet = ResNetSuperNet(small_space)
    supernet.set_state_dict(paddle.load(reordered))
    supernet.set_active(full_arch(small_space))
    supernet.eval()
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype("float32"))
    np.testing.assert_allclose(supernet(x).numpy(), net(x).numpy(), atol=1e-4)


def test_official_checkpoint_of_another_space_is_refused_clearly(small_space, official, tmp_path):
    _, _, config = official
    wider = dataclasses.replace(small_space, base_widths=(16, 32, 32, 64))
    path = str(tmp_path / "wider.pdparams")
    paddle.save(ResNet(full_arch(wider), wider).state_dict(), path)
    with pytest.raises(SystemExit, match=r"shape mismatch: blocks\.0\.conv\.weight"):
        main(["from_official", path, str(tmp_path / "out.pdparams"), "--config", config])
    with pytest.raises(SystemExit, match="needs --config"):
        main(["from_official", path, str(tmp_path / "out.pdparams")])
