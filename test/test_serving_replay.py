"""The replay camera's frame sources (no ROS): dataset frames (loop, limit, seeded order), the
letterbox, bags written with rosbags read back, and the labelled frame_id protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adaspring_ros.core.data.datasets import DataError, Dataset
from adaspring_ros.core.serving.replay import (
    bag_frames,
    dataset_frames,
    fit_frame,
    labelled_frame_id,
    open_bag,
    parse_labelled_frame_id,
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
