"""Frame sources of the replay camera: labelled frames from a dataset or a ROS 2 bag, and the
letterbox that fits them to the camera's size. ROS-free (bags are read with ``rosbags``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from adaspring_ros.core.data import datasets as data

__all__ = ["Frame", "fit_frame", "dataset_frames", "bag_frames", "open_bag"]

Frame = tuple[np.ndarray, "int | None"]


def fit_frame(pixels: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    """Scale uint8 (H, W[, 3]) pixels to fit ``width`` x ``height``, aspect kept, black bars.

    0 for both sides keeps the source size; 0 for one side derives it from the aspect ratio.
    """
    h, w = pixels.shape[:2]
    if width <= 0 and height <= 0:
        return pixels
    scale = min(width / w if width > 0 else np.inf, height / h if height > 0 else np.inf)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    width, height = width or new_w, height or new_h
    if interpolation == "nearest":
        rows = np.minimum((np.arange(new_h) + 0.5) * h / new_h, h - 1).astype(np.intp)
        cols = np.minimum((np.arange(new_w) + 0.5) * w / new_w, w - 1).astype(np.intp)
        scaled = pixels[rows[:, None], cols[None, :]]
    else:  # bilinear, pixel centres aligned (like align_corners=False)
        y = np.clip((np.arange(new_h) + 0.5) * h / new_h - 0.5, 0, h - 1)
        x = np.clip((np.arange(new_w) + 0.5) * w / new_w - 0.5, 0, w - 1)
        y0, x0 = np.floor(y).astype(np.intp), np.floor(x).astype(np.intp)
        y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
        fy, fx = (y - y0)[:, None], (x - x0)[None, :]
        if pixels.ndim == 3:
            fy, fx = fy[..., None], fx[..., None]
        src = pixels.astype(np.float32)
        top = src[y0][:, x0] * (1 - fx) + src[y0][:, x1] * fx
        bottom = src[y1][:, x0] * (1 - fx) + src[y1][:, x1] * fx
        scaled = (top * (1 - fy) + bottom * fy).round().clip(0, 255).astype(np.uint8)
    out = np.zeros((height, width) + pixels.shape[2:], np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top:top + new_h, left:left + new_w] = scaled
    return out


def dataset_frames(dataset: data.Dataset, loop: bool, seed: int, limit: int) -> Iterator[Frame]:
    """Frames of an in-memory dataset, optionally shuffled (seeded) and limited, looping."""
    order = np.arange(len(dataset))
    if seed >= 0:
        order = np.random.default_rng(seed).permutation(len(dataset))
    if limit > 0:
        order = order[:limit]
    while True:
        for i in order:
            yield dataset.images[i], int(dataset.labels[i])
        if not loop:
            return


def bag_frames(path: Path, topic: str, loop: bool, limit: int) -> Iterator[Frame]:
    """sensor_msgs/Image frames of a ROS 2 bag, read lazily; a label in frame_id is kept.

    A frame that cannot be decoded comes out as (None, reason) so the caller can skip it.
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    from adaspring_ros import msg_convert  # pure numpy: decodes the bag's sensor_msgs/Image

    typestore = get_typestore(Stores.ROS2_KILTED)
    while True:
        count = 0
        with AnyReader([path], default_typestore=typestore) as reader:
            connections = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/Image"
                           and (not topic or c.topic == topic)]
            if not connections:
                raise data.DataError(
                    f"bag {path} has no sensor_msgs/Image on {topic or 'any topic'}")
            for connection, _stamp, raw in reader.messages(connections=connections[:1]):
                msg = reader.deserialize(raw, connection.msgtype)
                label, _seq = msg_convert.parse_labelled_frame_id(msg.header.frame_id)
                count += 1
                try:
                    frame = np.array(msg_convert.image_to_numpy(msg)), label
                except msg_convert.ImageError as exc:  # one bad frame: skip it, keep replaying
                    frame = None, f"bag frame {count}: {exc}"
                yield frame
                if 0 < limit <= count:
                    break
        if not loop or count == 0:
            return


def open_bag(path: Path, topic: str, loop: bool, limit: int) -> Iterator[Frame]:
    """:func:`bag_frames`, with its first frame read now, so that a bad bag fails at start-up
    (DataError naming the bag), not mid-stream."""
    from adaspring_ros import msg_convert

    frames = bag_frames(path, topic, loop, limit)
    try:
        first = next(frames)
    except StopIteration:
        raise data.DataError(f"bag {path} holds no images") from None
    except (data.DataError, msg_convert.ImageError):
        raise
    except Exception as exc:  # rosbags' own errors: missing file, bad metadata, ...
        raise data.DataError(f"cannot read bag {path}: {exc}") from exc
    return itertools.chain([first], frames)
