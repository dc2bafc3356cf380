"""Ranking losses for the predictor, batched over ensemble members.

Shapes: ``scores [M, B, T]`` (M members, B archs per batch, T outputs per member).
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F


def pair_weights(targets: np.ndarray) -> np.ndarray:
    """``float32 [M, B, B, T]``: ``sign(y_i - y_j)`` divided by the member's number of
    ordered pairs with different targets (ties and i == j get 0), so each member's loss is
    a mean over its own pairs and members do not weigh on each other."""
    sign = np.sign(targets[:, :, None, :] - targets[:, None, :, :])
    count = np.abs(sign).sum(axis=(1, 2, 3), keepdims=True)
    return (sign / np.maximum(count, 1.0)).astype(np.float32)


def pairwise_logistic(scores: paddle.Tensor, weights: paddle.Tensor) -> paddle.Tensor:
    """ReNAS pairwise logistic loss over every pair of a batch, summed over members.

    Per ordered pair with ``y_i != y_j``: ``log(1 + exp(-(s_i - s_j) * sign(y_i - y_j)))``,
    written as ``softplus`` so large margins neither overflow (the 7th-place solution's
    ``log(1 + exp(x))`` gives inf) nor lose the gradient.  ``weights`` come from
    :func:`pair_weights`; their sign orients each pair and their size averages.
    """
    diff = scores.unsqueeze(2) - scores.unsqueeze(1)  # [M, B, B, T]: s_i - s_j
    sign = paddle.sign(weights)
    return (F.softplus(-diff * sign) * weights.abs()).sum()


def rank_mse(scores: paddle.Tensor, ranks: paddle.Tensor) -> paddle.Tensor:
    """Mean squared error to normalised ranks in [0, 1], averaged per member and summed."""
    return ((scores - ranks) ** 2).mean(axis=[1, 2]).sum()
