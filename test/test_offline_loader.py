"""The training input pipeline: one process or several ranks see the same batches, augmented
alike (loader.py, augment.py)."""

from __future__ import annotations

import numpy as np
import pytest

from adaspring_ros.core.data.datasets import Dataset
from adaspring_ros.core.offline.augment import PhotoAugment, flip_and_shift
from adaspring_ros.core.offline.distributed import Ranks
from adaspring_ros.core.offline.loader import (
    BatchAugment,
    ImageArrays,
    epoch_stream,
    train_loader,
)


def _data(n: int) -> ImageArrays:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return ImageArrays(Dataset(images, np.arange(n, dtype=np.int64), ("a", "b")))


def _epoch(data: ImageArrays, ranks: Ranks, batch: int, epoch: int = 3, workers: int = 0):
    loader = train_loader(data, ranks, batch, seed=7, workers=workers)
    loader.batch_sampler.sampler.set_epoch(epoch)
    augment = BatchAugment(7, epoch, len(data), ranks)
    return [(labels, augment(images)) for images, labels in loader]


def test_one_process_draws_the_recipes_order_and_augmentation():
    """The order and flips/shifts the recipe drew before there was a loader: a permutation
    from the (seed, epoch) stream, then each batch's augmentation from the same stream."""
    data = _data(100)
    order, rng = epoch_stream(7, 3, 100)
    expected = [(order[i:i + 32], flip_and_shift(data.images[order[i:i + 32]], rng))
                for i in range(0, 100, 32)]
    got = _epoch(data, Ranks(), 32)
    assert [len(labels) for labels, _ in got] == [32, 32, 32, 4]
    for (labels, images), (idx, augmented) in zip(got, expected, strict=True):
        assert np.array_equal(labels, idx)                  # labels are the indices here
        assert np.array_equal(images, augmented)


@pytest.mark.parametrize("n, world", [(100, 2), (96, 4), (101, 2)])
def test_the_ranks_batches_together_are_the_one_process_batch(n, world):
    data = _data(n)
    one = _epoch(data, Ranks(), 32)
    ranks = [_epoch(data, Ranks(r, world), 32) for r in range(world)]
    assert all(len(steps) == len(one) for steps in ranks)
    for k, (labels, images) in enumerate(one):
        # rank r holds positions r, r + W, ... of the global batch: same image, same flip/shift
        shares = [steps[k] for steps in ranks]
        merged = np.empty_like(labels, shape=(sum(len(s[0]) for s in shares),))
        merged_images = np.empty((len(merged), 28, 28), np.uint8)
        for r, (lab, img) in enumerate(shares):
            merged[r::world], merged_images[r::world] = lab, img
        assert np.array_equal(merged[:len(labels)], labels)
        if len(merged) == len(labels):
            assert np.array_equal(merged_images, images)
        else:   # a set that does not split evenly: the last batch is padded with the epoch's
            assert k == len(one) - 1 and merged[-1] == one[0][0][0]   # first image, and its
            # draws are of the padded batch, so only the order is the one process's there
    seen = np.concatenate([lab for steps in ranks for lab, _ in steps])
    assert set(seen) == set(range(n)) and len(seen) == n + (-n) % world


def test_worker_processes_load_the_same_batches():
    data = _data(70)
    for (la, ia), (lb, ib) in zip(_epoch(data, Ranks(), 16), _epoch(data, Ranks(), 16,
                                                                      workers=1), strict=True):
        assert np.array_equal(la, lb) and np.array_equal(ia, ib)


def test_items_and_whole_batches_agree_and_epochs_differ():
    data = _data(10)
    image, label = data[4]
    images, labels = data.__getitems__([4, 2])
    assert np.array_equal(images[0], image) and labels[0] == label == 4
    first, second = _epoch(data, Ranks(), 10, epoch=0), _epoch(data, Ranks(), 10, epoch=1)
    assert not np.array_equal(first[0][0], second[0][0])


def test_a_batch_that_does_not_split_over_the_ranks_is_refused():
    with pytest.raises(ValueError, match="multiple of the world size"):
        train_loader(_data(10), Ranks(0, 3), 32, seed=0)
    with pytest.raises(ValueError, match="not a place"):
        Ranks(2, 2)


def test_photo_augmentation_is_the_same_for_one_process_or_two():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (64, 40, 40, 3), dtype=np.uint8)
    recipe = PhotoAugment(32)
    one = BatchAugment(5, 2, 64, Ranks(), recipe)(images)
    assert one.shape == (64, 32, 32, 3) and one.dtype == np.uint8
    shares = [BatchAugment(5, 2, 64, Ranks(r, 2), recipe)(images[r::2]) for r in range(2)]
    assert np.array_equal(one[0::2], shares[0]) and np.array_equal(one[1::2], shares[1])
    assert np.array_equal(one, BatchAugment(5, 2, 64, Ranks(), recipe)(images))   # seeded
    assert not np.array_equal(one, BatchAugment(5, 3, 64, Ranks(), recipe)(images))


def test_photo_augmentation_crops_flips_and_jitters_only_as_told():
    rng = np.random.default_rng(4)
    draws = PhotoAugment(16).draw(2000, rng)
    area = draws.box[:, 2] * draws.box[:, 3]
    assert 0.24 < area.min() and area.max() <= 1.0 and 0.4 < draws.flip.mean() < 0.6
    assert (draws.box[:, :2] >= 0).all() and (draws.box[:, :2] + draws.box[:, 2:] <= 1).all()
    assert not PhotoAugment(16, mirror=False).draw(2000, rng).flip.any()
    # a left-right asymmetric image keeps its sides without mirroring, with no jitter
    image = np.zeros((1, 20, 20, 3), np.uint8)
    image[:, :, :10] = 200
    still = PhotoAugment(20, mirror=False, scale=(1, 1), ratio=(1, 1), jitter=0.0)
    out = still.apply(image, still.draw(1, rng))
    assert np.array_equal(out, image)
    flipped = PhotoAugment(20, scale=(1, 1), ratio=(1, 1), jitter=0.0)
    draws = flipped.draw(1, rng)
    draws.flip[:] = True
    assert np.array_equal(flipped.apply(image, draws), image[:, :, ::-1])
    # brightness x1.2 on a mid-grey image, contrast and saturation unchanged
    grey = np.full((1, 8, 8, 3), 100, np.uint8)
    draws = still.draw(1, rng)
    draws.jitter[:] = (1.2, 1.0, 1.0)
    assert (still.apply(grey, draws) == 120).all()
