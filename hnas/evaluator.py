"""Rank subnets by supernet accuracy: BN recalibration, fixed images, sharded resumable runs.

Per arch: ``set_active(arch)``, re-estimate BN statistics on K fixed training batches, then
top-1 on a fixed subset of M validation images.  The images are decoded once per image size
and kept as tensors; the network is never rebuilt.  Recalibration rewrites every
statistic the arch reads, so a score does not depend on which archs ran before it, and
shards, restarts and a single uninterrupted run give the same numbers.

Archs that share the stem and stage 1 (:func:`prefix_key`) are scored as a group that runs
those layers once (:meth:`SubnetRanker.score_many`); the scores are those of arch-by-arch
ranking.  A shard ``I`` of ``N`` takes its run of archs (:func:`shard_keys`, groups kept whole)
and appends one JSON line per finished arch to ``{save_path}.shard{I}of{N}.jsonl``;
:func:`merge_shards` writes the submission.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from typing import Iterable, Iterator, Mapping

import numpy as np
import paddle
import paddle.nn as nn
from tqdm import tqdm

from .checkpoint import (LockedError, check_finite, file_identity, load_into, load_model_state,
                         resolve_checkpoint)
from .data import ImageFolder, ToCHWArray, build_transform
from .io import read_arch_json, with_scores, write_arch_json
from .models.resnet import ResNet
from .models.supernet import ResNetSuperNet
from .search_space import Arch, SearchSpace

try:
    import fcntl
except ImportError:  # Windows: shard files are not locked
    fcntl = None

BN_TYPES = (nn.BatchNorm, nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D, nn.SyncBatchNorm)
EVAL_DEFAULTS = {"calib_batches": 10, "eval_images": 1000, "batch_size": 100, "seed": 0,
                 "score": "acc", "finetune_steps": 0, "finetune_lr": 0.02, "finetune_batch_size": 128,
                 "finetune_init": "supernet", "prefix_cache_mb": 1024}
SCORES = ("acc", "loss")  # top-1, or minus the mean cross-entropy (higher = better for both)
FINETUNE_KEY = 0xF1E7  # seed offset of the fine-tuning images, apart from the calibration ones
FLOAT_CACHE_BYTES = 1 << 30  # fixed images up to 1 GiB as float32; beyond, uint8 (normalised per batch)


def prefix_key(space: SearchSpace, arch: Arch) -> tuple:
    """What the stem and stage 1 of ``arch`` compute depends on: image size, stem width, and
    stage 1's depth and widths.  Archs with one key share those layers' outputs exactly, in
    training mode (the calibration of later layers) and after recalibration (evaluation), since
    a BN layer's statistics depend only on the layers before it."""
    w = space.widths(arch)
    return w.image_size, w.stem, w.conv1[0], w.stage[0]


def recalibrate_bn(model: nn.Layer, batches: Iterable) -> int:
    """Replace the running statistics of the BN layers ``model`` runs by averages over ``batches``.

    Each BN layer's running mean and variance become the exact average, weighted by batch
    size, of its per-batch statistics (Paddle's biased batch variance), the cumulative average
    a momentum of ``seen / (seen + n)`` gives; the stored values are discarded, not blended.
    A ``SuperBatchNorm2D`` given C channels rewrites only its first C entries, and BN layers
    the active subnet skips keep theirs.  BN layers run in training mode, everything else in
    eval mode, without gradients.  Training flags and momenta are restored afterwards.

    Args:
        model: any layer (a supernet with its active subnet set, or a stand-alone network).
        batches: image batches ``[N, C, H, W]`` (tensors or arrays), the same for every arch
            that is to be compared.  None at all leaves every statistic as stored.

    Returns:
        The number of images used.
    """
    images = 0
    with CalibrationPass(model) as calibrate:
        for batch in batches:
            images += int(calibrate(batch).shape[0])
    return images


class CalibrationPass:
    """The forward passes of :func:`recalibrate_bn`, one batch per call, returning the outputs.

    ``seen`` images already averaged into the statistics (by an earlier pass over the same
    layers) continue the cumulative average, so a calibration split into several passes gives
    the statistics of one pass over all batches.  A context manager: hooks, flags and momenta
    are set on entry and restored on exit.
    """

    def __init__(self, model: nn.Layer, seen: int = 0):
        self.model, self.start = model, seen

    def __enter__(self):
        self.layers = self.model.sublayers(include_self=True)
        self.flags = [layer.training for layer in self.layers]
        self.bn_layers = bn_layers(self.model)
        self.momenta = [layer._momentum for layer in self.bn_layers]
        seen = [self.start] * len(self.bn_layers)

        def cumulative_momentum(index):
            def hook(layer, inputs):
                n = int(inputs[0].shape[0])
                layer._momentum = seen[index] / (seen[index] + n)
                seen[index] += n
            return hook

        self.handles = [layer.register_forward_pre_hook(cumulative_momentum(i))
                        for i, layer in enumerate(self.bn_layers)]
        for layer in self.layers:  # set flags directly: Layer.train() also flips the global tracer mode
            layer.training = isinstance(layer, BN_TYPES)
        self.no_grad = paddle.no_grad()
        self.no_grad.__enter__()
        return self

    def __call__(self, batch) -> paddle.Tensor:
        return self.model(batch if isinstance(batch, paddle.Tensor) else paddle.to_tensor(batch))

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        for handle in self.handles:
            handle.remove()
        for layer, momentum in zip(self.bn_layers, self.momenta):
            layer._momentum = momentum
        for layer, flag in zip(self.layers, self.flags):
            layer.training = flag
        return False


def top1_accuracy(model: nn.Layer, batches: Iterable[tuple]) -> float:
    """Fraction of ``(images [N, C, H, W], labels [N])`` batches whose arg-max logit is the label."""
    correct, total = paddle.zeros([], dtype="int64"), 0
    with paddle.no_grad():
        for images, labels in batches:
            predicted = model(images).argmax(axis=1)
            correct += (predicted == labels).astype("int64").sum()
            total += int(labels.shape[0])
    if total == 0:
        raise ValueError("top1_accuracy got no images")
    return int(correct.item()) / total


class FixedImages:
    """Calibration batches and evaluation images of one size, decoded once for every arch.

    Normalised with exactly the arithmetic of :class:`hnas.data.ToCHWArray`, so the values
    equal those of the usual data pipeline.  Kept as float32 tensors when they fit in
    ``max_float_bytes``; larger sets (ImageNet at 224 px) stay uint8, a quarter of the
    memory, and are normalised per batch on use.

    Args:
        calibration: uint8 ``[N, 3, H, W]`` batches.
        eval_images: uint8 ``[N, 3, H, W]`` batches.
        eval_labels: int64 ``[N]`` batches.
        mean, std: per-channel normalisation of the pipeline.
    """

    def __init__(self, calibration: list, eval_images: list, eval_labels: list, mean, std,
                 max_float_bytes: int = FLOAT_CACHE_BYTES):
        self.mean = paddle.to_tensor(np.asarray(mean, dtype="float32").reshape(1, 3, 1, 1))
        self.std = paddle.to_tensor(np.asarray(std, dtype="float32").reshape(1, 3, 1, 1))
        self.eval_labels = eval_labels
        float_bytes = 4 * sum(int(np.prod(b.shape)) for b in calibration + eval_images)
        self.normalized = float_bytes <= max_float_bytes
        prepare = self.normalize if self.normalized else (lambda batch: batch)
        self.calibration = [prepare(b) for b in calibration]
        self.eval_images = [prepare(b) for b in eval_images]

    @property
    def num_calibration(self) -> int:
        return sum(int(b.shape[0]) for b in self.calibration)

    @property
    def num_eval(self) -> int:
        return sum(int(b.shape[0]) for b in self.eval_images)

    def normalize(self, images: paddle.Tensor) -> paddle.Tensor:
        """uint8 ``[N, 3, H, W]`` -> normalised float32."""
        return (images.astype("float32") / 255.0 - self.mean) / self.std

    def calibration_batches(self) -> Iterator[paddle.Tensor]:
        return iter(self.calibration) if self.normalized else map(self.normalize, self.calibration)

    def eval_batches(self) -> Iterator[tuple]:
        images = iter(self.eval_images) if self.normalized else map(self.normalize, self.eval_images)
        return zip(images, self.eval_labels)


def load_fixed_images(image_dir: str, image_size: int, calib_batches: int, batch_size: int,
                      eval_images: int, seed: int = 0, max_float_bytes: int = FLOAT_CACHE_BYTES,
                      on_error: str = "raise") -> FixedImages:
    """Decode the fixed calibration and evaluation images of ``image_dir`` at ``image_size``.

    Calibration: ``calib_batches * batch_size`` images of ``train`` drawn with ``seed``, in a
    seeded random order (so no batch holds one class only).  Evaluation: ``eval_images``
    images of ``val`` drawn with ``seed``.  Both use the evaluation transform (resize and
    centre crop), so the statistics match the images they normalise at evaluation.  Fewer
    images are used when a split holds fewer.  ``on_error`` is :class:`hnas.data.ImageFolder`'s
    (ranking keeps ``"raise"``: every arch must see the same images).
    """
    if batch_size < 1 or calib_batches < 0 or eval_images < 1:
        raise ValueError(f"need batch_size >= 1, calib_batches >= 0, eval_images >= 1; got "
                         f"{batch_size}, {calib_batches}, {eval_images}")
    decode = build_transform(image_size, train=False, output="uint8")
    to_array = ToCHWArray()
    calibration = []
    if calib_batches > 0:
        train = ImageFolder(os.path.join(image_dir, "train"), decode, limit=calib_batches * batch_size, seed=seed,
                            on_error=on_error)
        order = np.random.default_rng(seed).permutation(len(train))
        images, _ = _decode_all(train, order)
        calibration = [paddle.to_tensor(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    val = ImageFolder(os.path.join(image_dir, "val"), decode, limit=eval_images, seed=seed, on_error=on_error)
    images, labels = _decode_all(val, np.arange(len(val)))
    chunks = range(0, len(images), batch_size)
    return FixedImages(calibration, [paddle.to_tensor(images[i:i + batch_size]) for i in chunks],
                       [paddle.to_tensor(labels[i:i + batch_size]) for i in chunks], to_array.mean, to_array.std,
                       max_float_bytes)


def _decode_all(dataset: ImageFolder, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [dataset[int(i)] for i in order]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=np.int64)


class SubnetRanker:
    """Scores archs with one supernet: recalibrate BN, then top-1 on fixed images.

    This is the one evaluation protocol of hnas: ``eval_supernet.py`` ranks with it and the
    trainer's validation (:meth:`hnas.trainer.Trainer.evaluate`) measures with it, so the top-1
    a training log shows for an arch is the score ranking gives the same checkpoint.

    Args:
        supernet: a loaded :class:`ResNetSuperNet`; put in eval mode, its active arch and BN
            statistics change with every score.
        image_dir: ImageNet-layout folder with ``train`` and ``val`` splits.
        calib_batches: K; 0 keeps the stored statistics (the official baseline's choice).
        eval_images: M validation images.
        batch_size: images per forward pass, for calibration and evaluation alike.
        seed: which images.
        score: ``"acc"`` (top-1, a fraction) or ``"loss"`` (minus the mean cross-entropy on the
            same images; higher is better for both, so rankings read the same way).
        finetune_steps: N > 0 fine-tunes a stand-alone copy of each inherited subnet (the
            supernet is untouched) for N steps before BN recalibration and scoring: momentum
            0.9 Nesterov SGD, weight decay 5e-4, lr ``finetune_lr`` decayed by cosine to 0 over
            the N steps, ``finetune_batch_size`` fixed training images per step without
            augmentation (the same N batches, decoded once, for every arch), so a score is a
            deterministic function of the arch.  Costs N forward + backward passes per arch.
        finetune_lr, finetune_batch_size: see ``finetune_steps``.
        finetune_init: ``"supernet"`` (the inherited weights) or ``"scratch"`` (a fresh
            stand-alone network initialised from ``seed``: a short stand-alone training, the
            reference a supernet's ranking should beat at equal cost).
        prefix_cache_mb: memory :meth:`score_many` may hold for one group's stage-1 outputs
            (see there); it changes the speed, never the scores.
        reuse_prefix: False makes :meth:`score_many` score arch by arch (for comparisons).
    """

    def __init__(self, supernet: ResNetSuperNet, image_dir: str, calib_batches: int, eval_images: int,
                 batch_size: int, seed: int = 0, score: str = "acc", finetune_steps: int = 0,
                 finetune_lr: float = 0.02, finetune_batch_size: int = 128, on_error: str = "raise",
                 finetune_init: str = "supernet", prefix_cache_mb: int = 1024, reuse_prefix: bool = True):
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
        if finetune_init not in ("supernet", "scratch"):
            raise ValueError(f"finetune_init must be 'supernet' or 'scratch'; got {finetune_init!r}")
        if prefix_cache_mb < 1:
            raise ValueError(f"prefix_cache_mb must be at least 1; got {prefix_cache_mb}")
        if finetune_steps < 0 or finetune_batch_size < 1 or not finetune_lr > 0:
            raise ValueError(f"need finetune_steps >= 0, finetune_batch_size >= 1, finetune_lr > 0; got "
                             f"{finetune_steps}, {finetune_batch_size}, {finetune_lr}")
        self.supernet = supernet
        self.supernet.eval()
        self.image_dir = image_dir
        self.calib_batches, self.eval_images, self.batch_size, self.seed = \
            calib_batches, eval_images, batch_size, seed
        self.metric, self.finetune_steps = score, finetune_steps
        self.finetune_lr, self.finetune_batch_size = finetune_lr, finetune_batch_size
        self.finetune_init = finetune_init
        self.prefix_cache_bytes, self.reuse_prefix = prefix_cache_mb << 20, reuse_prefix
        self._images: dict[int, FixedImages] = {}
        self.on_error = on_error  # an unreadable image: "raise" (ranking), or "skip" (training's --on_error)
        self._finetune_images: dict[int, FixedImages] = {}

    @property
    def space(self) -> SearchSpace:
        return self.supernet.space

    @staticmethod
    def image_dir_of(dataset, split: str) -> str:
        """The ``image_dir`` whose ``split`` folder ``dataset`` (an :class:`ImageFolder`) reads."""
        root = getattr(dataset, "root", None)
        if root is None or os.path.basename(os.path.normpath(root)) != split:
            raise ValueError(f"the evaluation protocol reads image_dir/{split}; got a dataset with root {root!r} "
                             f"(build it with hnas.data.build_dataset(image_dir, {split!r}, ...))")
        return os.path.dirname(os.path.normpath(root))

    def images(self, image_size: int) -> FixedImages:
        """The fixed images at ``image_size``, decoded on first use."""
        if image_size not in self._images:
            start = time.perf_counter()
            images = load_fixed_images(self.image_dir, image_size, self.calib_batches, self.batch_size,
                                       self.eval_images, self.seed, on_error=self.on_error)
            print(f"decoded {images.num_calibration} calibration and {images.num_eval} evaluation images "
                  f"at {image_size} px in {time.perf_counter() - start:.1f} s", file=sys.stderr)
            self._images[image_size] = images
        return self._images[image_size]

    def settings(self, checkpoint: str) -> dict:
        """What a score depends on; shard files record it so a restart cannot mix protocols."""
        space = {f.name: getattr(self.space, f.name) for f in dataclasses.fields(self.space) if f.init}
        settings = {"checkpoint": os.path.realpath(checkpoint), "image_dir": os.path.realpath(self.image_dir),
                    "calib_batches": self.calib_batches, "eval_images": self.eval_images,
                    "batch_size": self.batch_size, "seed": self.seed, "search_space": space}
        if self.metric != "acc":
            settings["score"] = self.metric
        if self.finetune_steps:
            settings.update(finetune_steps=self.finetune_steps, finetune_lr=self.finetune_lr,
                            finetune_batch_size=self.finetune_batch_size, finetune_init=self.finetune_init)
        return settings

    def score(self, arch: Arch | str) -> float:
        """The score of ``arch`` (top-1 as a fraction, or minus the mean cross-entropy) at the
        image size its code selects."""
        arch = self.supernet.set_active(arch)
        size = self.space.image_sizes[arch.image_code - 1]
        model = self.supernet
        if self.finetune_steps:
            if self.finetune_init == "scratch":
                paddle.seed(self.seed)
                model = ResNet(arch, self.space)
            else:
                model = self.supernet.export(arch)
            self.finetune(model, size)
            model.eval()
        total, count = self.measure(model, size)
        return total / count

    def measure(self, model: nn.Layer, image_size: int, shard: int = 0, num_shards: int = 1) -> tuple[float, int]:
        """Recalibrate ``model``'s BN on the calibration batches, then ``(sum, n)`` of the
        metric over evaluation batches ``shard::num_shards`` (hits for ``acc``, minus the
        cross-entropy summed over images for ``loss``); ``sum / n`` is the score, and
        shards of one model add up to it.  ``model`` should be in eval mode."""
        images = self.images(image_size)
        recalibrate_bn(model, images.calibration_batches())
        total, count = 0.0, 0
        with paddle.no_grad():
            for i, (batch, labels) in enumerate(images.eval_batches()):
                if i % num_shards != shard:
                    continue
                total += self._metric_sum(model(batch), labels)
                count += int(labels.shape[0])
        if count == 0 and num_shards == 1:
            raise ValueError("no evaluation images")
        return total, count

    def _metric_sum(self, logits: paddle.Tensor, labels: paddle.Tensor) -> float:
        """Hits (``acc``) or minus the summed cross-entropy (``loss``) of one batch."""
        if self.metric == "acc":
            return int((logits.argmax(axis=1) == labels).astype("int64").sum().item())
        loss = paddle.nn.functional.cross_entropy(logits, labels.reshape([-1, 1]), reduction="sum")
        return -float(loss.item())

    # ------------------------------------------------------------------ prefix reuse
    def score_many(self, archs: Iterable[tuple[str, Arch | str]]) -> Iterator[tuple[str, float]]:
        """``(key, score)`` for every ``(key, arch)``: exactly :meth:`score`'s numbers, faster.

        Archs with one :func:`prefix_key` (stem and stage 1) are scored as a group: the stem
        and stage 1 run once per group on the calibration batches (recalibrating their BN) and
        on the evaluation images, and only stages 2-4 and the head run per arch, on those
        outputs.  The outputs are kept while they fit in ``prefix_cache_mb`` (then archs
        finish one by one); a larger group runs in chunks of images, each arch's stage 2-4
        statistics saved between chunks, and its archs finish together.  Groups come in
        order of first appearance.  With ``finetune_steps`` every arch runs alone.
        """
        items = [(key, self.space.parse(a) if isinstance(a, str) else a) for key, a in archs]
        if self.finetune_steps or not self.reuse_prefix:
            for key, arch in items:
                yield key, self.score(arch)
            return
        groups: dict[tuple, list] = {}
        for key, arch in items:
            groups.setdefault(prefix_key(self.space, arch), []).append((key, arch))
        for members in groups.values():
            if len(members) == 1:
                yield members[0][0], self.score(members[0][1])
            else:
                yield from self._score_group(members)

    def _score_group(self, members: list[tuple[str, Arch]]) -> Iterator[tuple[str, float]]:
        supernet = self.supernet
        supernet.set_active(members[0][1])
        images = self.images(self.space.image_sizes[members[0][1].image_code - 1])
        prefix = nn.Sequential(*[supernet.blocks[i] for i in supernet.active_blocks()[:1 + members[0][1].depths[0]]])
        per_image = self._prefix_bytes_per_image(prefix, images)
        if per_image * (images.num_calibration + images.num_eval) <= self.prefix_cache_bytes:
            with CalibrationPass(prefix) as calibrate:
                calibration = [calibrate(batch) for batch in images.calibration_batches()]
            with paddle.no_grad():
                evaluation = [(prefix(batch), labels) for batch, labels in images.eval_batches()]
            for key, arch in members:
                rest = self._rest_of(arch)
                with CalibrationPass(rest) as calibrate:
                    for batch in calibration:
                        calibrate(batch)
                yield key, self._rest_score(rest, evaluation)
            return
        yield from self._score_group_in_chunks(members, prefix, images, max(1, self.prefix_cache_bytes // per_image))

    def _score_group_in_chunks(self, members, prefix, images, chunk_images: int) -> Iterator[tuple[str, float]]:
        saved: dict[str, list] = {}
        seen = 0
        for chunk in _chunks(images.calibration_batches(), chunk_images):
            with CalibrationPass(prefix, seen) as calibrate:
                outputs = [calibrate(batch) for batch in chunk]
            for key, arch in members:
                rest = self._rest_of(arch)
                if key in saved:
                    restore_bn_statistics(rest, saved[key])
                with CalibrationPass(rest, seen) as calibrate:
                    for batch in outputs:
                        calibrate(batch)
                saved[key] = bn_statistics(rest)
            seen += sum(int(b.shape[0]) for b in chunk)
        sums = {key: 0.0 for key, _ in members}
        count = 0
        for chunk in _chunks(images.eval_batches(), chunk_images, images=lambda pair: pair[0]):
            with paddle.no_grad():
                evaluation = [(prefix(batch), labels) for batch, labels in chunk]
            for key, arch in members:
                rest = self._rest_of(arch)
                if key in saved:
                    restore_bn_statistics(rest, saved[key])
                sums[key] += self._rest_score(rest, evaluation, mean=False)
            count += sum(int(labels.shape[0]) for _, labels in chunk)
        for key, _ in members:
            yield key, sums[key] / count

    def _rest_of(self, arch: Arch) -> nn.Sequential:
        """Activate ``arch``; its layers after stage 1, head included."""
        self.supernet.set_active(arch)
        blocks = self.supernet.active_blocks()[1 + arch.depths[0]:]
        return nn.Sequential(*[self.supernet.blocks[i] for i in blocks])

    def _rest_score(self, rest: nn.Layer, evaluation: list, mean: bool = True) -> float:
        total, count = 0.0, 0
        with paddle.no_grad():
            for features, labels in evaluation:
                total += self._metric_sum(rest(features), labels)
                count += int(labels.shape[0])
        return total / count if mean else total

    @staticmethod
    def _prefix_bytes_per_image(prefix: nn.Layer, images: "FixedImages") -> int:
        """Bytes of one image's stage-1 output (one eval-mode forward of one image)."""
        first = next(iter(images.eval_batches()))[0][:1]
        with paddle.no_grad():
            return 4 * int(np.prod(prefix(first).shape))

    def finetune(self, model: nn.Layer, image_size: int) -> None:
        """``finetune_steps`` SGD steps of ``model`` on the fixed fine-tuning batches (see the
        class docstring)."""
        if image_size not in self._finetune_images:
            self._finetune_images[image_size] = load_fixed_images(
                self.image_dir, image_size, self.finetune_steps, self.finetune_batch_size, 1,
                self.seed + FINETUNE_KEY)
        batches = list(self._finetune_images[image_size].calibration_batches())
        labels = self._finetune_labels(image_size)
        schedule = paddle.optimizer.lr.CosineAnnealingDecay(self.finetune_lr, T_max=self.finetune_steps)
        optimizer = paddle.optimizer.Momentum(learning_rate=schedule, momentum=0.9, use_nesterov=True,
                                              parameters=model.parameters(), weight_decay=5e-4)
        model.train()
        for step in range(self.finetune_steps):
            k = step % len(batches)
            loss = paddle.nn.functional.cross_entropy(model(batches[k]), labels[k].reshape([-1, 1]))
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()

    def _finetune_labels(self, image_size: int) -> list:
        """Labels of the fine-tuning batches, in their order (decoded once)."""
        cache = self._finetune_images[image_size]
        if not hasattr(cache, "train_labels"):
            decode = build_transform(image_size, train=False, output="uint8")
            n = self.finetune_steps * self.finetune_batch_size
            train = ImageFolder(os.path.join(self.image_dir, "train"), decode, limit=n,
                                seed=self.seed + FINETUNE_KEY)
            order = np.random.default_rng(self.seed + FINETUNE_KEY).permutation(len(train))
            labels = np.array([train.samples[int(i)][1] for i in order], dtype=np.int64)
            cache.train_labels = [paddle.to_tensor(labels[i:i + self.finetune_batch_size])
                                  for i in range(0, len(labels), self.finetune_batch_size)]
        return cache.train_labels


def _chunks(batches: Iterable, max_images: int, images=lambda batch: batch) -> Iterator[list]:
    """Consecutive lists of ``batches`` of at most ``max_images`` images (at least one batch)."""
    chunk, held = [], 0
    for batch in batches:
        n = int(images(batch).shape[0])
        if chunk and held + n > max_images:
            yield chunk
            chunk, held = [], 0
        chunk.append(batch)
        held += n
    if chunk:
        yield chunk


def bn_layers(model: nn.Layer) -> list:
    """The BN layers of ``model`` (itself included), in sublayer order."""
    return [layer for layer in model.sublayers(include_self=True) if isinstance(layer, BN_TYPES)]


def bn_statistics(model: nn.Layer) -> list:
    """Copies of the running statistics of ``model``'s BN layers, for :func:`restore_bn_statistics`."""
    return [(layer._mean.clone(), layer._variance.clone()) for layer in bn_layers(model)]


def restore_bn_statistics(model: nn.Layer, saved: list) -> None:
    """Put back the statistics :func:`bn_statistics` copied from the same ``model``."""
    for layer, (mean, variance) in zip(bn_layers(model), saved):
        layer._mean.set_value(mean)
        layer._variance.set_value(variance)


def load_supernet(space: SearchSpace, checkpoint: str) -> tuple[ResNetSuperNet, str]:
    """A supernet of ``space`` holding ``checkpoint`` (folder, or path with or without .pdparams).

    Any wrapper layout loads (``_layers.`` of ``paddle.DataParallel``, ``model.`` ...).
    Returns the model and the resolved ``.pdparams`` path.
    """
    path = resolve_checkpoint(checkpoint)
    state = load_model_state(path)  # a truncated or foreign file fails here, naming it
    check_finite(state, path)  # a diverged run's weights would score every arch the same
    model = ResNetSuperNet(space)
    try:
        load_into(model, state, source=path)
    except ValueError as exc:
        raise ValueError(f"{exc}. Is the config's SearchSpace the one this checkpoint was trained "
                         f"with?") from None
    return model, path


# ---------------------------------------------------------------------------- shards
def shard_path(save_path: str, shard: int, num_shards: int) -> str:
    return f"{save_path}.shard{shard}of{num_shards}.jsonl"


def shard_assignment(archs: Mapping[str, dict], num_shards: int, space: SearchSpace) -> list[list[str]]:
    """The keys of ``archs`` (``{key: {"arch": code}}``) each of ``num_shards`` shards ranks.

    Archs sharing a stem and stage 1 (:func:`prefix_key`) stay in one shard, so
    :meth:`SubnetRanker.score_many` computes those layers once per group.  The groups are put in
    a fixed pseudo-random order (a hash of the key, so every shard size gets a mix of cheap and
    dear groups) and the archs in that order are cut into ``num_shards`` runs of equal length
    (within one); only the groups at the cuts are split.  Parses every code: call it once
    for all shards rather than once per shard.
    """
    keys = list(archs)
    labels = [repr(prefix_key(space, space.parse(archs[k]["arch"]))) for k in keys]
    order = sorted(range(len(keys)), key=lambda i: (hashlib.sha1(labels[i].encode()).hexdigest(), i))
    return [[keys[i] for i in order[shard * len(keys) // num_shards:(shard + 1) * len(keys) // num_shards]]
            for shard in range(num_shards)]


def shard_keys(archs: Mapping[str, dict], shard: int, num_shards: int, space: SearchSpace) -> list[str]:
    """The keys shard ``shard`` of ``num_shards`` ranks (see :func:`shard_assignment`)."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
    return shard_assignment(archs, num_shards, space)[shard]


def read_shard(path: str) -> tuple[dict | None, dict, int]:
    """``(settings, {key: (code, acc)}, bytes of complete lines)`` of a shard file."""
    with open(path, "rb") as f:
        return _parse_shard(f.read(), path)


def _parse_shard(data: bytes, path: str) -> tuple[dict | None, dict, int]:
    """A last line without its newline (a kill during the write) is left out; a broken complete
    line means the file was damaged otherwise, and is an error naming the line."""
    complete = data[: data.rfind(b"\n") + 1]
    settings, results = None, {}
    for number, line in enumerate(complete.splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} line {number} is not JSON ({exc}); delete the line to rerun "
                             f"its arch") from None
        if number == 1:
            settings = record.get("settings")
            if settings is None:
                raise ValueError(f"{path} does not start with a settings line; is it a shard file?")
        else:
            results[record["key"]] = (record["arch"], float(record["acc"]))
    return settings, results, len(complete)


SHARDING = "prefix groups"  # recorded in shard files: how shard_keys deals archs to shards


def space_of_shard(settings: dict | None, path: str) -> SearchSpace:
    """The search space a shard file was ranked in (its settings line records it)."""
    if not settings or settings.get("sharding") != SHARDING or "search_space" not in settings:
        raise ValueError(f"{path} was written by an older hnas that dealt archs to shards otherwise; "
                         f"rank again into another --save_path")
    return SearchSpace.from_config(settings["search_space"])


class ShardLog:
    """Append-only record of one shard's finished archs, flushed and fsync'd per arch.

    The first line records ``settings``; reopening with other settings is refused, so one
    file never mixes two checkpoints or two evaluation protocols.  The file is locked while
    open, so a second process on the same shard fails instead of interleaving lines.
    """

    def __init__(self, path: str, settings: dict):
        self.path = path
        settings = json.loads(json.dumps(settings))  # tuples -> lists, as they read back
        self._file = open(path, "a+b")
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise LockedError(f"{path} is in use by another process ranking the same shard; "
                                      f"wait for it to end (or stop it), or use another --save_path") from None
            self._file.seek(0)
            stored, self.results, valid = _parse_shard(self._file.read(), path)
            then, now = (stored or {}).get("checkpoint_id"), settings.get("checkpoint_id")
            if then is not None and then != now and stored.get("checkpoint") == settings.get("checkpoint"):
                raise ValueError(f"{path} holds scores of another checkpoint that was at "
                                 f"{settings.get('checkpoint')} (it has been replaced since: {_identity(then)} "
                                 f"then, {_identity(now)} now); rank into another --save_path or delete {path}")
            if stored is not None and stored != settings:
                changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
                raise ValueError(f"{path} was written with other settings ({', '.join(changed)}: "
                                 f"{[stored.get(k) for k in changed]} there, "
                                 f"{[settings.get(k) for k in changed]} now); use another --save_path "
                                 f"or delete the file")
            self._file.truncate(valid)  # drop a line cut short by a kill
            if stored is None:
                self._write({"settings": settings})
        except BaseException:
            self._file.close()
            raise

    def append(self, key: str, code: str, acc: float) -> None:
        self._write({"key": key, "arch": code, "acc": acc})
        self.results[key] = (code, acc)

    def close(self) -> None:
        self._file.close()

    def _write(self, record: dict) -> None:
        self._file.write((json.dumps(record) + "\n").encode())
        self._file.flush()
        os.fsync(self._file.fileno())


def _identity(checkpoint_id: dict | None) -> str:
    if not checkpoint_id:
        return "unknown"
    return f"{checkpoint_id.get('size')} bytes, sha256 {str(checkpoint_id.get('sha256'))[:12]}"


def rank_shard(ranker: SubnetRanker, archs: Mapping[str, dict], save_path: str, shard: int,
               num_shards: int, checkpoint: str, progress: bool = True) -> dict:
    """Score this shard's archs of ``archs`` (``{key: {"arch": code, ...}}``), skipping done ones.

    ``checkpoint`` is recorded in the shard file with the other settings.  Returns
    ``{key: acc}`` for the whole shard.  A progress bar with archs/s and ETA goes to stderr.
    """
    keys = shard_keys(archs, shard, num_shards, ranker.space)
    os.makedirs(os.path.dirname(os.path.abspath(save_path)), exist_ok=True)
    # The checkpoint's size and hash too: one replaced at the same path must not mix its scores in.
    # And how archs are dealt to shards: a file of another assignment must not be resumed.
    settings = {**ranker.settings(checkpoint), "checkpoint_id": file_identity(checkpoint),
                "sharding": SHARDING}
    log = ShardLog(shard_path(save_path, shard, num_shards), settings)
    try:
        for key, (code, _) in log.results.items():
            if key not in archs or archs[key]["arch"] != code:
                raise ValueError(f"{log.path} holds {key!r} = {code!r}, which the arch JSON does not; "
                                 f"use another --save_path or delete the file")
        todo = [k for k in keys if k not in log.results]
        sizes = {ranker.space.image_sizes[ranker.space.parse(archs[k]["arch"]).image_code - 1] for k in todo}
        for size in sorted(sizes):
            ranker.images(size)  # decode before the clock of the progress bar starts
        bar = tqdm(total=len(keys), initial=len(keys) - len(todo), unit="arch", file=sys.stderr,
                   desc=f"shard {shard}/{num_shards}", disable=not progress, dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)  # log files: a line per 30 s
        with bar:
            for key, score in ranker.score_many((key, archs[key]["arch"]) for key in todo):
                log.append(key, archs[key]["arch"], score)
                bar.update(1)
        return {k: log.results[k][1] for k in keys}
    finally:
        log.close()


def merge_shards(json_path: str, save_path: str, num_shards: int) -> dict:
    """Write ``save_path``: the arch JSON with every ``acc`` from the shard files, order kept.

    Raises naming the first arch without a result, its shard and file, and refuses shards
    written with different settings.
    """
    archs = read_arch_json(json_path)
    scores, reference, assignment = {}, None, None
    for shard in range(num_shards):
        path = shard_path(save_path, shard, num_shards)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"shard file {path} is missing: run shard {shard} of {num_shards} first")
        settings, results, _ = read_shard(path)
        if reference is not None and settings != reference:
            raise ValueError(f"{path} was written with other settings than shard 0: {settings} vs {reference}")
        reference = settings
        if assignment is None:  # every shard has these settings, so one assignment serves all
            assignment = shard_assignment(archs, num_shards, space_of_shard(settings, path))
        for key in assignment[shard]:
            if key not in results:
                raise ValueError(f"arch {key!r} has no result in {path} (shard {shard} of {num_shards}); "
                                 f"rerun that shard, it resumes where it stopped")
            code, acc = results[key]
            if code != archs[key]["arch"]:
                raise ValueError(f"arch {key!r} is {code!r} in {path} but {archs[key]['arch']!r} in {json_path}")
            scores[key] = acc
    merged = with_scores(archs, scores)
    write_arch_json(merged, save_path)
    return merged
