"""Datasets and THE preprocessing used by training, profiling and the live perception node.

Everything that feeds the backbone goes through :func:`preprocess`, so a camera frame on the robot
is converted exactly like the training images were, as the backbone's model card says: its
channels (grey or RGB), a square by centre crop or letterbox, an antialiased resize to the
variant's resolution, its per-channel mean/std (without a card: grey, centre crop, bilinear,
Fashion-MNIST's normalisation).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "MEAN",
    "STD",
    "DataError",
    "InputSpec",
    "Dataset",
    "read_idx",
    "load_fashion_mnist",
    "load_image_folder",
    "train_val_split",
    "holdout_size",
    "preprocess",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Pixel statistics of the Fashion-MNIST train split (after scaling to [0, 1]).
MEAN = 0.2860
STD = 0.3530

# ITU-R BT.601 luma weights, the same as Pillow's "L" mode and OpenCV's RGB2GRAY.
_LUMA = (0.299, 0.587, 0.114)
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
    they stack into one array; :func:`preprocess` then treats them like Fashion-MNIST.
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


class InputSpec(Protocol):
    """What the preprocessing reads of a model card (``core/model/card.py``'s ModelCard)."""

    channels: int                 # 1 (grey) or 3 (RGB)
    mean: tuple[float, ...]       # per channel, pixels scaled to [0, 1]
    std: tuple[float, ...]
    resize: str                   # "centre_crop" or "letterbox"
    interpolation: str            # "bilinear", "bicubic" or "nearest"


def _as_batch(images: np.ndarray, channels: int = 1) -> np.ndarray:
    """uint8 image(s) -> (N, H, W) grey or (N, H, W, 3) RGB float32, in [0, 255]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"expected uint8 images, got dtype {images.dtype}")
    if images.ndim == 2:                                    # (H, W)
        images = images[None]
    elif images.ndim == 3 and images.shape[-1] in (1, 3, 4) and \
            images.shape[-1] < images.shape[0]:
        images = images[None]                               # (H, W, C)
    if images.ndim == 3:                                    # (N, H, W)
        grey = images.astype(np.float32)
        return grey if channels == 1 else np.repeat(grey[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"expected (H, W), (H, W, C), (N, H, W) or (N, H, W, C) with C in 1/3/4, "
            f"got shape {images.shape}"
        )
    if images.shape[-1] == 1:
        grey = images[..., 0].astype(np.float32)
        return grey if channels == 1 else np.repeat(grey[..., None], 3, axis=-1)
    rgb = images[..., :3].astype(np.float32)                # RGBA: alpha is dropped
    return rgb @ np.asarray(_LUMA, dtype=np.float32) if channels == 1 else rgb


def _square(batch: np.ndarray, resize: str, fill: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) -> (N, S, S[, C]): the centred square of side min(H, W), or the whole
    image centred on a square of side max(H, W) filled with ``fill`` (letterbox)."""
    h, w = batch.shape[1:3]
    if resize != "letterbox":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return batch[:, top:top + side, left:left + side]
    side = max(h, w)
    out = np.empty((len(batch), side, side) + batch.shape[3:], np.float32)
    out[...] = fill
    top, left = (side - h) // 2, (side - w) // 2
    out[:, top:top + h, left:left + w] = batch
    return out


def preprocess(images: np.ndarray, resolution: int, card: InputSpec | None = None) -> Tensor:
    """uint8 image(s) -> normalised float32 tensor (N, channels, resolution, resolution).

    Accepts (H, W) grey, (H, W, C) with C in {1, 3 (RGB), 4 (RGBA)}, or batches (N, H, W[, C]).
    Without ``card`` (or with a grey one): colour is converted to grey (BT.601); with a colour
    card, grey is replicated to RGB and alpha dropped. A non-square frame is fitted to a square
    by the card's resize policy (default: centre crop, so a 640x480 camera frame keeps its
    aspect ratio; letterbox pads with the mean colour), then resized with the card's
    interpolation (default bilinear), antialiased when downscaling, and normalised with the
    card's per-channel mean/std (default: Fashion-MNIST's).
    """
    if int(resolution) <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    channels = card.channels if card is not None else 1
    mean, std = (card.mean, card.std) if card is not None else ((MEAN,), (STD,))
    resize = card.resize if card is not None else "centre_crop"
    mode = card.interpolation if card is not None else "bilinear"
    images = np.asarray(images)
    if images.ndim == 3 and images.shape[-1] in (1, 3, 4) and images.shape[-1] < images.shape[0]:
        h, w = images.shape[:2]  # one colour frame: crop the uint8 pixels before converting
        if h != w and 0 not in images.shape and resize == "centre_crop":
            side = min(h, w)      # (grey is per pixel, so this is exact and spares converting
            top, left = (h - side) // 2, (w - side) // 2    # a 640x480 frame's margins)
            images = images[top:top + side, left:left + side]
    batch = _as_batch(images, channels)
    n, h, w = batch.shape[:3]
    if n == 0 or h == 0 or w == 0:
        raise DataError(f"empty image batch of shape {batch.shape}")
    if h != w:
        batch = _square(batch, resize, np.asarray(mean, np.float32) * 255.0)
    x = torch.from_numpy(np.ascontiguousarray(batch))
    x = x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2)
    if x.shape[-1] != resolution:
        smooth = mode != "nearest"
        x = F.interpolate(x, size=(resolution, resolution), mode=mode,
                          align_corners=False if smooth else None,
                          antialias=smooth and x.shape[-1] > resolution)
    if channels == 1:
        return (x * (1.0 / 255.0) - mean[0]) / std[0]
    return torch.cat([(x[:, c:c + 1] * (1.0 / 255.0) - m) / s
                      for c, (m, s) in enumerate(zip(mean, std, strict=True))], 1)
