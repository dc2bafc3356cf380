"""Shared fixtures for the hnas tests (CPU only, tiny widths).

Fixtures (names are stable; other test files rely on them):
    small_space: the Track-1 grammar (5/5/8/5 blocks, 7 ratios, 52-digit codes) at tiny widths
        (base 8/16/16/32, divisor 2, 32 px, 10 classes), so every Track-1 code parses in it
        and a supernet forward takes milliseconds.
    imagenet_space: the competition space from ``configs/resnet48_imagenet.yaml``.
    teacher_path: a full small-space ResNet saved as .pdparams (stand-in pretrained teacher).
    track1_codes: the 45,000 codes of ``checkpoints/CVPR_2022_NAS_Track1_test.json`` in file
        order, read once per session.
    randomize_bn: ``randomize_bn(model, seed=0)`` gives every BatchNorm (plain or super) of
        ``model`` random affine parameters and running statistics and every PReLU a random
        slope, so supernet-vs-export comparisons cannot pass by defaults.
Every test starts from ``paddle.seed(0)`` and ``np.random.seed(0)``.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

import hnas  # noqa: F401  (before paddle: see hnas/__init__.py)
import paddle
import paddle.nn as nn
from hnas.io import read_arch_json
from hnas.search_space import SearchSpace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_CONFIG = os.path.join(ROOT, "configs", "resnet48_small.yaml")
IMAGENET_CONFIG = os.path.join(ROOT, "configs", "resnet48_imagenet.yaml")
TRACK1_JSON = os.path.join(ROOT, "checkpoints", "CVPR_2022_NAS_Track1_test.json")


def pytest_configure(config):
    # paddle.nn.BatchNorm2D warns on every training-mode call; it says nothing about our code.
    config.addinivalue_line("filterwarnings", "ignore:When training, we now always track global mean")


@pytest.fixture(autouse=True)
def _seed_everything():
    paddle.seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def small_space() -> SearchSpace:
    space = SearchSpace.from_yaml(SMALL_CONFIG)
    return dataclasses.replace(space, base_widths=(8, 16, 16, 32), channel_divisor=2,
                               image_sizes=(32,), num_classes=10)


@pytest.fixture(scope="session")
def imagenet_space() -> SearchSpace:
    return SearchSpace.from_yaml(IMAGENET_CONFIG)


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory, small_space) -> str:
    """A full stand-alone ResNet of ``small_space`` saved as a ``.pdparams`` (a pretrained
    teacher stand-in for the strategies that distil from one)."""
    from hnas.models import ResNet
    from hnas.models.pretrained import full_arch

    paddle.seed(1)
    path = str(tmp_path_factory.mktemp("teacher") / "resnet48.pdparams")
    paddle.save(ResNet(full_arch(small_space), small_space).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def track1_codes() -> list[str]:
    return [entry["arch"] for entry in read_arch_json(TRACK1_JSON).values()]


def randomize_bn_and_prelu(model: nn.Layer, seed: int = 0) -> nn.Layer:
    """Random BN weight/bias/mean/variance and PReLU slopes for every such layer of ``model``."""
    rng = np.random.default_rng(seed)
    with paddle.no_grad():
        for layer in model.sublayers():
            if isinstance(layer, nn.BatchNorm2D):
                n = layer.weight.shape[0]
                layer.weight.set_value(rng.uniform(0.25, 0.75, n).astype("float32"))
                layer.bias.set_value(rng.normal(0.0, 0.2, n).astype("float32"))
                layer._mean.set_value(rng.normal(0.0, 0.2, n).astype("float32"))
                layer._variance.set_value(rng.uniform(0.5, 2.0, n).astype("float32"))
            elif isinstance(layer, nn.PReLU):
                for slope in layer.parameters():
                    slope.set_value(rng.uniform(0.05, 0.5, slope.shape).astype("float32"))
    return model


@pytest.fixture
def randomize_bn():
    return randomize_bn_and_prelu
