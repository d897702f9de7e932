"""Raw camera images <-> numpy pixels, in the encodings of sensor_msgs/Image (pure numpy).

:func:`decode` reads the fields of an image (encoding, height, width, step, data) into uint8
(H, W) grey or (H, W, 3) RGB pixels; :func:`encode` does the reverse. ``msg_convert`` maps a
sensor_msgs/Image's fields onto them, the replay camera a bag's messages; neither needs ROS.
Every check raises :class:`ImageError` with a message fit for a log line.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adaspring_ros.core.data.transforms import LUMA

__all__ = ["ImageError", "ENCODINGS", "MAX_IMAGE_BYTES", "decode", "encode"]

# Channels per pixel of every encoding the perception node accepts (8 bits per channel).
ENCODINGS = {"mono8": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}
# Larger frames are refused rather than allocated: 8K RGBA is ~132 MB.
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class ImageError(ValueError):
    """An image that cannot be decoded; the message says which field is wrong."""


def decode(encoding: str, height: int, width: int, step: int, data: Any) -> np.ndarray:
    """uint8 (H, W) for mono8 or (H, W, 3) RGB for colour, from an image's fields.

    Honours ``step`` (row padding), converts BGR(A) to RGB and drops alpha. The result is a
    read-only view of ``data``; callers must not keep it past the buffer's life.

    Header fields are never trusted for an allocation: every size they imply is checked against
    the bytes that actually arrived before anything is built, and the rows are a strided view
    into those bytes (a missing padding after the last row is not filled in), so decoding costs
    memory in proportion to the data received, whatever ``height``, ``width`` or ``step`` claim.
    """
    name = str(encoding).strip().lower()
    if name not in ENCODINGS:
        raise ImageError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}"
        )
    channels = ENCODINGS[name]
    height, width, step = int(height), int(width), int(step)
    size = len(data)
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image: {width}x{height}")
    row_bytes = width * channels  # Python ints: no overflow, whatever the header says
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than width*channels = {row_bytes}")
    claimed = step * height
    if claimed > MAX_IMAGE_BYTES:
        raise ImageError(
            f"header claims {claimed} bytes ({width}x{height} {name}, step {step}), more "
            f"than the {MAX_IMAGE_BYTES}-byte limit; {size} bytes arrived")
    needed = step * (height - 1) + row_bytes  # the last row may come without its padding
    if size < needed or size > claimed:
        raise ImageError(
            f"data has {size} bytes, {width}x{height} {name} with step {step} needs "
            f"{claimed}")
    if isinstance(data, np.ndarray):
        buf = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    else:
        buf = np.frombuffer(data, dtype=np.uint8)
    # A view: row r starts at r*step; the checks above keep every byte it reads inside buf.
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row_bytes), strides=(step, 1),
                                           writeable=False)
    if channels == 1:
        return rows
    pixels = rows.reshape(height, width, channels)
    if name.startswith("bgr"):
        return pixels[:, :, 2::-1]
    return pixels[:, :, :3]


def encode(pixels: np.ndarray, encoding: str) -> tuple[int, int, int, bytes]:
    """(height, width, step, data) of uint8 (H, W) grey or (H, W, 3) RGB pixels in
    ``encoding`` (colour to mono8 by BT.601 luma, as the preprocessing converts it)."""
    name = encoding.lower()
    if name not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}")
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        grey = pixels
        rgb = np.repeat(pixels[:, :, None], 3, axis=2)
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        rgb = pixels
        grey = None
    else:
        raise ImageError(f"expected (H, W) or (H, W, 3) pixels, got shape {pixels.shape}")
    if name == "mono8":
        if grey is None:
            grey = (rgb @ np.array(LUMA)).round().clip(0, 255).astype(np.uint8)
        out = grey
    else:
        out = rgb[:, :, ::-1] if name.startswith("bgr") else rgb
        if name.endswith("a8"):
            alpha = np.full(out.shape[:2] + (1,), 255, np.uint8)
            out = np.concatenate([out, alpha], axis=2)
    out = np.ascontiguousarray(out)
    return int(out.shape[0]), int(out.shape[1]), int(out.shape[1] * ENCODINGS[name]), \
        out.tobytes()
