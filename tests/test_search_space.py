"""Arch-code grammar, widths, facts of the Track-1 list, and analytic FLOPs/params."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from hnas.io import read_arch_json
from hnas.models import ResNet
from hnas.sampling import UniformSampler, make_rng
from hnas.search_space import (Arch, ArchCodeError, SearchSpace, make_divisible,
                               validate_codes)

# A valid Track-1 code with stages of depth 3/2/5/4 (none at its maximum), stem = stage 1.
VALID = "1" + "3254" + "2" + "12" "32" "22" "00" "00" + "33" "13" "00" "00" "00" \
        + "55" "15" "35" "25" "45" "00" "00" "00" + "71" "11" "61" "51" "00"


def _set(code: str, pos: int, digit: str) -> str:
    return code[:pos] + digit + code[pos + 1:]


# ----------------------------------------------------------------------------- round trip
def test_valid_fixture_code_parses(imagenet_space):
    arch = imagenet_space.parse(VALID)
    assert arch.depths == (3, 2, 5, 4)
    assert arch.stage_codes == (2, 3, 5, 1)
    assert arch.conv1_codes[0] == (1, 3, 2)
    assert arch.conv1_codes[3] == (7, 1, 6, 5)


def test_round_trip_of_all_track1_codes(imagenet_space, track1_codes):
    assert len(track1_codes) == 45_000
    for code in track1_codes:
        arch = imagenet_space.parse(code)
        assert imagenet_space.encode(arch) == code
        assert imagenet_space.parse(code[1:]) == arch
        assert imagenet_space.encode(arch, with_image=False) == code[1:]
    assert all(imagenet_space.normalize(c[1:]) == c for c in track1_codes[::100])


def test_surrounding_whitespace_is_ignored(imagenet_space):
    assert imagenet_space.normalize(f"  {VALID}\n") == VALID


# ----------------------------------------------------------------------------- invalid codes
@pytest.mark.parametrize("code, fragments", [
    (VALID[:50], ["50 digits", "expected 52", "or 51"]),
    (VALID + "0", ["53 digits", "expected 52"]),
    (_set(VALID, 7, "x"), ["non-digit 'x'", "position 7"]),
    (_set(VALID, 0, "2"), ["image-size code 2", "position 0"]),
    (_set(VALID, 1, "1"), ["stage 1 depth 1", "position 1", "[2, 5]"]),
    (_set(VALID, 1, "6"), ["stage 1 depth 6", "position 1", "[2, 5]"]),
    (_set(VALID, 3, "9"), ["stage 3 depth 9", "position 3", "[2, 8]"]),
    # stage 1 block 4 (positions 12-13) lies past depth 3
    (_set(VALID, 12, "1"),
     ["stage 1 block 4", "positions 12-13", "past the stage depth 3", "must be 00", "10"]),
    (_set(VALID, 13, "2"), ["stage 1 block 4", "positions 12-13", "must be 00", "02"]),
    # a zero inside the depth: stage 2 block 2 conv1 (position 18)
    (_set(VALID, 18, "0"), ["stage 2 block 2 conv1", "width code 0", "position 18", "1..7"]),
    (_set(VALID, 17, "0"), ["stage 2 block 1 conv2", "width code 0", "position 17"]),
    (_set(VALID, 26, "8"), ["stage 3 block 1 conv1", "width code 8", "position 26", "1..7"]),
    (_set(VALID, 5, "9"), ["stem width code 9", "position 5"]),
    # broken residual tie: stage 3 block 2 conv2 (position 29) differs from the other conv2s
    (_set(VALID, 29, "4"), ["conv2 codes of stage 3 must be equal", "[5, 4, 5, 5, 5]"]),
    (_set(VALID, 5, "3"), ["stem code 3", "stage 1's conv2 code 2"]),
])
def test_invalid_codes_say_what_and_where(imagenet_space, code, fragments):
    with pytest.raises(ArchCodeError) as info:
        imagenet_space.parse(code)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_non_string_code_is_rejected(imagenet_space):
    with pytest.raises(ArchCodeError, match="string of digits, got int"):
        imagenet_space.parse(int(VALID))


def test_validate_codes_names_the_bad_arch(imagenet_space):
    codes = [VALID, VALID, _set(VALID, 3, "9")]
    with pytest.raises(ArchCodeError, match=r"^arch3: .*stage 3 depth 9"):
        validate_codes(imagenet_space, codes, names=["arch1", "arch2", "arch3"])
    validate_codes(imagenet_space, codes[:2])


def test_read_arch_json_rejects_entries_without_arch(tmp_path):
    path = tmp_path / "archs.json"
    path.write_text('{"arch1": {"acc": 0.0}}')
    with pytest.raises(ValueError, match="'arch1' must be an object with an 'arch' field"):
        read_arch_json(str(path))


# ----------------------------------------------------------------------------- widths
@pytest.mark.parametrize("base, widths", [
    (64, [64, 64, 56, 56, 48, 48, 48]),
    (128, [128, 120, 112, 112, 104, 96, 88]),
    (256, [256, 240, 232, 216, 208, 192, 176]),
    (512, [512, 488, 464, 432, 408, 384, 360]),
])
def test_make_divisible_matches_the_baseline_width_table(imagenet_space, base, widths):
    ratios = imagenet_space.width_ratios
    assert [make_divisible(base * r, 8) for r in ratios] == widths
    assert list(imagenet_space.stage_widths(imagenet_space.base_widths.index(base))) == widths


def test_make_divisible_never_rounds_below_ninety_percent():
    assert make_divisible(10, 8) == 16  # nearest multiple 8 would lose 20%
    assert make_divisible(3, 8) == 8  # never below the divisor
    for value in np.linspace(1, 600, 2000):
        assert make_divisible(value, 8) >= 0.9 * value
        assert make_divisible(value, 8) % 8 == 0


# ----------------------------------------------------------------------------- the Track-1 list
def test_facts_of_the_track1_list(imagenet_space, track1_codes):
    assert len(set(track1_codes)) == 45_000
    assert all(len(c) == 52 and c[0] == "1" for c in track1_codes)
    archs = [imagenet_space.parse(c) for c in track1_codes]
    assert len({a.depths for a in archs}) == 4 * 4 * 7 * 4
    for stage, top in enumerate((3, 3, 5, 7)):
        used = {c for a in archs for c in (*a.conv1_codes[stage], a.stage_codes[stage])}
        assert used == set(range(1, top + 1)), f"stage {stage + 1}"
    assert {a.stem_code for a in archs} == {1, 2, 3}
    assert imagenet_space.encode(imagenet_space.largest()) not in set(track1_codes)


def _projections(space: SearchSpace, arch) -> int:
    w = space.widths(arch)
    count, cin = 0, w.stem
    for s, mids in enumerate(w.conv1):
        for b in range(len(mids)):
            count += (s > 0 and b == 0) or cin != w.stage[s]
            cin = w.stage[s]
    return count


def test_every_track1_arch_has_three_projections(imagenet_space, small_space, track1_codes):
    assert all(_projections(imagenet_space, c) == 3 for c in track1_codes)
    for code in track1_codes[:3]:  # the built networks agree with the rule
        net = ResNet(code, small_space)
        assert sum(getattr(block, "downsample", None) is not None for block in net.blocks) == 3


# ----------------------------------------------------------------------------- FLOPs / params
def _count_macs(net: nn.Layer, image_size: int, in_channels: int) -> int:
    """MACs of one image over every Conv2D and Linear of ``net``, counted by forward hooks."""
    total = []

    def conv_hook(layer, inputs, output):
        total.append(output.shape[2] * output.shape[3] * math.prod(layer.weight.shape))

    def linear_hook(layer, inputs, output):
        total.append(math.prod(layer.weight.shape))

    handles = []
    for layer in net.sublayers():
        if isinstance(layer, nn.Conv2D):
            handles.append(layer.register_forward_post_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_post_hook(linear_hook))
    net.eval()
    with paddle.no_grad():
        net(paddle.zeros([1, in_channels, image_size, image_size]))
    for handle in handles:
        handle.remove()
    return sum(total)


def _archs(space: SearchSpace, n_random: int):
    sampler = UniformSampler(space)
    return [space.largest(), space.smallest()] + [sampler.sample(make_rng(3, i)) for i in range(n_random)]


@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_analytic_flops_and_params_equal_a_count_over_the_built_network(small_space, activation):
    space = dataclasses.replace(small_space, activation=activation)
    for arch in _archs(space, 4):
        net = ResNet(arch, space)
        assert space.flops(arch) == _count_macs(net, space.image_sizes[0], space.in_channels)
        assert space.params(arch) == sum(math.prod(p.shape) for p in net.parameters() if p.trainable)


def test_analytic_flops_at_an_odd_image_size(small_space):
    space = dataclasses.replace(small_space, image_sizes=(32, 45), in_channels=1)
    for arch in _archs(space, 2):
        arch = dataclasses.replace(arch, image_code=2)
        assert space.flops(arch) == _count_macs(ResNet(arch, space), 45, 1)


def test_analytic_flops_at_imagenet_scale(imagenet_space):
    arch = imagenet_space.smallest()
    assert imagenet_space.flops(arch) == _count_macs(ResNet(arch, imagenet_space), 224, 3)
    largest = imagenet_space.largest()
    assert imagenet_space.flops(largest) > imagenet_space.flops(arch)


def test_encode_rejects_an_arch_whose_conv1_codes_do_not_match_its_depths(imagenet_space):
    arch = Arch(1, (3, 2, 2, 2), ((1, 1), (1, 1), (1, 1), (1, 1)), (1, 1, 1, 1))
    with pytest.raises(ArchCodeError, match="stage 1"):
        imagenet_space.encode(arch)
