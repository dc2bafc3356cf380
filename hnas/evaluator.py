"""Rank subnets by supernet accuracy: BN recalibration, fixed images, sharded resumable runs.

Per arch: ``set_active(arch)``, re-estimate BN statistics on K fixed training batches, then
top-1 on a fixed subset of M validation images.  The images are decoded once per image size
and kept as tensors; the network is never rebuilt.  Recalibration rewrites every
statistic the arch reads, so a score does not depend on which archs ran before it, and
shards, restarts and a single uninterrupted run give the same numbers.

A shard ``I`` of ``N`` takes archs ``i`` with ``i % N == I`` (round-robin in file order, so
shards stay balanced whatever the order of the list) and appends one JSON line per finished
arch to ``{save_path}.shard{I}of{N}.jsonl``; :func:`merge_shards` writes the submission.
"""
from __future__ import annotations

import dataclasses
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
                 "finetune_init": "supernet"}
SCORES = ("acc", "loss")  # top-1, or minus the mean cross-entropy (higher = better for both)
FINETUNE_KEY = 0xF1E7  # seed offset of the fine-tuning images, apart from the calibration ones
FLOAT_CACHE_BYTES = 1 << 30  # fixed images up to 1 GiB as float32; beyond, uint8 (normalised per batch)


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
    layers = model.sublayers(include_self=True)
    flags = [layer.training for layer in layers]
    bn_layers = [layer for layer in layers if isinstance(layer, BN_TYPES)]
    momenta = [layer._momentum for layer in bn_layers]
    seen = [0] * len(bn_layers)

    def cumulative_momentum(index):
        def hook(layer, inputs):
            n = int(inputs[0].shape[0])
            layer._momentum = seen[index] / (seen[index] + n)
            seen[index] += n
        return hook

    handles = [layer.register_forward_pre_hook(cumulative_momentum(i)) for i, layer in enumerate(bn_layers)]
    images = 0
    try:
        for layer in layers:  # set flags directly: Layer.train() also flips the global tracer mode
            layer.training = isinstance(layer, BN_TYPES)
        with paddle.no_grad():
            for batch in batches:
                batch = batch if isinstance(batch, paddle.Tensor) else paddle.to_tensor(batch)
                model(batch)
                images += int(batch.shape[0])
    finally:
        for handle in handles:
            handle.remove()
        for layer, momentum in zip(bn_layers, momenta):
            layer._momentum = momentum
        for layer, flag in zip(layers, flags):
            layer.training = flag
    return images


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
    """

    def __init__(self, supernet: ResNetSuperNet, image_dir: str, calib_batches: int, eval_images: int,
                 batch_size: int, seed: int = 0, score: str = "acc", finetune_steps: int = 0,
                 finetune_lr: float = 0.02, finetune_batch_size: int = 128, on_error: str = "raise",
                 finetune_init: str = "supernet"):
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
        if finetune_init not in ("supernet", "scratch"):
            raise ValueError(f"finetune_init must be 'supernet' or 'scratch'; got {finetune_init!r}")
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
                logits = model(batch)
                if self.metric == "acc":
                    total += int((logits.argmax(axis=1) == labels).astype("int64").sum().item())
                else:
                    loss = paddle.nn.functional.cross_entropy(logits, labels.reshape([-1, 1]), reduction="sum")
                    total -= float(loss.item())
                count += int(labels.shape[0])
        if count == 0 and num_shards == 1:
            raise ValueError("no evaluation images")
        return total, count

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


def shard_keys(keys: list[str], shard: int, num_shards: int) -> list[str]:
    """Round-robin: the keys at positions ``i`` with ``i % num_shards == shard``."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
    return keys[shard::num_shards]


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
    keys = shard_keys(list(archs), shard, num_shards)
    os.makedirs(os.path.dirname(os.path.abspath(save_path)), exist_ok=True)
    # The checkpoint's size and hash too: one replaced at the same path must not mix its scores in.
    settings = {**ranker.settings(checkpoint), "checkpoint_id": file_identity(checkpoint)}
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
            for key in todo:
                code = archs[key]["arch"]
                log.append(key, code, ranker.score(code))
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
    keys = list(archs)
    scores, reference = {}, None
    for shard in range(num_shards):
        path = shard_path(save_path, shard, num_shards)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"shard file {path} is missing: run shard {shard} of {num_shards} first")
        settings, results, _ = read_shard(path)
        if reference is not None and settings != reference:
            raise ValueError(f"{path} was written with other settings than shard 0: {settings} vs {reference}")
        reference = settings
        for key in shard_keys(keys, shard, num_shards):
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
