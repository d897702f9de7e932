"""Image folders: a user's own labelled images, indexed without reading pixels and streamed.

Layout: ``ROOT/<class>/...`` (every image under a class sub-folder, at any depth), or the same
below ``ROOT/train/`` with optional ``ROOT/val/`` and ``ROOT/test/`` splits. A split the folder
does not give is carved from the train split, deterministically: the files are ordered by a
hash of their path, so the split depends only on the file list (not on the order a file system
lists it, nor on the machine), and each class gives the same share, a tenth of the train split
at most 5,000 images in all (a few hundred images split too).

:func:`index_image_folder` only lists names: a folder of 10^5 files is indexed in well under a
second. Files whose suffix no Pillow plugin claims (README, .json, ...) are skipped and counted.
:func:`scan_headers` opens every file's header (never its pixels) to learn whether all images
are grey and to drop files that are not readable images, counted. :class:`ImageFiles` is the
torch map-style dataset that decodes one file per item (in the DataLoader's worker processes),
converted to 8-bit grey or RGB (16-bit and 32-bit integer images scaled from 0..65535, palette
and alpha composited on mid grey) and fitted to a square (centre crop or letterbox) of a fixed
side. A file that fails to decode there (truncated data behind a valid header) is replaced by
the next readable file of the split and counted in ``failures``, shared with the workers.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.utils.data as tud
from PIL import Image

from adaspring_ros.core.data.datasets import DataError, Dataset

__all__ = ["SPLITS", "HOLDOUT_SHARE", "FileList", "ImageFolder", "HeaderScan",
           "index_image_folder", "scan_headers", "load_image", "ImageFiles", "collate",
           "batches", "pixel_stats", "in_memory", "RESAMPLE"]

SPLITS = ("train", "val", "test")
HOLDOUT_SHARE = 10          # a carved split takes 1/HOLDOUT_SHARE of the train split ...
HOLDOUT_CAP = 5000          # ... at most this many images
_BACKGROUND = 128           # what transparent pixels are composited on
_SUBSTITUTES = 16           # files tried after one that fails to decode
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}
_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_GREY_MODES = ("1", "L", "LA", "La", "F", *_INT_MODES)


def _image_suffixes() -> frozenset[str]:
    Image.init()
    return frozenset(s.lower() for s in Image.registered_extensions())


@dataclass(frozen=True)
class FileList:
    """The image files of one split: paths relative to ``root`` and integer labels."""

    root: Path
    paths: np.ndarray       # (N,) str; a numpy array, so forked workers share it untouched
    labels: np.ndarray      # (N,) int64
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> FileList:
        return FileList(self.root, self.paths[indices], self.labels[indices], self.classes)

    def sample(self, n: int, seed: int = 0) -> FileList:
        """``n`` files drawn without replacement (all when ``n`` is 0 or more than there are),
        in the list's order."""
        if n <= 0 or n >= len(self):
            return self
        return self.subset(np.sort(np.random.default_rng(seed).choice(len(self), n,
                                                                      replace=False)))


@dataclass(frozen=True)
class ImageFolder:
    """An indexed image folder: its classes, its splits and what was left out."""

    root: Path
    classes: tuple[str, ...]
    splits: Mapping[str, FileList]
    given: tuple[str, ...]                          # the splits that are folders of their own
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> number of files

    def digest(self) -> str:
        """sha256 of the file list (split, class, relative path of every file)."""
        h = hashlib.sha256()
        for name in SPLITS:
            files = self.splits[name]
            for path, label in zip(files.paths, files.labels, strict=True):
                h.update(f"{name}\t{self.classes[label]}\t{path}\n".encode())
        return h.hexdigest()

    def describe(self) -> str:
        sizes = ", ".join(f"{len(self.splits[s])} {s}" + ("" if s in self.given else " (carved)")
                          for s in SPLITS)
        skipped = "; ".join(f"{n} {why}" for why, n in self.skipped.items() if n)
        return (f"{self.root}: {len(self.classes)} classes, {sizes}"
                + (f"; skipped {skipped}" if skipped else ""))


def _class_files(folder: Path, suffixes: frozenset[str], skipped: dict[str, int]) -> list[str]:
    """Image files under ``folder`` (any depth), sorted, relative to it; hidden entries are
    ignored, other files without an image suffix counted in ``skipped``."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(top, folder)
        for name in files:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in suffixes:
                found.append(name if rel == "." else os.path.join(rel, name))
            else:
                skipped["not an image"] = skipped.get("not an image", 0) + 1
    return sorted(found)


def _index_split(root: Path, classes: Sequence[str] | None, suffixes: frozenset[str],
                 skipped: dict[str, int]) -> FileList:
    """Every class sub-folder of ``root``; ``classes`` (the train split's) fixes the labels."""
    with os.scandir(root) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    found = tuple(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    loose = sum(1 for e in entries if e.is_file() and not e.name.startswith("."))
    skipped["outside a class folder"] = skipped.get("outside a class folder", 0) + loose
    if classes is None:
        classes = found
    elif set(found) - set(classes):
        raise DataError(f"{root}: class folder(s) {sorted(set(found) - set(classes))} are not "
                        f"in the train split ({', '.join(classes)})")
    paths, labels = [], []
    for label, name in enumerate(classes):
        if name not in found:
            continue
        files = _class_files(root / name, suffixes, skipped)
        if not files:
            raise DataError(f"class folder {root / name} holds no images (remove it, or add "
                            "images of that class)")
        paths += [f"{name}/{f}" for f in files]
        labels += [label] * len(files)
    return FileList(root, np.asarray(paths, dtype=str), np.asarray(labels, dtype=np.int64),
                    tuple(classes))


def _hash_order(paths: np.ndarray) -> np.ndarray:
    """The files ordered by a hash of their relative path (a deterministic shuffle)."""
    keys = [hashlib.sha1(p.encode()).digest()[:8] for p in paths]
    return np.asarray(sorted(range(len(paths)), key=keys.__getitem__), dtype=np.int64)


def _carve(files: FileList, total: int) -> tuple[FileList, FileList]:
    """(rest, carved): about ``total`` files taken from ``files``, the same share of each class
    (at least one of a class of three or more), in hash order."""
    share = total / max(1, len(files))
    carved = []
    for label in range(len(files.classes)):
        members = np.flatnonzero(files.labels == label)
        k = int(round(len(members) * share))
        k = max(k, 1) if len(members) >= 3 else 0
        carved += list(members[_hash_order(files.paths[members])[:k]])
    mask = np.zeros(len(files), bool)
    mask[np.asarray(carved, dtype=np.int64)] = True
    return files.subset(np.flatnonzero(~mask)), files.subset(np.flatnonzero(mask))


def index_image_folder(root: str | Path) -> ImageFolder:
    """Index ``root`` (see the module docstring); DataError, naming the folder, when it does
    not exist, has fewer than two classes, an empty class folder, or no images."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    suffixes = _image_suffixes()
    skipped: dict[str, int] = {}
    train_root = root / "train"
    split_mode = False
    if train_root.is_dir():
        with os.scandir(train_root) as entries:
            split_mode = any(e.is_dir() for e in entries)
    if not split_mode:
        train = _index_split(root, None, suffixes, skipped)
    else:
        train = _index_split(train_root, None, suffixes, skipped)
    if len(train.classes) < 2:
        raise DataError(f"{train.root} has {len(train.classes)} class sub-folder(s): a "
                        "classifier needs at least two (one sub-folder of images per class)")
    if len(train) == 0:
        raise DataError(f"image folder {root} holds no images")
    splits = {"train": train}
    given = ["train"]
    for name in ("val", "test"):
        folder = root / name
        if split_mode and folder.is_dir():
            splits[name] = _index_split(folder, train.classes, suffixes, skipped)
            given.append(name)
    holdout = min(HOLDOUT_CAP, len(train) // HOLDOUT_SHARE)
    for name in ("val", "test"):
        if name not in splits:
            splits["train"], splits[name] = _carve(splits["train"], holdout)
    return ImageFolder(root, train.classes, splits, tuple(given), skipped)


@dataclass(frozen=True)
class HeaderScan:
    """What the headers of a split's files say: the readable ones, and are they all grey."""

    readable: FileList
    unreadable: int
    all_grey: bool


def _grey_header(image: Image.Image) -> bool:
    if image.mode in _GREY_MODES:
        return True
    if image.mode in ("P", "PA"):
        palette = np.asarray(image.getpalette() or [], dtype=np.int32).reshape(-1, 3)
        return bool((palette == palette[:, :1]).all())
    return False


def scan_headers(files: FileList) -> HeaderScan:
    """Open every file's header (no pixel is decoded): drop the files that are not readable
    images and tell whether every image is grey (grey, 16-bit grey or a grey palette)."""
    keep = np.zeros(len(files), bool)
    all_grey = True
    for i, rel in enumerate(files.paths):
        try:
            with Image.open(files.root / rel) as image:
                all_grey = all_grey and _grey_header(image)
        except Exception:  # noqa: BLE001 - decoders of damaged files raise many types
            continue
        keep[i] = True
    return HeaderScan(files.subset(np.flatnonzero(keep)), int((~keep).sum()), all_grey)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float images as 8-bit grey (0..65535 and 0..1 to 0..255)."""
    pixels = np.asarray(image, dtype=np.float64)
    scale = 255.0 if image.mode == "F" and pixels.max(initial=0.0) <= 1.0 else \
        (1.0 if image.mode == "F" else 1.0 / 257.0)
    return Image.fromarray(np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8), "L")


def _converted(image: Image.Image, channels: int) -> Image.Image:
    """``image`` as 8-bit "L" (one channel) or "RGB", transparency composited on mid grey."""
    if image.mode in _INT_MODES or image.mode == "F":
        image = _eight_bit(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (_BACKGROUND,) * 3 + (255,))
        image.alpha_composite(rgba)
    return image.convert("L" if channels == 1 else "RGB")


def load_image(path: str | Path, size: int, channels: int, resize: str = "centre_crop",
               interpolation: str = "bilinear", fill: Sequence[int] = (_BACKGROUND,)
               ) -> np.ndarray:
    """One image file as uint8 (size, size) grey or (size, size, 3) RGB: converted (see the
    module docstring), fitted to a square by ``resize`` ("centre_crop", or "letterbox" padded
    with ``fill``) and resized with ``interpolation`` (antialiased, as Pillow resizes)."""
    resample = RESAMPLE[interpolation]
    with Image.open(path) as image:
        image.draft("RGB" if channels == 3 else "L", (size, size))  # JPEG: decode smaller
        image = _converted(image, channels)
    w, h = image.size
    if resize == "letterbox":
        scale = size / max(w, h)
        inner = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
        colour = tuple(fill) if channels == 3 else fill[0]
        canvas = Image.new(image.mode, (size, size), colour)
        canvas.paste(inner, ((size - inner.width) // 2, (size - inner.height) // 2))
        return np.asarray(canvas)
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return np.asarray(image.resize((size, size), resample, box=(left, top, left + side,
                                                                 top + side)))


class ImageFiles(tud.Dataset):
    """A split's files as a torch map-style dataset: item ``i`` is (uint8 image of ``size``,
    label), decoded when asked (see :func:`load_image`); ``failures`` counts the files that
    failed to decode in any process (each replaced by the next file of the split)."""

    def __init__(self, files: FileList, size: int, channels: int, resize: str = "centre_crop",
                 interpolation: str = "bilinear", fill: Sequence[int] = (_BACKGROUND,)) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if resize not in ("centre_crop", "letterbox") or interpolation not in RESAMPLE:
            raise ValueError(f"unknown resize {resize!r} or interpolation {interpolation!r}")
        self.files, self.size, self.channels = files, int(size), int(channels)
        self.resize, self.interpolation = resize, interpolation
        self.fill = tuple(int(v) for v in fill)
        self.classes = files.classes
        self.labels = files.labels
        self.failures = multiprocessing.get_context().Value("l", 0)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        n = len(self.files)
        for k in range(min(_SUBSTITUTES, n)):
            j = (int(i) + k) % n
            try:
                return (load_image(self.files.root / self.files.paths[j], self.size,
                                   self.channels, self.resize, self.interpolation, self.fill),
                        int(self.files.labels[j]))
            except Exception:  # noqa: BLE001 - decoders of damaged files raise many types
                with self.failures.get_lock():
                    self.failures.value += 1
        raise DataError(f"{self.files.root}: {min(_SUBSTITUTES, n)} files in a row from "
                        f"{self.files.paths[int(i)]} fail to decode")

    def __getitems__(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """A whole batch, stacked (the DataLoader uses it when a dataset has it)."""
        return collate([self[i] for i in indices])


def collate(batch: tuple[np.ndarray, np.ndarray] | list[tuple[np.ndarray, int]]
            ) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W[, C]) uint8, labels (N,) int64) from a batch fetched whole or by item."""
    if isinstance(batch, tuple):
        return batch
    return (np.stack([image for image, _ in batch]),
            np.asarray([label for _, label in batch], dtype=np.int64))


def batches(data: Dataset | tud.Dataset, batch_size: int, workers: int = 0
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) batches of ``data`` in order: slices of an in-memory Dataset, or a
    streamed dataset's items loaded by a DataLoader (``workers`` processes)."""
    if isinstance(data, Dataset):
        for i in range(0, len(data), batch_size):
            yield data.images[i:i + batch_size], data.labels[i:i + batch_size]
        return
    yield from tud.DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate,
                              num_workers=workers)


def pixel_stats(data: ImageFiles, n: int = 1000, seed: int = 0, workers: int = 0
                ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the pixels (scaled to [0, 1]) of ``n``
    images drawn from ``data`` (all when it holds fewer), as the network sees them."""
    sample = ImageFiles(data.files.sample(n, seed), data.size, data.channels, data.resize,
                        data.interpolation, data.fill)
    total = np.zeros(data.channels)
    squares = np.zeros(data.channels)
    count = 0
    for images, _ in batches(sample, 64, workers):
        x = images.reshape(len(images), -1, data.channels).astype(np.float64) / 255.0
        total += x.sum((0, 1))
        squares += (x * x).sum((0, 1))
        count += x.shape[0] * x.shape[1]
    with data.failures.get_lock():
        data.failures.value += sample.failures.value
    mean = total / max(1, count)
    std = np.sqrt(np.maximum(squares / max(1, count) - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def in_memory(data: ImageFiles, workers: int = 0) -> Dataset:
    """Every image of ``data`` decoded into one array (a test split measured many times)."""
    parts = list(batches(data, 256, workers))
    if not parts:
        shape = (0, data.size, data.size) + ((3,) if data.channels == 3 else ())
        return Dataset(np.zeros(shape, np.uint8), np.zeros(0, np.int64), data.classes)
    return Dataset(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   data.classes)
