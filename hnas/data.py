"""Image-folder datasets and transforms (ImageNet layout), plus small real and synthetic data.

``image_dir/train/<class>/*.jpg`` and ``image_dir/val/<class>/*.jpg``, as the baseline reads
ImageNet.  Images are returned as CHW float32 arrays normalised with ImageNet statistics.
"""
from __future__ import annotations

import gzip
import os
import warnings

import numpy as np
import paddle
from PIL import Image
from paddle.vision import transforms as T

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SMALL_IMAGE = 64  # at or below this size, use CIFAR-style pad-and-crop instead of resized crops
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "boot")


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


class ImageFolder(paddle.io.Dataset):
    """``root/<class>/<image>`` as (image, label) pairs; classes sorted by name.

    Args:
        root: the split folder.
        transform: PIL image -> array.
        on_error: ``"raise"`` (default) fails naming the unreadable file; ``"skip"`` warns and
            serves the next readable image instead, so one corrupt JPEG does not end a long run.
        per_class: keep the first N images (sorted by name) of every class.
        limit: keep a fixed pseudo-random subset of N images (seeded, so every rank agrees).
    """

    def __init__(self, root: str, transform=None, on_error: str = "raise", per_class: int | None = None,
                 limit: int | None = None, seed: int = 0):
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist")
        self.root, self.transform, self.on_error = root, transform, on_error
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
                    raise RuntimeError(f"cannot read image {path}: {exc}") from exc
                if path not in self._warned:
                    self._warned.add(path)
                    warnings.warn(f"skipping unreadable image {path}: {exc}")
                continue
            image = self.transform(img) if self.transform is not None else img
            return image, np.int64(label)
        raise RuntimeError(f"no readable image in {self.root}")


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
                         val_per_class: int | None = None, source: str = FASHION_MNIST_DIR) -> str:
    """Write Debian's Fashion-MNIST as an RGB ImageFolder (train = its train set, val = t10k)."""
    for split, prefix, limit in (("train", "train", train_per_class), ("val", "t10k", val_per_class)):
        images = _read_idx(os.path.join(source, f"{prefix}-images-idx3-ubyte.gz"))
        labels = _read_idx(os.path.join(source, f"{prefix}-labels-idx1-ubyte.gz"))
        counts = np.zeros(len(FASHION_MNIST_CLASSES), dtype=int)
        for k in FASHION_MNIST_CLASSES:
            os.makedirs(os.path.join(out_dir, split, k), exist_ok=True)
        for i, (img, label) in enumerate(zip(images, labels)):
            if limit is not None and counts[label] >= limit:
                continue
            counts[label] += 1
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
