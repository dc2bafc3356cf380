"""Self-supervised contrastive warm-up of the largest subnet (MoCo v2; the 1st place's stage 1)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn as nn
import paddle.nn.functional as F

from ..data import build_contrastive_transform
from ..models import ResNetSuperNet
from ..registry import STRATEGIES
from ..sampling import make_rng
from .base import StepContext, Strategy, loss_values

QUEUE_KEY = 0xC0DE  # make_rng key of the queue's initial random keys


def info_nce(q: paddle.Tensor, k: paddle.Tensor, queue: paddle.Tensor, temperature: float) -> paddle.Tensor:
    """MoCo's InfoNCE: mean over ``i`` of ``-log softmax([q_i.k_i, q_i.queue_j for all j] / T)[0]``.

    Args:
        q: ``[N, D]`` L2-normalised queries (with gradient).
        k: ``[N, D]`` L2-normalised positive keys (no gradient).
        queue: ``[K, D]`` L2-normalised negative keys.
    """
    positive = (q * k).sum(axis=1, keepdim=True)
    negative = paddle.matmul(q, queue, transpose_y=True)
    logits = paddle.concat([positive, negative], axis=1) / temperature
    return F.cross_entropy(logits, paddle.zeros([q.shape[0]], dtype="int64"))


def projection_head(width: int, dim: int) -> nn.Sequential:
    """MoCo v2's MLP: ``[N, width] -> Linear(width, width) -> ReLU -> Linear(width, dim)``."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, dim))


class TwoViews(paddle.io.Dataset):
    """``dataset`` (an image folder with a ``.transform``) as ``(view1, view2, label)`` items:
    each image is decoded once and ``transform`` is drawn twice, so under one seed (the
    trainer seeds every item by (seed, epoch, index)) the two views differ and are reproducible."""

    def __init__(self, dataset, transform):
        super().__init__()
        if not hasattr(dataset, "transform"):
            raise TypeError(f"the contrastive strategy needs a training dataset with a .transform "
                            f"attribute (an hnas.data.ImageFolder), got {type(dataset).__name__}")
        self.dataset = copy.copy(dataset)  # same files; the caller's transform is left alone
        self.dataset.transform = _Twice(transform)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        (view1, view2), label = self.dataset[index]
        return view1, view2, label


class _Twice:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return self.transform(img), self.transform(img)


@STRATEGIES.register("contrastive")
class Contrastive(Strategy):
    """Per step: the largest subnet's pooled features of view 1 -> trainable MLP head -> L2
    norm are the queries; a momentum key encoder (EMA of the whole supernet and head, BN
    statistics included) embeds view 2 without gradient into the keys; the loss is InfoNCE
    against the positive key and a queue of ``queue_size`` earlier keys.  Labels are not used.

    After the loss, the keys of every rank (gathered in rank order) enter the queue, the oldest
    leave; after the optimizer step the key encoder moves towards the supernet by
    ``1 - momentum``.  With ``key_batch_stats`` (default) the key encoder normalises with the
    batch's statistics, as MoCo's (without its cross-GPU shuffle), its running statistics put
    back after each pass so they stay the exact EMA; ``key_batch_stats: false`` runs it in eval
    mode on those EMA statistics, as the 1st place did from a pretrained ResNet48 (from a fresh
    supernet its keys then start nearly identical: mean cosine 0.99 between images, vs 0.69).
    Its BN statistics are averaged over ranks after every update (each rank's supernet
    statistics follow its own images), so every rank holds the same state.

    Head, key encoder, key head, queue and pointer are strategy state: checkpointed and restored
    on resume.  The key encoder starts as a copy of the supernet (and head) at the first step of
    a fresh run (``initialised`` stays 1 in checkpoints, so a resumed run keeps its own).

    A batch is ``(view1, view2, labels)`` from :meth:`train_dataset`; a plain ``(images,
    labels)`` batch pairs each image with its mirror image.
    """

    uses_labels = False

    @dataclass
    class Options(Strategy.Options):
        """MoCo v2 / 1st-place defaults: T 0.1, EMA 0.999, queue 40,960, dim 128.

        ``symmetric``: also queries view 2 against keys of view 1 (mean of both losses; both
        key sets enter the queue).  ``color_jitter``, ``blur``: MoCo v2's extra augmentations
        (the 1st place used crop + flip only).  ``key_batch_stats``: the key encoder's BN uses
        batch statistics (else its EMA running statistics).  ``sampler`` is not used (the largest
        subnet only).
        """

        temperature: float = 0.1
        momentum: float = 0.999
        queue_size: int = 40960
        dim: int = 128
        symmetric: bool = False
        color_jitter: bool = False
        blur: bool = False
        key_batch_stats: bool = True

        def __post_init__(self):
            if not self.temperature > 0 or not 0 <= self.momentum <= 1 or self.queue_size < 1 or self.dim < 1:
                raise ValueError(f"Strategy (contrastive): need temperature > 0, 0 <= momentum <= 1, "
                                 f"queue_size >= 1 and dim >= 1, got {self.temperature}, {self.momentum}, "
                                 f"{self.queue_size}, {self.dim}")

    def __init__(self, space, cfg, options=None, teacher=None, sampler=None):
        super().__init__(space, cfg, options, teacher=teacher, sampler=sampler)
        width, dim = space.max_widths().stage[-1], self.options.dim
        self.head = projection_head(width, dim)
        self.key_encoder = ResNetSuperNet(space)  # overwritten by the supernet's weights at the start
        self.key_head = projection_head(width, dim)
        for p in self.key_encoder.parameters() + self.key_head.parameters():
            p.stop_gradient = True
        keys = make_rng(getattr(cfg, "seed", 0), QUEUE_KEY).standard_normal((self.options.queue_size, dim))
        keys /= np.linalg.norm(keys, axis=1, keepdims=True)
        self.register_buffer("queue", paddle.to_tensor(keys.astype("float32")))
        self.register_buffer("queue_ptr", paddle.zeros([1], dtype="int64"))
        self.register_buffer("initialised", paddle.zeros([1], dtype="int64"))

    # ------------------------------------------------------------------ hooks
    def train_dataset(self, dataset):
        """``(view1, view2, label)`` items of ``dataset``'s images (see :class:`TwoViews`)."""
        size = max(self.space.image_sizes)
        transform = build_contrastive_transform(size, self.options.color_jitter, self.options.blur)
        return TwoViews(dataset, transform)

    def on_train_begin(self, trainer) -> None:
        """A fresh run copies the supernet and head into the key encoder; a resumed one (its
        strategy state restored before this hook) keeps the checkpointed key encoder."""
        self.initialise(trainer.model)

    def after_optimizer_step(self, ctx: StepContext) -> None:
        self.momentum_update(ctx.supernet, ctx.world_size)

    # ------------------------------------------------------------------ step
    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        self.initialise(ctx.supernet)
        if len(batch) == 3:
            view1, view2, _ = batch
        else:
            view1 = batch[0]
            view2 = paddle.flip(view1, axis=[3])
        largest = self.space.largest()
        loss = info_nce(self.query(view1, largest, ctx), (k2 := self.keys(view2, ctx)), self.queue,
                        self.options.temperature)
        new_keys = [k2]
        if self.options.symmetric:
            k1 = self.keys(view1, ctx)
            loss = (loss + info_nce(self.query(view2, largest, ctx), k1, self.queue, self.options.temperature)) / 2
            new_keys.append(k1)
        ctx.backward(loss)
        for keys in new_keys:
            self.enqueue(ctx.all_gather(keys))
        return loss_values(loss=loss, infonce=loss)

    def query(self, images, arch, ctx: StepContext) -> paddle.Tensor:
        """``[N, dim]`` normalised queries of the supernet's ``arch`` (with gradient)."""
        features = ctx.forward(images, arch).features
        return F.normalize(self.head(features), axis=1)

    @paddle.no_grad()
    def keys(self, images, ctx: StepContext) -> paddle.Tensor:
        """``[N, dim]`` normalised keys of the key encoder's largest subnet (no gradient)."""
        encoder = self.key_encoder
        encoder.set_active(self.space.largest())
        saved = None
        if self.options.key_batch_stats:
            encoder.train()
            saved = [t.clone() for t in _statistics(encoder)]
        else:
            encoder.eval()
        with paddle.amp.auto_cast(enable=ctx.amp):
            features = encoder.forward_features(images)
        if saved is not None:
            for t, value in zip(_statistics(encoder), saved):
                t.set_value(value)
        return F.normalize(self.key_head(features.astype("float32")), axis=1).detach()

    # ------------------------------------------------------------------ state
    @paddle.no_grad()
    def enqueue(self, keys: paddle.Tensor) -> None:
        """Write ``keys`` ``[B, dim]`` in order over the oldest entries, from the pointer on,
        wrapping around; the pointer moves by ``B`` (mod ``queue_size``)."""
        size, count = self.options.queue_size, int(keys.shape[0])
        ptr = int(self.queue_ptr.item())
        positions = (ptr + np.arange(count)) % size
        if count > size:  # only the newest queue_size keys survive
            positions, keys = positions[-size:], keys[-size:]
        paddle.scatter_(self.queue, paddle.to_tensor(positions, dtype="int64"),
                        keys.astype(self.queue.dtype), overwrite=True)
        self.queue_ptr.set_value(paddle.to_tensor([(ptr + count) % size], dtype="int64"))

    @paddle.no_grad()
    def initialise(self, supernet) -> None:
        """Copy ``supernet`` and the head into the key encoder, once per fresh run."""
        if int(self.initialised.item()):
            return
        for target, source in zip(self._key_tensors(), self._query_tensors(supernet)):
            target.set_value(source.detach().clone())
        self.initialised.set_value(paddle.ones([1], dtype="int64"))

    @paddle.no_grad()
    def momentum_update(self, supernet, world_size: int = 1) -> None:
        """``key = m * key + (1 - m) * query`` for every weight and BN statistic of the supernet
        and head; then, with several ranks, the key encoder's BN statistics are averaged."""
        m = self.options.momentum
        for key, query in zip(self._key_tensors(), self._query_tensors(supernet)):
            key.set_value(key * m + query.detach().astype(key.dtype) * (1.0 - m))
        if world_size > 1:  # one all-reduce of all statistics
            stats = _statistics(self.key_encoder)
            flat = paddle.concat([t.reshape([-1]) for t in stats])
            dist.all_reduce(flat)
            flat = flat / world_size
            offset = 0
            for t in stats:
                t.set_value(flat[offset:offset + t.size].reshape(t.shape))
                offset += t.size

    def _key_tensors(self) -> list:
        return list(self.key_encoder.state_dict().values()) + list(self.key_head.state_dict().values())

    def _query_tensors(self, supernet) -> list:
        source, target = supernet.state_dict(), self.key_encoder.state_dict()
        if source.keys() != target.keys():
            raise ValueError("the contrastive strategy's key encoder is a ResNetSuperNet of the search space; "
                             "the model being trained has other weights")
        return [source[k] for k in target] + list(self.head.state_dict().values())


def _statistics(layer: nn.Layer) -> list:
    """BN running statistics of ``layer`` (``*._mean``, ``*._variance``), in a fixed order."""
    return [t for name, t in layer.state_dict().items() if name.endswith(("._mean", "._variance"))]
