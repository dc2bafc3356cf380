"""Zero-cost proxies: score an arch without training it, to set beside every supernet ranking.

Each proxy is registered in :data:`hnas.registry.PROXIES` as ``fn(space, arch, **options) ->
float`` (higher = predicted better) and :func:`score_archs` runs one over an arch list:

- ``flops`` / ``params``: the analytic counts of :class:`SearchSpace`.
- ``zen``: Zen-score (Lin et al., ICCV 2021, "Zen-NAS"), as its Algorithm 1 states: remove the
  residual links, draw every conv/fc weight from N(0, 1) (BN affine = identity), feed a Gaussian
  batch ``x`` and ``x + alpha * eps``; score = log E||f(x) - f(x + alpha eps)||_F of the pre-GAP
  feature map, plus the sum over BN layers of log sqrt(mean over channels of the mini-batch
  variance), BN in train mode; averaged over repeats.  (The authors' code uses the entrywise L1
  norm and BN running variances after a momentum update; we follow the paper.)
- ``snip``: SNIP (Lee et al., ICLR 2019) as a zero-cost proxy (Abdelfattah et al., ICLR 2021):
  sum of |w * dL/dw| over conv and fc weights for one batch (real images, or Gaussian images
  with random labels), BN in train mode.
- ``synflow``: SynFlow (Tanaka et al., NeurIPS 2020): parameters replaced by their absolute
  values, an all-ones input, sum of |w * d(sum of outputs)/dw| over conv and fc weights, in
  float64, BN in eval mode (at initialisation that is an identity, as the paper's pruning loop
  has it).  The registered proxy returns the natural log of the sum: across depths the sum spans
  tens of orders of magnitude, and the log keeps Pearson meaningful without changing any rank.

Randomness comes from explicit generators seeded by ``(seed, repeat)`` and is the same for
every arch, so a proxy is a deterministic function of the arch.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from typing import Callable, Sequence

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .models.layers import HeadBlock
from .models.resnet import BasicBlock, ResNet, StemBlock
from .models.supernet import ResNetSuperNet, SuperBasicBlock, SuperStem
from .registry import PROXIES
from .sampling import make_rng
from .search_space import Arch, SearchSpace, validate_codes

ZEN_ALPHA = 0.01


# --------------------------------------------------------------------------- initialisation
def init_weights(model: nn.Layer, rng: np.random.Generator, scheme: str) -> nn.Layer:
    """Re-draw every conv/fc weight of ``model`` from ``rng``; BN to identity, biases to 0.

    Args:
        scheme: ``"gaussian"`` (N(0, 1), Zen-NAS) or ``"kaiming"`` (He normal, N(0, 2 / fan_in)).
    """
    if scheme not in ("gaussian", "kaiming"):
        raise ValueError(f"unknown init scheme {scheme!r}; choose 'gaussian' or 'kaiming'")
    with paddle.no_grad():
        for layer in model.sublayers(include_self=True):
            if isinstance(layer, (nn.Conv2D, nn.Linear)):
                shape = list(layer.weight.shape)
                # Conv2D weights are [out, in, kh, kw]; Linear weights are [in, out].
                fan_in = int(np.prod(shape[1:])) if isinstance(layer, nn.Conv2D) else shape[0]
                std = 1.0 if scheme == "gaussian" else math.sqrt(2.0 / fan_in)
                _assign(layer.weight, rng.standard_normal(shape) * std)
                if layer.bias is not None:
                    _assign(layer.bias, np.zeros(layer.bias.shape))
            elif isinstance(layer, nn.BatchNorm2D):
                _assign(layer.weight, np.ones(layer.weight.shape))
                _assign(layer.bias, np.zeros(layer.bias.shape))
    return model


def _assign(param, value: np.ndarray) -> None:
    param.set_value(value.astype(param.numpy().dtype))


def scored_weights(model: nn.Layer) -> list:
    """The weights the gradient proxies sum over: every conv and fc weight, in layer order."""
    return [layer.weight for layer in model.sublayers(include_self=True)
            if isinstance(layer, (nn.Conv2D, nn.Linear))]


# --------------------------------------------------------------------------- model-level scores
def snip_score(model: nn.Layer, inputs: np.ndarray, labels: np.ndarray) -> float:
    """Sum of |w * dL/dw| over conv/fc weights, L = mean cross-entropy of one batch.

    ``model`` runs in train mode (BN batch statistics); its weights and ``.grad`` are left as
    they were (the forward pass does update BN running statistics).  ``inputs``: ``[N, C, H, W]`` (or any shape the model takes); ``labels``: ``[N]``.
    """
    model.train()
    weights = scored_weights(model)
    with _quiet_train_bn():
        logits = model(paddle.to_tensor(np.asarray(inputs, dtype=np.float32)))
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size and not 0 <= labels.min() <= labels.max() < logits.shape[-1]:
        raise ValueError(f"labels must lie in 0..{logits.shape[-1] - 1}, got {labels.min()}..{labels.max()}")
    loss = F.cross_entropy(logits, paddle.to_tensor(labels))
    grads = paddle.grad(loss, weights)
    return float(sum(float((w * g).abs().sum()) for w, g in zip(weights, grads)))


def synflow_score(model: nn.Layer, input_shape: Sequence[int]) -> float:
    """SynFlow: sum of |w * dR/dw| over conv/fc weights of a float64 copy of ``model``.

    The copy has every parameter and BN statistic replaced by its absolute value (as the
    reference implementation does with the whole state dict) and BN in eval mode;
    R = sum of the outputs for one all-ones input of ``input_shape`` (no batch dimension).
    ``model`` itself is not changed.
    """
    net = copy.deepcopy(model)
    net.to(dtype="float64")
    net.eval()
    with paddle.no_grad():
        for tensor in list(net.parameters()) + list(net.buffers()):  # BN statistics included
            if tensor.dtype == paddle.float64:
                tensor.set_value(tensor.abs())
    weights = scored_weights(net)
    output = net(paddle.ones([1, *input_shape], dtype="float64"))
    grads = paddle.grad(output.sum(), weights)
    return float(sum(float((w * g).abs().sum()) for w, g in zip(weights, grads)))


def zen_score_once(model: ResNet | ResNetSuperNet, inputs: np.ndarray, noise: np.ndarray, alpha: float = ZEN_ALPHA) -> float:
    """One Zen-score sample of ``model`` (its weights already drawn) for a Gaussian batch.

    Returns log(mean_n ||f(x_n) - f(x_n + alpha eps_n)||_F) + sum_i log(sigma_i), where f is
    the pre-GAP feature map with residual links removed and sigma_i the root of the mean
    per-channel mini-batch variance at the input of BN layer i (BN in train mode).
    """
    model.train()
    bn_variances: list = []
    with paddle.no_grad(), _quiet_train_bn():
        x = paddle.to_tensor(np.asarray(inputs, dtype=np.float32))
        eps = paddle.to_tensor(np.asarray(noise, dtype=np.float32))
        clean = plain_features(model, x, bn_variances)
        perturbed = plain_features(model, x + alpha * eps, None)
        diff = (clean - perturbed).flatten(1)
        delta = float(paddle.sqrt((diff * diff).sum(axis=1)).mean())
        variances = paddle.stack(bn_variances).astype("float64").numpy()  # one device sync
    if not delta > 0:
        raise FloatingPointError(f"Zen-score perturbation vanished (delta={delta}); "
                                 "the network output does not depend on its input")
    if not (variances > 0).all():
        raise FloatingPointError("Zen-score: a BN input has zero batch variance; use a larger batch_size")
    return math.log(delta) + float(0.5 * np.log(variances).sum())


def plain_features(model: ResNet | ResNetSuperNet, x, bn_variances: list | None):
    """The pre-GAP feature map of ``model`` run without its residual links (Zen-NAS).

    Shortcuts (identity and projection, with its BN) are dropped, so every block is
    conv-BN-act-conv-BN-act.  If ``bn_variances`` is a list, each BN layer's mean per-channel
    input variance (a scalar tensor) is appended to it, in order.
    """
    def bn(layer, t):
        if bn_variances is not None:
            centered = t - t.mean(axis=[0, 2, 3], keepdim=True)
            bn_variances.append((centered * centered).mean())  # mean of per-channel variances
        return layer(t)

    if isinstance(model, ResNetSuperNet):  # the active subnet, each conv at its active width
        blocks = [model.blocks[i] for i in model.active_blocks()]
        stem_width = lambda block: block.out_channels  # noqa: E731
        mid_width, out_width = (lambda block: block.mid_channels), (lambda block: block.out_channels)
    else:
        blocks = list(model.blocks)
        stem_width = mid_width = out_width = lambda block: None  # noqa: E731
    for block in blocks:
        if isinstance(block, (StemBlock, SuperStem)):
            x = block.maxpool(block.act(bn(block.bn, _conv(block.conv, x, stem_width(block)))))
        elif isinstance(block, (BasicBlock, SuperBasicBlock)):
            x = block.act1(bn(block.bn1, _conv(block.conv1, x, mid_width(block))))
            x = block.act2(bn(block.bn2, _conv(block.conv2, x, out_width(block))))
        elif isinstance(block, HeadBlock):
            return x
        else:
            raise TypeError(f"Zen-score does not know block type {type(block).__name__}")
    return x


def _conv(layer, x, channels: int | None):
    return layer(x) if channels is None else layer(x, channel=channels)


class ZenPrior:
    """A cheap Zen-score for training-time priors (the ``rank_zen`` strategy).

    The 3rd place recomputed a full Zen-score for every pair on every step.  Here every arch is
    scored on one supernet whose weights were drawn once from N(0, 1) (each arch's weights are
    then a valid Gaussian draw, shared across archs as a common random number, which makes
    comparisons less noisy), one Gaussian batch of ``batch_size`` images at the training
    resolution, one repeat, and a cache by code: no network is built per arch, and a score
    costs two forward passes of a small batch.  It agrees with the ``zen`` proxy's ranking
    closely (see README) but is not the same number.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, batch_size: int = 8, image_size: int | None = None,
                 alpha: float = ZEN_ALPHA, cache_size: int = 200_000):
        _check_positive(batch_size=batch_size, cache_size=cache_size)
        self.space, self.alpha, self.cache_size = space, alpha, cache_size
        state = paddle.get_rng_state()
        self.model = init_weights(ResNetSuperNet(space), make_rng(seed, 0), "gaussian")
        paddle.set_rng_state(state)  # building a network must not move the caller's RNG
        size = image_size or max(space.image_sizes)
        rng = make_rng(seed, 1)
        shape = (batch_size, space.in_channels, size, size)
        self.inputs, self.noise = rng.standard_normal(shape), rng.standard_normal(shape)
        self.cache: dict[str, float] = {}

    def __call__(self, arch: Arch | str) -> float:
        code = arch if isinstance(arch, str) else self.space.encode(arch)
        if code not in self.cache:
            if len(self.cache) >= self.cache_size:
                self.cache.clear()
            self.model.set_active(code)
            self.cache[code] = zen_score_once(self.model, self.inputs, self.noise, self.alpha)
        return self.cache[code]


# --------------------------------------------------------------------------- registered proxies
@PROXIES.register("flops")
def flops_proxy(space: SearchSpace, arch: Arch) -> float:
    """Multiply-accumulates of conv and fc layers (``SearchSpace.flops``)."""
    return float(space.flops(arch))


@PROXIES.register("params")
def params_proxy(space: SearchSpace, arch: Arch) -> float:
    """Trainable parameters of the stand-alone network (``SearchSpace.params``)."""
    return float(space.params(arch))


@PROXIES.register("zen")
def zen_proxy(space: SearchSpace, arch: Arch, seed: int = 0, repeats: int = 4, batch_size: int = 16,
              alpha: float = ZEN_ALPHA, image_size: int | None = None) -> float:
    """Zen-score of ``arch`` averaged over ``repeats`` draws of weights and Gaussian inputs."""
    _check_positive(repeats=repeats, batch_size=batch_size)
    model = ResNet(arch, space)
    size = image_size or space.widths(arch).image_size
    shape = (batch_size, space.in_channels, size, size)
    scores = []
    for repeat in range(repeats):
        rng = make_rng(seed, repeat)
        init_weights(model, rng, "gaussian")
        scores.append(zen_score_once(model, rng.standard_normal(shape), rng.standard_normal(shape), alpha))
    return float(np.mean(scores))


@PROXIES.register("snip")
def snip_proxy(space: SearchSpace, arch: Arch, seed: int = 0, batch_size: int = 16,
               image_size: int | None = None, inputs: np.ndarray | None = None,
               labels: np.ndarray | None = None) -> float:
    """SNIP of ``arch`` at He-normal init; one real batch if given, else Gaussian images with
    uniformly random labels (both drawn from ``seed``)."""
    model = init_weights(ResNet(arch, space), make_rng(seed, 0), "kaiming")
    if inputs is None:
        _check_positive(batch_size=batch_size)
        size = image_size or space.widths(arch).image_size
        rng = make_rng(seed, 1)
        inputs = rng.standard_normal((batch_size, space.in_channels, size, size))
        labels = rng.integers(0, space.num_classes, batch_size)
    elif labels is None:
        raise ValueError("snip: inputs were given without labels")
    return snip_score(model, inputs, labels)


@PROXIES.register("synflow")
def synflow_proxy(space: SearchSpace, arch: Arch, seed: int = 0, image_size: int | None = None) -> float:
    """Natural log of the SynFlow score of ``arch`` at He-normal init (drawn from ``seed``)."""
    model = init_weights(ResNet(arch, space), make_rng(seed, 0), "kaiming")
    size = image_size or space.widths(arch).image_size
    score = synflow_score(model, (space.in_channels, size, size))
    if not 0 < score < math.inf:
        raise FloatingPointError(f"SynFlow score {score} of {space.encode(arch)} is not a positive finite number")
    return math.log(score)


# --------------------------------------------------------------------------- arch lists
def score_archs(space: SearchSpace, codes: Sequence[str], proxy: str | Callable,
                progress: Callable[[int, int], None] | None = None, **options) -> list[float]:
    """Score every code with ``proxy`` (a registered name or a ``fn(space, arch, **options)``).

    Codes are validated first, so a bad one fails before any work.  ``progress(done, total)``
    is called after each arch.
    """
    fn = PROXIES.get(proxy) if isinstance(proxy, str) else proxy
    codes = list(codes)
    validate_codes(space, codes)
    scores = []
    for i, code in enumerate(codes):
        scores.append(float(fn(space, space.parse(code), **options)))
        if progress is not None:
            progress(i + 1, len(codes))
    return scores


def load_batch(image_dir: str, image_size: int, batch_size: int, seed: int = 0,
               split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """One fixed batch ``(images [N, 3, S, S], labels [N])`` of ``image_dir/split`` for SNIP."""
    from .data import build_dataset

    dataset = build_dataset(image_dir, split, image_size, train=False, limit=batch_size, seed=seed)
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return np.stack(images).astype(np.float32), np.asarray(labels, dtype=np.int64)


@contextlib.contextmanager
def _quiet_train_bn():
    """Silence Paddle's notice that train-mode BN tracks running statistics (expected here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When training, we now always track")
        yield


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
