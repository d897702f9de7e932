"""The training input pipeline: a torch ``Dataset`` of uint8 images and labels, a
``DistributedSampler`` that shards each epoch's order over the ranks (``set_epoch``), a
``DataLoader`` of this rank's batches, and the augmentation of each batch.

One seeded numpy stream per epoch (:func:`epoch_stream`) first draws the epoch's order, then
the augmentation of every global batch in turn. Each rank draws the whole global batch's
augmentation and applies its own share, so every image gets the same order position and the
same flip and shift whatever the number of processes, and one process draws exactly what the
recipe always drew. The sampler deals the order out like ``DistributedSampler``: padded to a
multiple of the world size, rank ``r`` taking positions ``r, r + W, ...``; with per-rank
batches of ``batch_size / W`` the ranks' step-``k`` batches together are the global batch
``k`` of one process (when the set does not split evenly, the last global batch is padded
with the epoch's first images, DistributedSampler's rule, and its augmentation is drawn for the
padded batch). Loading happens in the DataLoader (worker processes when asked); the
augmentation and preprocessing in the training process, so neither depends on the workers.

The dataset is any map-style dataset of ``(uint8 image, label)`` pairs; :class:`ImageArrays`
serves in-memory arrays (Fashion-MNIST) a whole batch at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch.utils.data as tud

from adaspring_ros.core.data.datasets import Dataset
from adaspring_ros.core.offline.augment import apply_flip_and_shift, draw_flip_and_shift
from adaspring_ros.core.offline.distributed import Ranks

__all__ = ["ImageArrays", "epoch_stream", "EpochSampler", "train_loader", "BatchAugment"]


class ImageArrays(tud.Dataset):
    """In-memory images as a torch map-style dataset: item ``i`` is (uint8 image, label)."""

    def __init__(self, data: Dataset) -> None:
        self.images, self.labels = data.images, data.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])

    def __getitems__(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """A whole batch by one fancy index (the DataLoader uses it when a dataset has it)."""
        idx = np.asarray(indices, dtype=np.int64)
        return self.images[idx], self.labels[idx]


def collate(batch: tuple[np.ndarray, np.ndarray] | list[tuple[np.ndarray, int]]
            ) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W[, C]) uint8, labels (N,) int64) from a batch fetched whole or by item."""
    if isinstance(batch, tuple):
        return batch
    return (np.stack([image for image, _ in batch]),
            np.asarray([label for _, label in batch], dtype=np.int64))


def epoch_stream(seed: int, epoch: int, n: int) -> tuple[np.ndarray, np.random.Generator]:
    """Epoch ``epoch``'s order of ``n`` items and the generator, just past that draw, that
    then draws the epoch's augmentation: one stream per (seed, epoch), so a resumed run draws
    what an uninterrupted one would."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(n), rng


class EpochSampler(tud.DistributedSampler):
    """``DistributedSampler`` (padding, sharding, ``set_epoch``) over the order of
    :func:`epoch_stream` instead of its own ``torch.randperm``: the same order for one process
    or many."""

    def __init__(self, dataset: tud.Dataset, ranks: Ranks, seed: int) -> None:
        super().__init__(dataset, num_replicas=ranks.world_size, rank=ranks.rank, shuffle=True,
                         seed=seed, drop_last=False)

    def __iter__(self):
        order, _ = epoch_stream(self.seed, self.epoch, len(self.dataset))
        if self.total_size > len(order):          # as DistributedSampler pads: from the start
            order = np.concatenate([order, np.resize(order, self.total_size - len(order))])
        return iter(order[self.rank:self.total_size:self.num_replicas].tolist())


def train_loader(dataset: tud.Dataset, ranks: Ranks, batch_size: int, seed: int,
                 workers: int = 0) -> tud.DataLoader:
    """This rank's batches of a global ``batch_size`` (a multiple of the world size): call
    ``loader.batch_sampler.sampler.set_epoch(epoch)`` before each epoch."""
    if batch_size % ranks.world_size:
        raise ValueError(f"the batch of {batch_size} does not split over {ranks.world_size} "
                         "processes: give a multiple of the world size")
    sampler = EpochSampler(dataset, ranks, seed)
    return tud.DataLoader(dataset, batch_sampler=tud.BatchSampler(
        sampler, batch_size // ranks.world_size, drop_last=False), collate_fn=collate,
        num_workers=workers, persistent_workers=workers > 0)


class BatchAugment:
    """The flips and shifts of one epoch's batches, in order, for this rank's share of each
    global batch (see the module's docstring)."""

    def __init__(self, seed: int, epoch: int, n: int, ranks: Ranks, shift: int = 2) -> None:
        _, self.rng = epoch_stream(seed, epoch, n)
        self.ranks, self.shift = ranks, shift

    def __call__(self, images: np.ndarray) -> np.ndarray:
        world = self.ranks.world_size
        draws = draw_flip_and_shift(len(images) * world, self.rng, self.shift)
        return apply_flip_and_shift(images, draws.take(slice(self.ranks.rank, None, world)))
