"""The replay camera's frames: labelled frames from a dataset, an image folder or a ROS 2 bag,
the letterbox that fits them to the camera's size, and the frame_id that carries their label.
ROS-free (bags are read with ``rosbags``, their images decoded by ``image_codec``; image files
with Pillow, one per frame, so a folder of any size is replayed in bounded memory).

An image folder is a user's task as training reads it: ``<root>/<class>/...`` or, when it has
one, its test split ``<root>/test/<class>/...``; each image is replayed at its own size and in
its own colours (grey stays grey; palette and alpha composited on mid grey, 16-bit scaled to 8).
Labels are indexes into the class names of the backbone's model card, so the replayed labels
and the backbone's outputs agree whatever the folder holds (a class folder the card does not
name is refused).

The replay camera carries the true class in header.frame_id as "<base>/label=<id>/seq=<n>"
("<base>/seq=<n>" when unlabelled). The perception node copies the image header into its
InferenceResult, so live accuracy needs no stamp matching: parse result.header.frame_id.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaspring_ros.core.data import datasets as data
from adaspring_ros.core.serving.image_codec import ImageError, decode

__all__ = ["Frame", "labelled_frame_id", "parse_labelled_frame_id", "fit_frame",
           "dataset_frames", "ImageFiles", "index_image_files", "read_image", "folder_frames",
           "bag_frames", "open_bag"]

Frame = tuple[np.ndarray, "int | None"]


def labelled_frame_id(base: str, label: int | None, seq: int) -> str:
    """``camera/label=3/seq=17`` (or ``camera/seq=17`` without a label)."""
    base = str(base).rstrip("/")
    if label is None:
        return f"{base}/seq={int(seq)}"
    return f"{base}/label={int(label)}/seq={int(seq)}"


def parse_labelled_frame_id(frame_id: str) -> tuple[int | None, int | None]:
    """(label, seq) from a frame_id written by :func:`labelled_frame_id`; None where absent.

    Any other frame_id (a real camera's "camera_optical_frame") gives (None, None).
    """
    label = seq = None
    for part in str(frame_id).split("/"):
        key, sep, value = part.partition("=")
        if not sep:
            continue
        try:
            number = int(value)
        except ValueError:
            continue
        if key == "label" and number >= 0:
            label = number
        elif key == "seq" and number >= 0:
            seq = number
    return label, seq


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


@dataclass(frozen=True)
class ImageFiles:
    """The image files of an image folder's split, their labels (indexes into ``classes``)
    and how many files were skipped as not images."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.paths)


def _class_folders(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def index_image_files(root: Path, classes: Sequence[str] | None = None) -> ImageFiles:
    """The image files of ``root``'s test split (``root/test`` when it holds class folders,
    else ``root``), labelled by their class folder's index in ``classes`` (the model card's;
    None: the sorted class folders of ``root/train`` when it exists, else of the split).
    Files no Pillow plugin claims by their suffix are skipped and counted. DataError, naming
    the folder, when there is no class folder, no image, or a class ``classes`` lacks."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise data.DataError(f"image folder {root} does not exist")
    split = root / "test"
    if not (split.is_dir() and _class_folders(split)):
        split = root
    found = _class_folders(split)
    if not found:
        raise data.DataError(f"image folder {split} has no class sub-folders")
    if classes is None:
        train = root / "train"
        classes = _class_folders(train) if split != root and train.is_dir() else found
    classes = tuple(classes)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise data.DataError(f"{split}: class folder(s) {unknown} are not among the model's "
                             f"classes {list(classes)}")
    Image.init()
    suffixes = {s.lower() for s in Image.registered_extensions()}
    paths, labels, skipped = [], [], 0
    for name in found:
        for top, dirs, files in os.walk(split / name, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(f for f in files if not f.startswith(".")):
                if os.path.splitext(file)[1].lower() in suffixes:
                    paths.append(Path(top) / file)
                    labels.append(classes.index(name))
                else:
                    skipped += 1
    if not paths:
        raise data.DataError(f"image folder {split} holds no images")
    return ImageFiles(tuple(paths), tuple(labels), classes, skipped)


def read_image(path: Path, size_hint: tuple[int, int] = (0, 0)) -> np.ndarray:
    """uint8 (H, W) grey or (H, W, 3) RGB pixels of one image file; DataError if it cannot be
    decoded. ``size_hint`` (width, height) lets a JPEG decoder skip detail a frame of that size
    would not show (Pillow's draft mode)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format == "JPEG" and min(size_hint) > 0:
                image.draft(image.mode, size_hint)
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
                wide = np.asarray(image, dtype=np.float64)
                return (wide / 257.0).round().clip(0, 255).astype(np.uint8)
            if image.mode in ("1", "L", "F"):
                return np.asarray(image.convert("L"), dtype=np.uint8)
            if image.mode in ("LA", "La", "P", "PA", "RGBA", "RGBa"):
                rgba = image.convert("RGBA")
                backdrop = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
                image = Image.alpha_composite(backdrop, rgba)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # Pillow raises many types for damaged or unsupported files
        raise data.DataError(f"cannot read image {path}: {exc}") from exc


def folder_frames(files: ImageFiles, loop: bool, seed: int, limit: int,
                  size_hint: tuple[int, int] = (0, 0)) -> Iterator[Frame]:
    """Frames of an indexed image folder, decoded one at a time, optionally shuffled (seeded)
    and limited, looping. A file that cannot be decoded comes out as (None, reason)."""
    order = np.arange(len(files))
    if seed >= 0:
        order = np.random.default_rng(seed).permutation(len(order))
    if limit > 0:
        order = order[:limit]
    while True:
        for i in order:
            try:
                yield read_image(files.paths[i], size_hint), files.labels[i]
            except data.DataError as exc:
                yield None, str(exc)
        if not loop:
            return


def bag_frames(path: Path, topic: str, loop: bool, limit: int) -> Iterator[Frame]:
    """sensor_msgs/Image frames of a ROS 2 bag, read lazily; a label in frame_id is kept.

    A frame that cannot be decoded comes out as (None, reason) so the caller can skip it.
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

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
                label, _seq = parse_labelled_frame_id(msg.header.frame_id)
                count += 1
                try:
                    frame = np.array(decode(msg.encoding, msg.height, msg.width, msg.step,
                                            msg.data, bigendian=bool(msg.is_bigendian))), label
                except ImageError as exc:  # one bad frame: skip it, keep replaying
                    frame = None, f"bag frame {count}: {exc}"
                yield frame
                if 0 < limit <= count:
                    break
        if not loop or count == 0:
            return


def open_bag(path: Path, topic: str, loop: bool, limit: int) -> Iterator[Frame]:
    """:func:`bag_frames`, with its first frame read now, so that a bad bag fails at start-up
    (DataError naming the bag), not mid-stream."""
    frames = bag_frames(path, topic, loop, limit)
    try:
        first = next(frames)
    except StopIteration:
        raise data.DataError(f"bag {path} holds no images") from None
    except (data.DataError, ImageError):
        raise
    except Exception as exc:  # rosbags' own errors: missing file, bad metadata, ...
        raise data.DataError(f"cannot read bag {path}: {exc}") from exc
    return itertools.chain([first], frames)
