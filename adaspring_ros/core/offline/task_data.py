"""The labelled images a command reads with ``--data``, and the model card training builds.

``--data`` names either a folder of Fashion-MNIST's IDX files (the shipped task, held in memory,
grey, with its own recipe) or an image folder (core/data/folders.py: streamed from disk). Every
offline command reads the same splits of it through this module: training the train split and
validates on the hold-out, ``profile`` measures accuracy on the test split, BN statistics and
int8 ranges are calibrated on training images, ``tune-variants`` tunes on training images and
validates on the hold-out, so that no command ever measures on what another trained on. Every
command drops the files whose header is not a readable image (training counts them in its log)
and replaces one that fails to decode later by the next (counted: ``decode_failures``).

The card of an image folder is measured, never assumed: 3 channels (RGB) unless every image's
header says grey (or ``channels`` says otherwise), the per-channel mean/std of a sample of the
train split as the network sees it, the class names from the folder names, and where the data
came from (path, number of images, sha256 of the file list). Images are decoded and fitted to a
square of the space's largest resolution (training: a quarter larger, so that a random crop has
pixels to spare); THE preprocessing then resizes them to each variant's resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch.utils.data as tud

from adaspring_ros.core.data.datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    DataError,
    Dataset,
    holdout_size,
    load_fashion_mnist,
    train_val_split,
)
from adaspring_ros.core.data.folders import (
    SPLITS,
    FileList,
    ImageFiles,
    ImageFolder,
    in_memory,
    index_image_folder,
    pixel_stats,
    scan_headers,
)
from adaspring_ros.core.model.card import FASHION_MNIST_CARD, ModelCard
from adaspring_ros.core.offline.augment import Augmentation, GreyAugment, PhotoAugment
from adaspring_ros.core.offline.loader import ImageArrays

__all__ = ["IDX_TRAIN_IMAGES", "TaskData", "open_data", "build_card", "training_sets",
           "augmentation", "test_set", "calibration_images", "tuning_split", "tuning_sets",
           "check_classes", "TRAIN_MARGIN", "IN_MEMORY_BYTES"]

IDX_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_MARGIN = 1.25          # training decodes at this x the largest resolution (random crops)
IN_MEMORY_BYTES = 256 << 20  # a validation or test split up to this size is decoded once
STATS_IMAGES = 1000          # images whose pixels give an image folder's mean/std


@dataclass(frozen=True)
class TaskData:
    """One ``--data``: Fashion-MNIST IDX files (``folder`` None) or an indexed image folder."""

    path: Path
    folder: ImageFolder | None = None
    unreadable: int = 0        # files whose header is not a readable image (dropped)

    @property
    def classes(self) -> tuple[str, ...]:
        return FASHION_MNIST_CLASSES if self.folder is None else self.folder.classes

    def describe(self) -> str:
        if self.folder is None:
            return f"{self.path}: Fashion-MNIST IDX files"
        return self.folder.describe() + (f"; {self.unreadable} unreadable file(s) skipped"
                                         if self.unreadable else "")


def open_data(path: str | Path) -> TaskData:
    """Fashion-MNIST IDX files or an image folder at ``path`` (indexed: names only); DataError
    with the reason when it is neither or the folder cannot be used."""
    path = Path(path)
    if (path / IDX_TRAIN_IMAGES).is_file():
        return TaskData(path)
    if not path.is_dir():
        raise DataError(f"{path} does not exist (give Fashion-MNIST's IDX folder or an image "
                        "folder with one sub-folder per class)")
    return TaskData(path, index_image_folder(path))


def _scanned(data: TaskData) -> tuple[TaskData, bool]:
    """``data`` without the files whose header is unreadable, and whether all images are grey."""
    splits, unreadable, grey = {}, 0, True
    for name in SPLITS:
        scan = scan_headers(data.folder.splits[name])
        splits[name], unreadable = scan.readable, unreadable + scan.unreadable
        grey = grey and (scan.all_grey or not len(scan.readable))
    if not len(splits["train"]):
        raise DataError(f"{data.path}: none of the train split's files is a readable image")
    return replace(data, folder=replace(data.folder, splits=splits), unreadable=unreadable), grey


def build_card(data: TaskData, resolutions: tuple[int, ...], *, channels: int = 0,
               resize: str = "centre_crop", interpolation: str = "bilinear",
               mirror: bool = True, seed: int = 0, workers: int = 0
               ) -> tuple[ModelCard, TaskData]:
    """The card of a backbone trained on ``data`` at ``resolutions``, and ``data`` without the
    files a header scan found unreadable. ``channels`` 0: 3 unless every image is grey.
    Fashion-MNIST keeps its own card (its mean/std, grey); CardError/DataError when the options
    cannot describe the data."""
    if data.folder is None:
        if channels not in (0, 1):
            raise DataError("Fashion-MNIST is grey: it trains a 1-channel backbone")
        card = replace(FASHION_MNIST_CARD.with_resolutions(resolutions), resize=resize,
                       interpolation=interpolation, mirror_symmetric=mirror)
        if data.path != FASHION_MNIST_DIR:
            count = len(load_fashion_mnist("train", data.path))
            card = replace(card, data=f"IDX files in {data.path} ({count} train images, grey, "
                                      "normalised with Fashion-MNIST's mean/std)")
        return card, data
    data, grey = _scanned(data)
    channels = channels or (1 if grey else 3)
    train = data.folder.splits["train"]
    sample = ImageFiles(train, max(resolutions), channels, resize, interpolation)
    mean, std = pixel_stats(sample, STATS_IMAGES, seed, workers)
    card = ModelCard(
        channels=channels, channel_order="L" if channels == 1 else "RGB",
        mean=tuple(round(min(max(m, 0.0), 1.0), 4) for m in mean),
        std=tuple(round(min(max(s, 1.0 / 255.0), 1.0), 4) for s in std),
        resolutions=tuple(resolutions), classes=data.classes, resize=resize,
        interpolation=interpolation, mirror_symmetric=mirror,
        data=(f"image folder {data.path.resolve()}: {len(train)} train images of "
              f"{len(data.classes)} classes (mean/std of {min(len(train), STATS_IMAGES)}); "
              f"file list sha256 {data.folder.digest()}"))
    return card, data


def _files(files: FileList, size: int, card: ModelCard) -> ImageFiles:
    fill = tuple(int(round(255 * m)) for m in card.mean)
    return ImageFiles(files, size, card.channels, card.resize, card.interpolation, fill)


def _decoded(files: FileList, size: int, card: ModelCard, workers: int = 0) -> Dataset:
    """The readable files of ``files`` (by their headers, as training drops the others),
    decoded into memory."""
    return in_memory(_files(scan_headers(files).readable, size, card), workers)


def _kept(files: FileList, size: int, card: ModelCard, workers: int = 0
          ) -> Dataset | ImageFiles:
    """A split decoded once into memory when it is small enough, else streamed."""
    if len(files) * size ** 2 * card.channels <= IN_MEMORY_BYTES:
        return _decoded(files, size, card, workers)
    return _files(files, size, card)


def training_sets(data: TaskData, card: ModelCard, *, val_size: int = 5000, subset: int = 0,
                  seed: int = 0, workers: int = 0) -> tuple[tud.Dataset, Dataset | ImageFiles]:
    """(train, validation): map-style (uint8 image, label) datasets. Fashion-MNIST: the train
    split minus a seeded hold-out of ``holdout_size`` (at most ``val_size``), in memory; a
    folder: its train split, streamed, decoded at ``TRAIN_MARGIN`` x the largest resolution,
    and its validation split. ``subset``: the first (folder: a seeded draw of) N training
    images and a tenth as many (at least 100) validation images."""
    if data.folder is None:
        full = load_fashion_mnist("train", data.path)
        train_idx, val_idx = train_val_split(len(full), holdout_size(len(full), val_size),
                                             seed=seed)
        if subset:
            train_idx = train_idx[:subset]
            val_idx = val_idx[:max(100, subset // 10)]
        return ImageArrays(full.subset(train_idx)), full.subset(val_idx)
    train, val = data.folder.splits["train"], data.folder.splits["val"]
    if subset:
        train, val = train.sample(subset, seed), val.sample(max(100, subset // 10), seed)
    size = math.ceil(max(card.resolutions) * TRAIN_MARGIN)
    return _files(train, size, card), _kept(val, max(card.resolutions), card, workers)


def augmentation(data: TaskData, card: ModelCard, crop_scale: float) -> Augmentation:
    """Fashion-MNIST's flips and shifts, or the photo recipe for an image folder (its random
    resized crop keeps at least ``crop_scale`` of the area)."""
    if data.folder is None:
        return GreyAugment(mirror=card.mirror_symmetric)
    return PhotoAugment(max(card.resolutions), card.mirror_symmetric, scale=(crop_scale, 1.0),
                        interpolation=card.interpolation)


def test_set(data: TaskData, card: ModelCard, size: int = 0, workers: int = 0
             ) -> Dataset | ImageFiles:
    """The test split (the first ``size`` images when given): never trained or tuned on."""
    if data.folder is None:
        test = load_fashion_mnist("test", data.path)
        return test.subset(np.arange(min(size, len(test)))) if size else test
    files = data.folder.splits["test"]
    if size:
        files = files.subset(np.arange(min(size, len(files))))
    return _kept(files, max(card.resolutions), card, workers)


def calibration_images(data: TaskData, n: int, seed: int, card: ModelCard | None
                       ) -> np.ndarray:
    """``n`` fixed images of the training part of the train split (never validation or
    test), for BN statistics and int8 ranges; all of them when it holds fewer."""
    if data.folder is None:
        train = load_fashion_mnist("train", data.path)
        train_idx, _ = train_val_split(len(train), holdout_size(len(train)), seed=0)
        pick = np.random.default_rng(seed).choice(train_idx, min(n, len(train_idx)),
                                                  replace=False)
        return train.images[np.sort(pick)]
    files = data.folder.splits["train"].sample(n, seed)
    return _decoded(files, max(card.resolutions), card).images


def tuning_split(num_items: int, n_images: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(tuning indices, validation indices) of a train split of ``num_items`` in memory: the
    tuning images are a seeded draw of ``n_images`` (0: all) from the training part of the
    split training used (``train_val_split`` with seed 0), so never a validation image."""
    train_idx, val_idx = train_val_split(num_items, holdout_size(num_items), seed=0)
    if 0 < n_images < len(train_idx):
        train_idx = np.sort(np.random.default_rng(seed).choice(train_idx, n_images,
                                                               replace=False))
    return train_idx, val_idx


def tuning_sets(data: TaskData, card: ModelCard, n_images: int, seed: int = 0,
                val_size: int = 0) -> tuple[np.ndarray, Dataset]:
    """(tuning images, validation set): a seeded draw of ``n_images`` (0: all) of the
    training part of the split training used, and its hold-out (the first ``val_size``)."""
    if data.folder is None:
        full = load_fashion_mnist("train", data.path)
        train_idx, val_idx = tuning_split(len(full), n_images, seed)
        images, val = full.images[train_idx], full.subset(val_idx)
    else:
        size = max(card.resolutions)
        images = _decoded(data.folder.splits["train"].sample(n_images, seed), size, card).images
        val = _decoded(data.folder.splits["val"], size, card)
    if val_size:
        val = Dataset(val.images[:val_size], val.labels[:val_size], val.classes)
    return images, val


def check_classes(data: TaskData, card: ModelCard) -> None:
    """DataError unless ``data`` holds the classes of the backbone's card, in its order (IDX
    files hold labels, not names: as many classes)."""
    if data.folder is None and len(card.classes) == len(data.classes):
        return
    if tuple(data.classes) != tuple(card.classes):
        raise DataError(f"{data.path} holds the classes {list(data.classes)}, the backbone "
                        f"was trained on {list(card.classes)}")
