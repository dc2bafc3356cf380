"""hnas.data: folder errors, unreadable images, subsets, transforms, the synthetic folder."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from hnas.data import ImageFolder, build_dataset, build_transform, make_image_folder


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("images")), num_classes=3, per_class=6,
                             image_size=16, seed=0)


def test_missing_and_empty_folders_fail_with_clear_errors(tmp_path, image_root):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no 'test' folder"):
        build_dataset(image_root, "test", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(str(tmp_path / "empty"))
    (tmp_path / "no_images" / "cat").mkdir(parents=True)
    (tmp_path / "no_images" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(str(tmp_path / "no_images"))
    with pytest.raises(ValueError, match="on_error"):
        ImageFolder(os.path.join(image_root, "train"), on_error="ignore")


def test_a_corrupt_image_raises_naming_the_file_or_is_skipped(tmp_path):
    root = make_image_folder(str(tmp_path / "data"), num_classes=2, per_class=3, image_size=16, seed=1,
                             splits=("train",))
    bad = os.path.join(root, "train", "class000", "train_00000.png")
    with open(bad, "wb") as f:
        f.write(b"this is not a png")
    strict = build_dataset(root, "train", 16)
    with pytest.raises(RuntimeError, match="train_00000.png"):
        strict[0]
    lenient = build_dataset(root, "train", 16, train=False, on_error="skip")
    assert len(lenient) == 6
    with pytest.warns(UserWarning, match="skipping unreadable image .*train_00000.png"):
        image, label = lenient[0]
    np.testing.assert_array_equal(image, lenient[1][0])  # served the next readable image
    assert image.shape == (3, 16, 16) and int(label) == 0


def test_per_class_keeps_the_first_images_of_every_class(image_root):
    dataset = build_dataset(image_root, "train", 16, per_class=2)
    assert len(dataset) == 3 * 2
    names = [os.path.basename(p) for p, _ in dataset.samples]
    assert names == ["train_00000.png", "train_00001.png"] * 3
    assert [label for _, label in dataset.samples] == [0, 0, 1, 1, 2, 2]
    assert dataset.classes == ["class000", "class001", "class002"]


def test_limit_is_a_fixed_seeded_subset(image_root):
    full = build_dataset(image_root, "train", 16)
    subset = build_dataset(image_root, "train", 16, limit=7, seed=0)
    again = build_dataset(image_root, "train", 16, limit=7, seed=0)
    other = build_dataset(image_root, "train", 16, limit=7, seed=1)
    assert len(subset) == 7 and subset.samples == again.samples
    assert set(subset.samples) <= set(full.samples)
    assert subset.samples != other.samples
    assert subset.samples == sorted(subset.samples, key=full.samples.index)  # file order kept
    assert len(build_dataset(image_root, "train", 16, limit=100)) == len(full)


@pytest.mark.parametrize("image_size, source_size", [(16, (16, 16)), (32, (40, 24)), (96, (120, 100))])
def test_transforms_give_normalised_chw_float32(image_size, source_size):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (source_size[1], source_size[0], 3), dtype=np.uint8))
    for train in (True, False):
        out = build_transform(image_size, train)(img)
        assert out.shape == (3, image_size, image_size) and out.dtype == np.float32
        assert -2.2 < out.min() and out.max() < 2.7  # (x / 255 - mean) / std
    evaluation = build_transform(image_size, train=False)
    np.testing.assert_array_equal(evaluation(img), evaluation(img))  # no randomness at eval


def test_synthetic_folder_is_deterministic_and_laid_out_like_imagenet(tmp_path):
    a = make_image_folder(str(tmp_path / "a"), num_classes=2, per_class=2, image_size=8, seed=5)
    b = make_image_folder(str(tmp_path / "b"), num_classes=2, per_class=2, image_size=8, seed=5)
    for split in ("train", "val"):
        for k in range(2):
            names = sorted(os.listdir(os.path.join(a, split, f"class{k:03d}")))
            assert len(names) == 2
            for name in names:
                pa, pb = (np.asarray(Image.open(os.path.join(r, split, f"class{k:03d}", name))) for r in (a, b))
                np.testing.assert_array_equal(pa, pb)
    train = build_dataset(a, "train", 8)
    image, label = train[0]
    assert image.shape == (3, 8, 8) and label.dtype == np.int64
