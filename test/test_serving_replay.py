"""The replay camera's frame sources (no ROS): dataset frames (loop, limit, seeded order), image
folders (the test split, the model card's label order, colour kept, odd files), the letterbox,
bags written with rosbags read back, and the labelled frame_id protocol."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from colour_model import write_image_folder

from adaspring_ros.core.data.datasets import DataError, Dataset
from adaspring_ros.core.serving.replay import (
    bag_frames,
    dataset_frames,
    fit_frame,
    folder_frames,
    index_image_files,
    labelled_frame_id,
    open_bag,
    parse_labelled_frame_id,
    read_image,
)


def write_bag(path: Path, frames: list[tuple[np.ndarray, str]], topic: str = "/robot/camera",
              ) -> None:
    """A ROS 2 bag of mono8 sensor_msgs/Image frames (frame_id "bad": an unsupported 16UC1)."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    Image, Header, Time = (store.types[n] for n in (
        "sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    with Writer(path, version=9) as writer:
        conn = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
        for i, (pixels, frame_id) in enumerate(frames):
            encoding = "16UC1" if frame_id == "bad" else "mono8"
            msg = Image(header=Header(stamp=Time(sec=i, nanosec=0), frame_id=frame_id),
                        height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                        is_bigendian=0, step=pixels.shape[1], data=pixels.reshape(-1))
            writer.write(conn, i * 10**9, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def _dataset(n: int = 10) -> Dataset:
    images = np.arange(n, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)
    return Dataset(images, np.arange(n) % 3, ("a", "b", "c"))


def _labels(frames, count: int) -> list:
    return [label for _, (_, label) in zip(range(count), frames, strict=False)]


def test_dataset_frames_in_order_limited_and_looping():
    frames = list(dataset_frames(_dataset(), loop=False, seed=-1, limit=0))
    assert [int(p[0, 0]) for p, _ in frames] == list(range(10))
    assert [label for _, label in frames] == [i % 3 for i in range(10)]
    assert len(list(dataset_frames(_dataset(), loop=False, seed=-1, limit=4))) == 4
    looped = [int(p[0, 0]) for _, (p, _) in zip(range(9), dataset_frames(
        _dataset(), loop=True, seed=-1, limit=4), strict=False)]
    assert looped == [0, 1, 2, 3, 0, 1, 2, 3, 0]


def test_a_seed_gives_one_order_every_time_and_every_pass():
    def order(seed: int, count: int = 20) -> list[int]:
        return [int(p[0, 0]) for _, (p, _) in zip(range(count), dataset_frames(
            _dataset(), loop=True, seed=seed, limit=0), strict=False)]

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert sorted(order(3)[:10]) == list(range(10))      # a permutation of the dataset
    assert order(3)[:10] == order(3)[10:]                 # and each pass repeats it


@pytest.mark.parametrize("shape, size, placed", [
    ((28, 28), (640, 480), (480, 480)),       # square into landscape: bars left and right
    ((30, 60), (64, 64), (32, 64)),           # wide into square: bars top and bottom
    ((28, 28, 3), (0, 56), (56, 56)),         # one side 0: derived from the aspect ratio
    ((20, 10), (0, 0), (20, 10)),             # both 0: the source size
])
def test_fit_frame_sizes_keep_the_aspect_ratio(shape, size, placed):
    pixels = np.full(shape, 200, np.uint8)
    out = fit_frame(pixels, *size, "nearest")
    width, height = size
    assert out.shape[:2] == ((height or placed[0]), (width or placed[1]))
    assert out.shape[2:] == pixels.shape[2:]
    assert int((out > 0).any(axis=-1).sum() if out.ndim == 3 else (out > 0).sum()) == \
        placed[0] * placed[1]


def test_fit_frame_interpolation():
    pixels = np.array([[0, 255], [255, 0]], np.uint8)
    nearest = fit_frame(pixels, 4, 4, "nearest")
    assert np.array_equal(nearest, np.kron(pixels, np.ones((2, 2), np.uint8)))
    bilinear = fit_frame(pixels, 4, 4, "bilinear")
    assert set(np.unique(bilinear)) > {0, 255}             # blends between the pixels
    assert bilinear[0, 0] == 0 and bilinear[0, 3] == 255   # corners keep the source
    assert np.array_equal(bilinear, bilinear.T)            # symmetric source, symmetric result
    assert np.array_equal(fit_frame(pixels, 2, 2, "bilinear"), pixels)


def test_labelled_frame_id_round_trip():
    assert labelled_frame_id("cam/", 3, 17) == "cam/label=3/seq=17"
    assert parse_labelled_frame_id("cam/label=3/seq=17") == (3, 17)
    assert parse_labelled_frame_id(labelled_frame_id("cam", None, 5)) == (None, 5)
    assert parse_labelled_frame_id("camera_optical_frame") == (None, None)
    assert parse_labelled_frame_id("cam/label=-1/seq=x") == (None, None)


def test_a_bag_written_with_rosbags_reads_back(tmp_path):
    pytest.importorskip("rosbags")
    frames = [(np.full((6, 8), 10 * i, np.uint8), f"cam/label={i}/seq=99") for i in range(3)]
    frames.append((np.full((6, 8), 7, np.uint8), "bad"))
    frames.append((np.full((6, 8), 200, np.uint8), "optical_frame"))
    write_bag(tmp_path / "bag", frames)
    got = list(bag_frames(tmp_path / "bag", "/robot/camera", loop=False, limit=0))
    assert [label for _, label in got[:3]] == [0, 1, 2]
    assert all(np.array_equal(p, np.full((6, 8), 10 * i, np.uint8))
               for i, (p, _) in enumerate(got[:3]))
    assert got[3][0] is None and "bag frame 4: unsupported encoding '16UC1'" in got[3][1]
    assert got[4][1] is None and int(got[4][0][0, 0]) == 200
    looped = _labels(bag_frames(tmp_path / "bag", "", loop=True, limit=2), 5)
    assert looped == [0, 1, 0, 1, 0]


def test_a_bad_bag_fails_at_open_naming_it(tmp_path):
    pytest.importorskip("rosbags")
    with pytest.raises(DataError, match="cannot read bag"):
        open_bag(tmp_path / "missing", "", loop=False, limit=0)
    write_bag(tmp_path / "bag", [(np.zeros((2, 2), np.uint8), "x")])
    with pytest.raises(DataError, match="no sensor_msgs/Image on /other"):
        open_bag(tmp_path / "bag", "/other", loop=False, limit=0)
    first = next(open_bag(tmp_path / "bag", "/robot/camera", loop=False, limit=0))
    assert np.array_equal(first[0], np.zeros((2, 2), np.uint8))


def test_an_image_folder_replays_its_test_split_labelled_in_the_cards_order(tmp_path):
    root = write_image_folder(tmp_path / "task")             # test/{apple,bus,cat}
    card_order = ("cat", "apple", "bus", "dog")             # a model may know more classes
    files = index_image_files(root, card_order)
    assert files.classes == card_order and len(files) == 7 and files.skipped == 0
    names = [p.parent.name for p in files.paths]
    assert [card_order[label] for label in files.labels] == names
    frames = list(folder_frames(files, loop=False, seed=-1, limit=0, size_hint=(640, 480)))
    first, label = frames[0]                                 # apple/0.png: 30x50, red
    assert label == 1 and first.shape == (30, 50, 3) and first[..., 0].mean() > 150
    assert frames[2][0].shape == (20, 20)                    # apple/grey.png stays grey
    # No card: the train split's class folders name the labels, even those the test split lacks.
    for name in ("apple", "bus", "cat"):
        (root / "train" / name).mkdir(parents=True)
    shutil.rmtree(root / "test" / "apple")
    files = index_image_files(root)
    assert files.classes == ("apple", "bus", "cat") and set(files.labels) == {1, 2}


def test_an_image_folder_without_a_card_uses_its_sorted_class_folders(tmp_path):
    root = write_image_folder(tmp_path / "task")
    files = index_image_files(root / "test")                 # the folder itself: no splits
    assert files.classes == ("apple", "bus", "cat") and files.skipped == 0
    (root / "test" / "bus" / "notes.txt").write_text("not an image")
    assert index_image_files(root).skipped == 1


@pytest.mark.parametrize("make, message", [
    (lambda root: root.mkdir(), "no class sub-folders"),
    (lambda root: (root / "test" / "apple").mkdir(parents=True), "holds no images"),
    (lambda root: write_image_folder(root, ("apple", "zebra")), "['zebra'] are not among"),
])
def test_a_folder_that_cannot_be_replayed_is_refused_naming_it(tmp_path, make, message):
    root = tmp_path / "task"
    make(root)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        index_image_files(root, ("apple", "bus", "cat"))
    with pytest.raises(DataError, match="does not exist"):
        index_image_files(tmp_path / "nothing")


def test_images_are_read_as_8_bit_grey_or_rgb(tmp_path):
    from PIL import Image

    wide = np.full((6, 5), 65535 // 2, np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255                                       # red, fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).convert("P").save(tmp_path / "palette.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert read_image(tmp_path / "wide.png").tolist() == np.full((6, 5), 127).tolist()
    assert read_image(tmp_path / "clear.png").tolist() == np.full((4, 4, 3), 128).tolist()
    assert read_image(tmp_path / "palette.png").shape == (4, 4, 3)
    with pytest.raises(DataError, match="broken.jpg"):
        read_image(tmp_path / "broken.jpg")
    folder = tmp_path / "f"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    (tmp_path / "broken.jpg").rename(folder / "a" / "broken.jpg")
    (tmp_path / "wide.png").rename(folder / "b" / "wide.png")
    frames = list(folder_frames(index_image_files(folder), False, -1, 0))
    assert frames[0][0] is None and "broken.jpg" in frames[0][1]   # skipped, not fatal
    assert frames[1][1] == 1
