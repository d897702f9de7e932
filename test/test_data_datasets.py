"""Datasets: IDX files, Fashion-MNIST, image folders, the train/val split (no ROS)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from adaspring_ros.core.data.datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    DataError,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
    train_val_split,
)


def _write_idx(path, array: np.ndarray, type_code: int = 0x08, extra: bytes = b"") -> None:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes() + extra)


def test_read_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)


def test_read_idx_rejects_bad_files(tmp_path):
    a = np.zeros((2, 3), dtype=np.uint8)
    _write_idx(tmp_path / "long.gz", a, extra=b"\x00")
    with pytest.raises(DataError, match="holds"):
        read_idx(tmp_path / "long.gz")
    _write_idx(tmp_path / "float.gz", a, type_code=0x0D)
    with pytest.raises(DataError, match="not supported"):
        read_idx(tmp_path / "float.gz")
    with gzip.open(tmp_path / "magic.gz", "wb") as fh:
        fh.write(b"\x12\x34\x08\x01\x00\x00\x00\x00")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic.gz")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing.gz")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_test_split():
    test = load_fashion_mnist("test")
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == np.uint8
    assert test.classes == FASHION_MNIST_CLASSES and set(np.unique(test.labels)) == set(range(10))
    with pytest.raises(ValueError):
        load_fashion_mnist("validation")


def test_train_val_split_is_deterministic_and_disjoint():
    a_train, a_val = train_val_split(1000, 100, seed=3)
    b_train, b_val = train_val_split(1000, 100, seed=3)
    np.testing.assert_array_equal(a_val, b_val)
    assert len(a_val) == 100 and len(a_train) == 900
    assert not set(a_train) & set(a_val)
    with pytest.raises(ValueError):
        train_val_split(10, 10)


def test_image_folder(tmp_path):
    from PIL import Image

    for name, value in (("cat", 10), ("dog", 200)):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), (value, value, value)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = load_image_folder(tmp_path)
    assert ds.classes == ("cat", "dog") and ds.images.shape == (4, 28, 28)
    assert list(ds.labels) == [0, 0, 1, 1]
    with pytest.raises(DataError):
        load_image_folder(tmp_path / "nothing")
