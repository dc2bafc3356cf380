"""Features of an arch for every predictor: one-hot per position plus a positional encoding.

Each position's class (``0..9``, see :mod:`hnas.predictor.codes`) becomes a one-hot row of
width 10; padding is an all-zero row.  A fixed sinusoidal table (Vaswani et al., the encoding
the Track-2 7th-place solution added) is added so the flattened vector keeps which position
a row came from in a smooth way.  A Track-2 arch gives ``37 x 10 = 370`` features, a Track-1
arch ``52 x 10 = 520``.  The table is a constant offset, so it changes nothing for the ridge
and tree baselines; they get the same matrix for comparability.
"""
from __future__ import annotations

import numpy as np

from .codes import NUM_CLASSES


def sinusoid_table(length: int, dim: int = NUM_CLASSES) -> np.ndarray:
    """``float64 [length, dim]``: ``sin(p / 10000^(2i/dim))`` on even, ``cos`` on odd columns."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    col = np.arange(dim)
    angle = pos / np.power(10000.0, 2 * (col // 2) / dim)
    return np.where(col % 2 == 0, np.sin(angle), np.cos(angle))


def encode(tokens: np.ndarray, positional: bool = True) -> np.ndarray:
    """``int64 [N, L]`` classes (-1 = padding) -> ``float32 [N, L * 10]`` features."""
    tokens = np.asarray(tokens)
    n, length = tokens.shape
    onehot = np.zeros((n, length, NUM_CLASSES), dtype=np.float32)
    rows, cols = np.nonzero(tokens >= 0)
    onehot[rows, cols, tokens[rows, cols]] = 1.0
    if positional:
        onehot += sinusoid_table(length).astype(np.float32)[None]
    return onehot.reshape(n, length * NUM_CLASSES)
