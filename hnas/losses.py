"""Training losses for supernets: cross-entropy, soft cross-entropy / KL to teacher logits.

Flat functions on logits ``[N, num_classes]`` returning scalar tensors (batch means), so a
strategy composes them in one line.  Teacher logits are detached here, never by the caller.
"""
from __future__ import annotations

import math

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


def alpha_divergence(student_logits: paddle.Tensor, teacher_logits: paddle.Tensor, alpha_min: float = -1.0,
                     alpha_max: float = 1.0, iw_clip: float = 3.0) -> paddle.Tensor:
    """AlphaNet's adaptive alpha-divergence (Wang et al., ICML 2021), mean over the batch.

    Per sample, the larger of ``D_alpha_min(p || q)`` and ``D_alpha_max(p || q)`` between the
    teacher's ``p`` and the student's ``q``, with ``D_a = sum_k q_k (min(w_k^a, clip) - 1) /
    (a (a - 1))``, ``w = p / q`` (``a`` = 1 is KL(p||q), ``a`` = 0 is KL(q||p)).  Importance
    weights and the teacher are detached: the gradient is AlphaNet's surrogate
    ``-sum_k q_k rho_k grad log q_k``, whose gradient equals the divergence's where no weight is
    clipped.  The value returned is the divergence itself (>= 0, 0 when the two agree).

    Everything is computed from log-probabilities (``w^a = exp(a (log p - log q))``), so
    extreme logits give neither NaN nor inf; the 3rd place switched its probability-ratio
    version off because it did.
    """
    log_q = _exact_log_softmax(student_logits.astype("float32"))
    log_p = _exact_log_softmax(teacher_logits.detach().astype("float32"))
    log_q_fixed = log_q.detach()
    left, left_surrogate = _f_divergence(log_q, log_q_fixed, log_p, alpha_max, iw_clip)
    right, right_surrogate = _f_divergence(log_q, log_q_fixed, log_p, alpha_min, iw_clip)
    take_left = (left > right).astype("float32")
    value = take_left * left + (1.0 - take_left) * right
    surrogate = take_left * left_surrogate + (1.0 - take_left) * right_surrogate
    return (surrogate + (value - surrogate).detach()).mean()


def _exact_log_softmax(logits: paddle.Tensor) -> paddle.Tensor:
    """``logits - logsumexp(logits)``: Paddle's ``log_softmax`` floors its output at -64 on CPU,
    which turns a KL of 200 nats into 64."""
    return logits - paddle.logsumexp(logits, axis=-1, keepdim=True)


def _f_divergence(log_q, log_q_fixed, log_p, alpha: float, iw_clip: float):
    """Per-sample ``(D_alpha(p || q), surrogate)`` in log space (see :func:`alpha_divergence`)."""
    log_w = log_p - log_q_fixed
    log_clip = math.log(iw_clip)
    q = paddle.exp(log_q_fixed)
    if abs(alpha) < 1e-3:  # KL(q || p) with the clipped weight
        log_w = paddle.minimum(log_w, paddle.full_like(log_w, log_clip))
        value = -(q * log_w).sum(axis=-1)
        weights = q * (log_w - 1.0)
    elif abs(alpha - 1.0) < 1e-3:  # KL(p || q): q * w = p, unclipped as in AlphaNet
        p = paddle.exp(log_p)
        value = (p * log_w).sum(axis=-1)
        weights = p
    else:
        log_q_w_alpha = log_q_fixed + paddle.minimum(alpha * log_w, paddle.full_like(log_w, log_clip))
        q_w_alpha = paddle.exp(log_q_w_alpha)  # q * min(w^a, clip) <= max(q, clip * q): no overflow
        base = 1.0 / (alpha * (alpha - 1.0))
        value = (q_w_alpha.sum(axis=-1) - 1.0) * base
        weights = q_w_alpha / alpha + q * base
    surrogate = -(weights.detach() * log_q).sum(axis=-1)
    return value, surrogate


def pairwise_rank_hinge(loss_large: paddle.Tensor, loss_small: paddle.Tensor, margin: float = 0.0) -> paddle.Tensor:
    """``relu(loss_large - loss_small.detach() + margin)``: penalise the subnet with the larger
    prior (e.g. more FLOPs) when its loss is not below the other's by ``margin``.

    Only the larger-prior subnet gets a gradient (the 3rd place's code sent it to the smaller
    one in one branch; this version does not).
    """
    return F.relu(loss_large - loss_small.detach() + margin)
