"""Start from the official full ResNet48: load it, reorder its mid channels, build the teacher.

The official baseline initialises its supernet from a pretrained ``resnet48.pdparams`` (the
full-width, full-depth network, same parameter names as :class:`ResNetSuperNet`), optionally
sorting every block's mid channels by importance so that narrow subnets inherit the most
useful ones, and distils from an untouched copy of that network.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn as nn

from ..search_space import Arch, SearchSpace
from .resnet import ResNet


def load_resnet48_pretrained(supernet: nn.Layer, path_or_state, reorder: bool) -> nn.Layer:
    """Load a full ResNet48 checkpoint into ``supernet`` (or a stand-alone ``ResNet``).

    Args:
        supernet: a ``ResNetSuperNet`` (or ``ResNet``) whose parameter names and shapes are
            those of the checkpoint.
        path_or_state: a ``.pdparams`` path or an already loaded state dict.
        reorder: sort mid channels by L1 importance after loading (the baseline's option).

    Returns:
        ``supernet``, loaded in place.

    Raises:
        ValueError: naming the missing, unexpected and shape-mismatched keys.
    """
    state = paddle.load(path_or_state) if isinstance(path_or_state, str) else path_or_state
    _load_exact(supernet, state)
    if reorder:
        reorder_mid_channels(supernet)
    return supernet


def reorder_mid_channels(model: nn.Layer) -> nn.Layer:
    """Sort every block's mid channels by importance, most important first, in place.

    Importance of mid channel ``j`` is the L1 norm of ``conv2.weight[:, j]``.  conv1's output
    channels, bn1's weight, bias, mean and variance and conv2's input channels move together,
    so the full network computes the same function; residual channels stay where they are
    (they are shared across a stage).  Works on ``ResNetSuperNet`` and ``ResNet``.
    """
    with paddle.no_grad():
        for block in model.blocks:
            if not hasattr(block, "conv2"):
                continue  # stem and head have no mid channels
            conv2_weight = block.conv2.weight.numpy()
            importance = np.abs(conv2_weight).sum(axis=(0, 2, 3))
            order = np.argsort(-importance, kind="stable")
            _permute(block.conv2.weight, order, axis=1)
            _permute(block.conv1.weight, order, axis=0)
            if block.conv1.bias is not None:
                _permute(block.conv1.bias, order, axis=0)
            for tensor in (block.bn1.weight, block.bn1.bias, block.bn1._mean, block.bn1._variance):
                _permute(tensor, order, axis=0)
    return model


def full_arch(space: SearchSpace, image_code: int = 1) -> Arch:
    """The full network of ``space``: every stage at its deepest, every conv at its widest.

    This is the architecture of the official checkpoint and of the supernet's weights; it is
    ``space.largest()`` unless ``sample_codes`` keeps the samplers off the widest codes.
    """
    codes = []
    for s in range(space.num_stages):
        widths = space.stage_widths(s)
        codes.append(widths.index(max(widths)) + 1)
    depths = space.max_depths
    return Arch(image_code, depths, tuple((c,) * d for c, d in zip(codes, depths)), tuple(codes))


def build_teacher(space: SearchSpace, path_or_state) -> ResNet:
    """The baseline's distillation teacher: the full ResNet, checkpoint channel order, frozen.

    Returns a stand-alone ``ResNet`` in eval mode whose parameters all have
    ``stop_gradient=True``; call it under ``paddle.no_grad()`` to save memory.
    """
    teacher = ResNet(full_arch(space), space)
    load_resnet48_pretrained(teacher, path_or_state, reorder=False)
    teacher.eval()
    for param in teacher.parameters():
        param.stop_gradient = True
    return teacher


def _load_exact(model: nn.Layer, state: dict) -> None:
    """``model.set_state_dict(state)``, refusing anything but an exact key and shape match."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(expected[k].shape)}"
                  for k in expected if k in state and list(state[k].shape) != list(expected[k].shape)]
    if missing or unexpected or mismatched:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                problems.append(f"{label}: {shown}")
        raise ValueError(f"checkpoint does not fit {type(model).__name__} (expected the full ResNet48 "
                         f"layout blocks.0.conv..., blocks.i.conv1/bn1/conv2/bn2/downsample...); "
                         + "; ".join(problems))
    model.set_state_dict(state)


def _permute(tensor: paddle.Tensor, order: np.ndarray, axis: int) -> None:
    tensor.set_value(np.take(tensor.numpy(), order, axis=axis))
