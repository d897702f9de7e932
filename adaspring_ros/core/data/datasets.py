"""Datasets: labelled uint8 images in memory, from Fashion-MNIST's IDX files or an image folder.

What feeds the backbone is converted by ``transforms.preprocess``; the images here stay uint8 as
read (a camera frame arrives the same way).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "DataError",
    "Dataset",
    "read_idx",
    "load_fashion_mnist",
    "load_image_folder",
    "train_val_split",
    "holdout_size",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_DTYPES = {0x08: np.uint8}


class DataError(ValueError):
    """A dataset file or an image array that cannot be used."""


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 (N, H, W) or (N, H, W, C) with integer labels (N,) and class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "Dataset":
        return Dataset(self.images[indices], self.labels[indices], self.classes)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one (optionally gzip-compressed) IDX file into a numpy array.

    Raises:
        DataError: the file is missing, truncated, or not an unsigned-byte IDX file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise DataError(f"{path}: IDX element type 0x{type_code:02x} is not supported "
                        "(uint8 only)")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX header says {shape} ({expected} bytes) but the file holds "
            f"{len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=_IDX_DTYPES[type_code], offset=header).reshape(shape)


def load_fashion_mnist(split: str = "train", root: str | Path = FASHION_MNIST_DIR) -> Dataset:
    """Fashion-MNIST ``split`` ("train": 60k, "test": 10k) from Debian's IDX files."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{root}: expected images (N, H, W) and labels (N,), got "
                        f"{images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{root}: {len(images)} images but {len(labels)} labels")
    if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{root}: label {labels.max()} out of range")
    return Dataset(images, labels.astype(np.int64), FASHION_MNIST_CLASSES)


def load_image_folder(root: str | Path, size: int = 28) -> Dataset:
    """An ImageFolder: one sub-folder per class (sorted names), images of any size/mode.

    Images are converted to 8-bit grey and resized to ``size`` x ``size`` with Pillow so that
    they stack into one array; ``transforms.preprocess`` then treats them like Fashion-MNIST.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders")
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if not file.is_file():
                continue
            try:
                with Image.open(file) as img:
                    grey = img.convert("L").resize((size, size), Image.BILINEAR)
            except (UnidentifiedImageError, OSError):
                continue  # not an image (README, .DS_Store, ...): skip it
            images.append(np.asarray(grey, dtype=np.uint8))
            labels.append(label)
    if not images:
        raise DataError(f"image folder {root} holds no readable images")
    return Dataset(np.stack(images), np.asarray(labels, dtype=np.int64), classes)


def train_val_split(
    num_items: int, val_size: int = 5000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train_indices, val_indices) of a train split; same seed, same split."""
    if not 0 <= val_size < num_items:
        raise ValueError(f"val_size must be in [0, {num_items}), got {val_size}")
    order = np.random.default_rng(seed).permutation(num_items)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def holdout_size(num_items: int, cap: int = 5000) -> int:
    """Images a train split of ``num_items`` holds out for validation: a fifth, at most ``cap``
    (Fashion-MNIST: 5,000 of 60,000; 300 images: 60), so that small data sets split too."""
    return max(0, min(int(cap), num_items // 5))
