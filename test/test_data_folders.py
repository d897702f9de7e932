"""Image folders (core/data/folders.py): indexing by name only, splits, refusals, header scan,
conversion of any image to what the network takes, streaming from disk."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch.utils.data as tud
from PIL import Image
from synthetic_folder import COLOURS, write_colour_folder

from adaspring_ros.core.data import folders
from adaspring_ros.core.data.datasets import DataError
from adaspring_ros.core.data.folders import (
    ImageFiles,
    index_image_folder,
    load_image,
    pixel_stats,
    scan_headers,
)


def _all_paths(folder) -> list[str]:
    return [p for s in folders.SPLITS for p in folder.splits[s].paths]


def test_a_folder_without_splits_is_split_deterministically_per_class(tmp_path):
    root = write_colour_folder(tmp_path / "photos", per_class=30)
    folder = index_image_folder(root)
    assert folder.classes == tuple(sorted(COLOURS)) and folder.given == ("train",)
    # 3 x 30 images + broken.jpg, deep.png, palette.png: a tenth each for val and test
    assert [len(folder.splits[s]) for s in folders.SPLITS] == [75, 9, 9]
    assert len(set(_all_paths(folder))) == 93
    for split in ("val", "test"):
        assert set(folder.splits[split].labels) == {0, 1, 2}       # every class in each
    assert folder.skipped == {"outside a class folder": 1}          # README.md
    again = index_image_folder(root)
    assert again.digest() == folder.digest()
    assert all(np.array_equal(folder.splits[s].paths, again.splits[s].paths)
               for s in folders.SPLITS)
    Image.new("RGB", (20, 20)).save(root / "sky" / "new.png")
    assert index_image_folder(root).digest() != folder.digest()


def test_given_splits_are_kept_and_a_missing_one_is_carved_from_train(tmp_path):
    write_colour_folder(tmp_path / "t" / "train", per_class=20)
    write_colour_folder(tmp_path / "t" / "val", per_class=4)
    folder = index_image_folder(tmp_path / "t")
    assert folder.given == ("train", "val")
    assert len(folder.splits["val"]) == 3 * 4 + 3          # its own files, none carved
    assert len(folder.splits["test"]) == 6 and len(folder.splits["train"]) == 63 - 6
    (tmp_path / "t" / "val" / "cloud").mkdir()
    Image.new("RGB", (9, 9)).save(tmp_path / "t" / "val" / "cloud" / "a.png")
    with pytest.raises(DataError, match="cloud.*not in the train split"):
        index_image_folder(tmp_path / "t")


def _one_class(root):
    write_colour_folder(root)
    for name in ("leaf", "sky"):
        for f in (root / name).iterdir():
            f.unlink()
        (root / name).rmdir()


def _empty_class(root):
    write_colour_folder(root)
    (root / "cloud").mkdir()
    (root / "cloud" / "notes.txt").write_text("no images here")


def _no_class_folders(root):
    root.mkdir()
    Image.new("RGB", (9, 9)).save(root / "a.png")


@pytest.mark.parametrize("make, says", [
    (_one_class, "needs at least two"),
    (_empty_class, "cloud holds no images"),
    (_no_class_folders, "0 class sub-folder"),
    (lambda root: None, "does not exist"),
])
def test_unusable_folders_are_refused_by_name(make, says, tmp_path):
    make(tmp_path / "data")
    with pytest.raises(DataError, match=says):
        index_image_folder(tmp_path / "data")


@pytest.fixture
def memory_dir(tmp_path):
    """A folder in memory (/dev/shm) where there is one, else tmp_path: creating 10^5 files on
    this host's virtual disk took 3 to 37 s from one minute to the next, in memory 1.5 s."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="adaspring-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_hundred_thousand_files_are_indexed_without_opening_one(memory_dir, monkeypatch):
    for c in range(10):
        (memory_dir / f"c{c}").mkdir()
        for i in range(10_000):
            (memory_dir / f"c{c}" / f"{i}.png").touch()

    def refuse(*args, **kwargs):
        raise AssertionError("indexing opened a file")

    monkeypatch.setattr(Image, "open", refuse)
    folder = index_image_folder(memory_dir)
    assert sum(len(folder.splits[s]) for s in folders.SPLITS) == 100_000
    assert len(folder.splits["val"]) == len(folder.splits["test"]) == 5000   # capped


def test_the_header_scan_drops_unreadable_files_and_tells_grey_from_colour(tmp_path):
    folder = index_image_folder(write_colour_folder(tmp_path / "colour"))
    scans = [scan_headers(folder.splits[s]) for s in folders.SPLITS]
    assert sum(s.unreadable for s in scans) == 1                     # broken.jpg
    assert not any("broken" in p for s in scans for p in s.readable.paths)
    assert not all(s.all_grey for s in scans)
    grey = tmp_path / "grey"
    for name in ("a", "b"):
        (grey / name).mkdir(parents=True)
        Image.new("L", (12, 9), 90).save(grey / name / "l.png")
        Image.fromarray(np.full((7, 7), 3000, np.uint16)).save(grey / name / "deep.png")
        Image.new("L", (8, 8), 40).convert("P").save(grey / name / "palette.png")
    scan = scan_headers(index_image_folder(grey).splits["train"])
    assert scan.all_grey and scan.unreadable == 0


def test_any_image_is_converted_and_fitted_to_the_square_asked_for(tmp_path):
    ramp = np.linspace(0, 65535, 30 * 30).reshape(30, 30).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    deep = load_image(tmp_path / "deep.png", 30, 1, interpolation="nearest")
    assert deep.dtype == np.uint8 and deep.shape == (30, 30)
    assert deep.min() == 0 and deep.max() == 255 and len(np.unique(deep)) > 200  # scaled
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:, 5:] = (255, 0, 0, 255)                                  # left half transparent
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    cut = load_image(tmp_path / "cut.png", 10, 3, interpolation="nearest")
    assert (cut[:, :5] == 128).all() and (cut[:, 5:] == (255, 0, 0)).all()
    Image.fromarray(np.full((13, 17, 3), (0, 0, 255), np.uint8)).convert("P").save(
        tmp_path / "pal.png")
    assert load_image(tmp_path / "pal.png", 8, 3).shape == (8, 8, 3)
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :10] = 255                                              # white left quarter
    Image.fromarray(wide).save(tmp_path / "wide.png")
    crop = load_image(tmp_path / "wide.png", 20, 3, interpolation="nearest")
    assert crop.shape == (20, 20, 3) and crop.max() == 0            # the centre square
    box = load_image(tmp_path / "wide.png", 20, 3, "letterbox", "nearest", fill=(7, 8, 9))
    assert (box[0] == (7, 8, 9)).all() and (box[-1] == (7, 8, 9)).all()
    assert (box[10, :5] == 255).all() and (box[10, 5:] == 0).all()
    assert load_image(tmp_path / "wide.png", 16, 1).shape == (16, 16)


def test_the_dataset_streams_from_disk_and_replaces_what_fails_to_decode(tmp_path):
    root = tmp_path / "d"
    for name, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (11, 14), colour).save(root / name / f"{i}.png")
    files = index_image_folder(root).splits["train"]
    data = ImageFiles(files, 8, 3)
    arrays = [v for v in vars(data).values() if isinstance(v, np.ndarray)]
    assert all(a.ndim == 1 for a in arrays + [files.paths, files.labels])   # names, labels
    first = root / files.paths[0]
    assert (data[0][0] == (255, 0, 0)).all()
    Image.new("RGB", (30, 5), (0, 255, 0)).save(first)           # read when asked, not before
    assert (data[0][0] == (0, 255, 0)).all()
    png = first.read_bytes()
    first.write_bytes(png[:len(png) // 2])                       # a valid header, cut short
    loader = tud.DataLoader(data, batch_size=2, num_workers=1, collate_fn=folders.collate)
    images, labels = next(iter(loader))
    assert (images[0] == (255, 0, 0)).all() and labels[0] == files.labels[1]   # the next file
    assert data.failures.value == 1                              # counted in the worker


def test_pixel_stats_are_the_mean_and_std_of_what_the_network_sees(tmp_path):
    for name, colour in (("a", (255, 0, 128)), ("b", (0, 255, 128))):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.new("RGB", (9 + i, 12), colour).save(tmp_path / name / f"{i}.png")
    files = index_image_folder(tmp_path).splits["train"]
    mean, std = pixel_stats(ImageFiles(files, 8, 3))
    np.testing.assert_allclose(mean, (0.5, 0.5, 128 / 255), atol=1e-6)
    np.testing.assert_allclose(std, (0.5, 0.5, 0.0), atol=1e-6)
