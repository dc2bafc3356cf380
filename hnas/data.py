"""Image-folder datasets and transforms (ImageNet layout), plus small real and synthetic data.

``image_dir/train/<class>/*.jpg`` and ``image_dir/val/<class>/*.jpg``, as the baseline reads
ImageNet.  Images are returned as CHW float32 arrays normalised with ImageNet statistics.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import random
import re
import sys
import threading
import warnings

import numpy as np
import paddle
from PIL import Image, ImageFilter
from paddle.vision import transforms as T

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SKIP_HINT = "replace or remove it, or pass --on_error skip to skip unreadable images"
SMALL_IMAGE = 64  # at or below this size, use CIFAR-style pad-and-crop instead of resized crops
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "boot")


class UnreadableImageError(RuntimeError):
    """An image file that PIL cannot decode (random bytes, zero bytes, a truncated JPEG).

    The message is one line naming the file.  Paddle's DataLoader workers re-raise it in the
    main process with the worker's traceback in the message; :func:`error_line` recovers the line.
    """


def error_line(exc: BaseException) -> str:
    """The one-line message of ``exc`` for a user.

    An exception re-raised by a ``paddle.io.DataLoader`` worker carries the worker's whole
    traceback as its message; its last line (``module.Type: message``) is the message proper.
    """
    text = str(exc.args[0]) if exc.args else str(exc)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return text.strip()
    return re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1].strip())


def _in_loader_thread(tb) -> bool:
    """True if traceback ``tb`` runs through the batch-reading thread of ``paddle.io.DataLoader``."""
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "_thread_loop" and "dataloader" in code.co_filename.replace(os.sep, "/"):
            return True
        tb = tb.tb_next
    return False


@contextlib.contextmanager
def exit_on_loader_thread_error(prog: str):
    """While active, an exception that ends a ``paddle.io.DataLoader`` reading thread ends the
    process with one line on stderr: exit 2 for an :class:`UnreadableImageError`, 1 otherwise.

    Why: with ``num_workers=0`` the DataLoader reads batches in a thread of the main process;
    an exception in the dataset ends that thread without closing the batch queue, and the main
    thread then waits for the next batch forever (the training "hangs").  Nothing else can wake
    it, so the process stops here.  Checkpoints are written atomically, so none is left broken.
    """
    previous = threading.excepthook

    def hook(args):
        if args.exc_type is SystemExit or not _in_loader_thread(args.exc_traceback):
            previous(args)
            return
        if isinstance(args.exc_value, UnreadableImageError):
            message, code = error_line(args.exc_value), 2
        else:
            previous(args)  # an unexpected error: keep its traceback
            message, code = f"the data loader thread stopped on {args.exc_type.__name__}: {args.exc_value}", 1
        sys.stdout.flush()
        sys.stderr.write(f"{prog}: error: {message}\n")
        sys.stderr.flush()
        os._exit(code)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


class ToCHWArray:
    """PIL image -> normalised ``[3, H, W]`` float32 array."""

    def __init__(self, mean=MEAN, std=STD):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def __call__(self, img: Image.Image) -> np.ndarray:
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (arr - self.mean) / self.std


def to_uint8_chw(img: Image.Image) -> np.ndarray:
    """PIL image -> ``[3, H, W]`` uint8 array (a quarter of the float32 size, for caches)."""
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def build_transform(image_size: int, train: bool, output: str = "normalized"):
    """Training: random-resized crop + flip (pad-and-crop + flip for small images).
    Evaluation: resize + center crop (plain resize for small images).

    ``output="normalized"`` ends in :class:`ToCHWArray`; ``"uint8"`` ends in
    :func:`to_uint8_chw`, for callers that cache images and normalise later.
    """
    if output not in ("normalized", "uint8"):
        raise ValueError(f"output must be 'normalized' or 'uint8', got {output!r}")
    if image_size <= SMALL_IMAGE:
        ops = [T.Resize((image_size, image_size))]
        if train:
            ops += [T.RandomCrop(image_size, padding=image_size // 8), T.RandomHorizontalFlip()]
    elif train:
        ops = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(int(round(image_size / 0.875))), T.CenterCrop(image_size)]
    return T.Compose(ops + [ToCHWArray() if output == "normalized" else to_uint8_chw])


def build_contrastive_transform(image_size: int, color_jitter: bool = False, blur: bool = False,
                                scale: tuple[float, float] = (0.08, 1.0)):
    """One random view for contrastive learning: PIL image -> normalised ``[3, S, S]`` array.

    Random-resized crop (area ``scale``, at every image size) + horizontal flip, as the 1st
    place's stage 1; ``color_jitter`` adds MoCo v2's jitter (brightness/contrast/saturation 0.4,
    hue 0.1, p 0.8) and grayscale (p 0.2), ``blur`` its Gaussian blur (sigma 0.1-2 px, p 0.5).
    Every draw comes from the global ``random`` module, so two calls under one seed give two
    different but reproducible views (see ``hnas.trainer.EpochSeededDataset``).
    """
    ops = [T.RandomResizedCrop(image_size, scale=scale), T.RandomHorizontalFlip()]
    if color_jitter:
        ops += [_RandomApply(T.ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8), _RandomApply(T.Grayscale(3), 0.2)]
    if blur:
        ops += [_RandomApply(_GaussianBlur(0.1, 2.0), 0.5)]
    return T.Compose(ops + [ToCHWArray()])


class _RandomApply:
    """Apply ``op`` with probability ``p`` (drawn from the global ``random``)."""

    def __init__(self, op, p: float):
        self.op, self.p = op, p

    def __call__(self, img):
        return self.op(img) if random.random() < self.p else img


class _GaussianBlur:
    """PIL Gaussian blur with sigma uniform in ``[low, high]`` pixels."""

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.low, self.high)))


class ImageFolder(paddle.io.Dataset):
    """``root/<class>/<image>`` as (image, label) pairs; classes sorted by name.

    Args:
        root: the split folder.
        transform: PIL image -> array.
        on_error: ``"raise"`` (default) fails with an :class:`UnreadableImageError` naming the
            unreadable file; ``"skip"`` warns and serves the next readable image instead, so one
            corrupt JPEG does not end a long run.
        hint: what the error message suggests doing about an unreadable image.
        per_class: keep the first N images (sorted by name) of every class.
        limit: keep a fixed pseudo-random subset of N images (seeded, so every rank agrees).
    """

    def __init__(self, root: str, transform=None, on_error: str = "raise", per_class: int | None = None,
                 limit: int | None = None, seed: int = 0, hint: str = SKIP_HINT):
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist")
        self.root, self.transform, self.on_error, self.hint = root, transform, on_error, hint
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        if not self.classes:
            raise ValueError(f"image folder {root!r} has no class sub-folders")
        samples = []
        for label, name in enumerate(self.classes):
            folder = os.path.join(root, name)
            files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
            if per_class is not None:
                files = files[:per_class]
            samples += [(os.path.join(folder, f), label) for f in files]
        if not samples:
            raise ValueError(f"image folder {root!r} has class folders but no images "
                             f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        if limit is not None and limit < len(samples):
            keep = np.sort(np.random.default_rng(seed).permutation(len(samples))[:limit])
            samples = [samples[i] for i in keep]
        self.samples = samples
        self._warned: set = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB")
            except Exception as exc:  # PIL raises several types for corrupt files
                if self.on_error == "raise":
                    reason = " ".join(str(exc).replace(repr(path), "").replace(path, "").split())
                    reason = reason.strip(" :") or type(exc).__name__
                    raise UnreadableImageError(f"cannot read image {path} ({reason}); {self.hint}") from None
                if path not in self._warned:
                    self._warned.add(path)
                    warnings.warn(f"skipping unreadable image {path}: {exc}")
                continue
            image = self.transform(img) if self.transform is not None else img
            return image, np.int64(label)
        raise UnreadableImageError(f"no readable image in {self.root}")


def build_dataset(image_dir: str, split: str, image_size: int, train: bool | None = None,
                  per_class: int | None = None, limit: int | None = None, on_error: str = "raise",
                  seed: int = 0) -> ImageFolder:
    """``image_dir/split`` with the transforms for ``train`` (default: ``split == "train"``)."""
    train = split == "train" if train is None else train
    root = os.path.join(image_dir, split)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{image_dir!r} has no {split!r} folder (expected {root}/<class>/<image>)")
    return ImageFolder(root, build_transform(image_size, train), on_error=on_error,
                       per_class=per_class, limit=limit, seed=seed)


def class_folders(root: str) -> list[str]:
    """The class sub-folders of a split folder, sorted (their order is the label order)."""
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def check_class_folders(image_dir: str, num_classes: int, splits=("train", "val")) -> None:
    """Refuse a dataset whose labels would be silently wrong.

    Labels are the positions of the sorted class folders, so every split present must have
    the same class folders (a class missing from ``val`` shifts every later label by one),
    none of them empty, and as many as the network has outputs (``num_classes``).

    Raises:
        ValueError: naming the folders that differ, the empty ones, or the counts.
    """
    found = {}
    for split in splits:
        root = os.path.join(image_dir, split)
        if os.path.isdir(root):
            found[split] = class_folders(root)
    if not found:
        raise FileNotFoundError(f"{image_dir!r} has none of the folders {', '.join(splits)}")
    (first, classes), *others = found.items()
    for split, names in others:
        missing = sorted(set(classes) - set(names))
        extra = sorted(set(names) - set(classes))
        if missing or extra:
            parts = [f"{split}/ lacks {_some(missing)}" if missing else "",
                     f"{split}/ has {_some(extra)} that {first}/ lacks" if extra else ""]
            raise ValueError(f"{image_dir}: {first}/ and {split}/ must have the same class folders "
                             f"(labels follow their sorted order): {'; '.join(p for p in parts if p)}")
    for split, names in found.items():
        empty = [name for name in names if not any(
            f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(os.path.join(image_dir, split, name)))]
        if empty:
            raise ValueError(f"{os.path.join(image_dir, split)} has empty class folders (no images): "
                             f"{_some(empty)}; remove them or add images")
    if len(classes) != num_classes:
        raise ValueError(f"{os.path.join(image_dir, first)} has {len(classes)} class folders "
                         f"({_some(classes)}) but SearchSpace.num_classes is {num_classes}; "
                         f"set -o SearchSpace.num_classes={len(classes)} or use the right folder")


def check_batch_size(num_images: int, batch_size: int, world_size: int = 1, where: str = "the training set") -> None:
    """Refuse a training batch larger than the data: not one full step could run."""
    if num_images < batch_size * world_size:
        raise ValueError(f"{where} has {num_images} images, fewer than one batch of {batch_size} x "
                         f"{world_size} process(es); lower --batch_size to {max(num_images // world_size, 1)} "
                         f"or less, or use more images")


def _some(names, limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def make_image_folder(root: str, num_classes: int = 4, per_class: int = 8, image_size: int = 32,
                      seed: int = 0, splits=("train", "val")) -> str:
    """Write a small learnable PNG folder: class k is a stripe pattern of its own orientation
    and colour under noise.  For tests and smoke runs; returns ``root``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    for split in splits:
        for k in range(num_classes):
            folder = os.path.join(root, split, f"class{k:03d}")
            os.makedirs(folder, exist_ok=True)
            angle = np.pi * k / num_classes
            colour = np.array([(k * 97) % 256, (k * 57 + 80) % 256, (k * 31 + 160) % 256]) / 255.0
            for i in range(per_class):
                phase = rng.uniform(0, 2 * np.pi)
                wave = 0.5 + 0.5 * np.sin(12 * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
                img = wave[..., None] * colour + rng.normal(0, 0.15, (image_size, image_size, 3))
                img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
                Image.fromarray(img).save(os.path.join(folder, f"{split}_{i:05d}.png"))
    return root


def export_fashion_mnist(out_dir: str, image_size: int = 32, train_per_class: int | None = None,
                         val_per_class: int | None = None, source: str = FASHION_MNIST_DIR,
                         subset_seeds: tuple[int, int] | None = None, pad_value: int | None = None) -> str:
    """Write Debian's Fashion-MNIST as an RGB ImageFolder (train = its train set, val = t10k).

    By default a split keeps the first ``*_per_class`` images of each class and each 28 px
    image is resized to ``image_size``.  ``subset_seeds=(s_train, s_val)`` draws them instead
    as ``np.random.RandomState(s).choice(indices of class c, per_class, replace=False)`` for
    c = 0..9 (the protocol of the shared Fashion-MNIST ground truth), and ``pad_value`` pads
    the 28 px image to ``image_size`` with that grey level instead of resizing it.  Files are
    named by their index in the source split, so a folder lists them in source order.
    """
    for (split, prefix, limit), seed in zip((("train", "train", train_per_class), ("val", "t10k", val_per_class)),
                                            subset_seeds or (None, None)):
        images = _read_idx(os.path.join(source, f"{prefix}-images-idx3-ubyte.gz"))
        labels = _read_idx(os.path.join(source, f"{prefix}-labels-idx1-ubyte.gz"))
        if seed is not None and limit is not None:
            rng = np.random.RandomState(seed)
            keep = np.sort(np.concatenate([rng.choice(np.nonzero(labels == c)[0], limit, replace=False)
                                           for c in range(len(FASHION_MNIST_CLASSES))]))
        else:
            counts = np.zeros(len(FASHION_MNIST_CLASSES), dtype=int)
            keep = []
            for i, label in enumerate(labels):
                if limit is None or counts[label] < limit:
                    counts[label] += 1
                    keep.append(i)
        for k in FASHION_MNIST_CLASSES:
            os.makedirs(os.path.join(out_dir, split, k), exist_ok=True)
        for i in keep:
            img, label = images[i], labels[i]
            if pad_value is not None:
                before = (image_size - img.shape[0]) // 2
                after = image_size - img.shape[0] - before
                pil = Image.fromarray(np.pad(img, (before, after), constant_values=pad_value)).convert("RGB")
            else:
                pil = Image.fromarray(img).convert("RGB").resize((image_size, image_size), Image.BILINEAR)
            pil.save(os.path.join(out_dir, split, FASHION_MNIST_CLASSES[label], f"{i:05d}.png"))
    return out_dir


def _read_idx(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; install Debian's dataset-fashion-mnist "
                                f"(apt-get install dataset-fashion-mnist)")
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
