"""Training losses for supernets: cross-entropy, soft cross-entropy / KL to teacher logits.

Flat functions on logits ``[N, num_classes]`` returning scalar tensors (batch means), so a
strategy composes them in one line.  Teacher logits are detached here, never by the caller.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F


def cross_entropy(logits: paddle.Tensor, labels: paddle.Tensor, label_smoothing: float = 0.0) -> paddle.Tensor:
    """Mean cross-entropy of ``logits [N, K]`` against integer ``labels [N]`` (or ``[N, 1]``).

    With ``label_smoothing = eps`` the target is ``(1 - eps) * one_hot + eps / K`` (as in
    Inception-v3 and the 4th-place Track-1 recipe).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    labels = labels.reshape([-1]).astype("int64")
    if label_smoothing == 0.0:
        return F.cross_entropy(logits, labels)
    num_classes = int(logits.shape[-1])
    target = F.one_hot(labels, num_classes) * (1.0 - label_smoothing) + label_smoothing / num_classes
    return _soft_target_cross_entropy(logits, target)


def soft_cross_entropy(logits: paddle.Tensor, target_logits: paddle.Tensor, temperature: float = 1.0) -> paddle.Tensor:
    """Mean cross-entropy of ``softmax(logits / T)`` against ``softmax(target_logits / T)``.

    Scaled by ``T**2`` so gradients keep their size across temperatures (Hinton et al.); at
    ``T = 1`` this is exactly the official baseline's distillation term
    ``cross_entropy(logits, softmax(teacher), soft_label=True)``.  ``target_logits`` is detached.
    """
    _check_temperature(temperature)
    target = F.softmax(target_logits.detach().astype("float32") / temperature, axis=-1)
    return _soft_target_cross_entropy(logits / temperature, target) * (temperature ** 2)


def kl_divergence(logits: paddle.Tensor, target_logits: paddle.Tensor, temperature: float = 1.0) -> paddle.Tensor:
    """Mean ``KL(softmax(target / T) || softmax(logits / T)) * T**2``; zero when they agree.

    Same gradient as :func:`soft_cross_entropy` (they differ by the target's entropy), but its
    value reads as a distance, which is what logs should show.
    """
    _check_temperature(temperature)
    target_log_prob = F.log_softmax(target_logits.detach().astype("float32") / temperature, axis=-1)
    log_prob = F.log_softmax(logits.astype("float32") / temperature, axis=-1)
    kl = (paddle.exp(target_log_prob) * (target_log_prob - log_prob)).sum(axis=-1)
    return kl.mean() * (temperature ** 2)


def inplace_distillation(student_logits: paddle.Tensor, teacher_logits: paddle.Tensor,
                         temperature: float = 1.0) -> paddle.Tensor:
    """In-place distillation (Yu et al., Slimmable/BigNAS): a subnet learns the soft
    predictions of the largest subnet of the same supernet on the same batch.

    The teacher side is detached, so the largest subnet is trained only by its own loss.
    """
    return soft_cross_entropy(student_logits, teacher_logits, temperature)


def _soft_target_cross_entropy(logits: paddle.Tensor, target: paddle.Tensor) -> paddle.Tensor:
    log_prob = F.log_softmax(logits.astype("float32"), axis=-1)
    return -(target * log_prob).sum(axis=-1).mean()


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"distillation temperature must be positive, got {temperature}")
