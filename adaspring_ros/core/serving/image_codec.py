"""Raw camera images <-> numpy pixels, in the encodings of sensor_msgs/Image (pure numpy).

:func:`decode` reads the fields of an image (encoding, height, width, step, data) into uint8
(H, W) grey or (H, W, 3) RGB pixels, the two forms the preprocessing
(``core.data.transforms``) turns into a model's input; :func:`encode` does the reverse (the
replay camera publishes every encoding with it). ``msg_convert`` maps a sensor_msgs/Image's
fields onto them, the replay camera a bag's messages; neither needs ROS. Every check raises
:class:`ImageError` with a message fit for a log line.

Conversions, all vectorised (table look-ups and whole-array arithmetic, no loop over pixels):
  rgb8, bgr8, rgba8, bgra8  RGB (channel order swapped for BGR, alpha dropped), a view;
  mono8                     grey, a view;
  mono16                    grey of the high byte (value >> 8: full scale 65535 -> 255), a view,
                            in the byte order ``is_bigendian`` names. A sensor using fewer bits
                            (a 10- or 12-bit IR stream) comes out dark, not rescaled: what a
                            frame looks like must not depend on the frame;
  yuv422 / uyvy (UYVY) and yuv422_yuy2 / yuyv (YUYV)
                            4:2:2, two pixels in 4 bytes sharing one Cb/Cr pair, so the width
                            must be even. ITU-R BT.601 in limited range (Y in 16..235, Cb/Cr
                            in 16..240), as V4L2 defines these formats by default and as
                            cv_bridge (OpenCV's YUV2RGB_UYVY/YUYV) converts them: RGB by
                            the BT.601 matrix with each chroma pair shared by its two pixels,
                            grey (for a 1-channel model) as Y rescaled to 0..255, which is the
                            BT.601 luma of that RGB (up to clipping of saturated colours).
``channels`` asks for a model's input: 1 returns grey where the grey form comes cheaper than
RGB (mono*, YUV's Y), RGB otherwise (the preprocessing converts it to BT.601 luma after
cropping); 3 returns RGB always, a grey source replicated to three channels (a read-only view).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adaspring_ros.core.data.transforms import LUMA

__all__ = ["ImageError", "ENCODINGS", "MAX_IMAGE_BYTES", "decode", "encode", "as_channels"]

# Bytes per pixel of every encoding the perception node accepts (8 bits per channel but
# mono16; the 4:2:2 ones pack two pixels in 4 bytes). "uyvy"/"yuyv" are ROS 2's current names,
# "yuv422"/"yuv422_yuy2" the older ones (sensor_msgs/image_encodings.hpp).
ENCODINGS = {"mono8": 1, "mono16": 2, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4,
             "yuv422": 2, "uyvy": 2, "yuv422_yuy2": 2, "yuyv": 2}
# Larger frames are refused rather than allocated: 8K RGBA is ~132 MB.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Byte offsets of (Y0, Cb, Y1, Cr) in the 4 bytes of a pixel pair.
_YUV_LAYOUT = {"uyvy": (1, 0, 3, 2), "yuyv": (0, 1, 2, 3)}
_YUV_NAMES = {"yuv422": "uyvy", "uyvy": "uyvy", "yuv422_yuy2": "yuyv", "yuyv": "yuyv"}


class ImageError(ValueError):
    """An image that cannot be decoded; the message says which field is wrong."""


def _bt601_tables() -> tuple[np.ndarray, ...]:
    """Look-up tables of limited-range BT.601 -> RGB, float32 by byte value: the luma term
    (plus 0.5, so truncating the clipped sum rounds it) and the four chroma terms; and the
    uint8 grey of each Y."""
    kr, kg, kb = LUMA
    v = np.arange(256, dtype=np.float64)
    y = (v - 16.0) * (255.0 / 219.0)
    c = (v - 128.0) * (255.0 / 224.0)
    tables = [y + 0.5, 2 * (1 - kr) * c, -2 * (1 - kb) * kb / kg * c,
              -2 * (1 - kr) * kr / kg * c, 2 * (1 - kb) * c]
    grey = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return (*(t.astype(np.float32) for t in tables), grey)


_Y_TERM, _R_FROM_CR, _G_FROM_CB, _G_FROM_CR, _B_FROM_CB, _Y_GREY = _bt601_tables()


def decode(encoding: str, height: int, width: int, step: int, data: Any, *,
           bigendian: bool = False, channels: int | None = None) -> np.ndarray:
    """uint8 (H, W) grey or (H, W, 3) RGB pixels from an image's fields (see the module
    docstring for each encoding and for ``channels``, the model's input channels or None for
    the encoding's own form). ``bigendian`` is the image's is_bigendian (mono16 only).

    Honours ``step`` (row padding). The result is a read-only view of ``data`` for every
    encoding but 4:2:2 (then a new array); callers must not keep a view past the buffer's life.

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
    if channels not in (None, 1, 3):
        raise ImageError(f"a model takes 1 or 3 channels, not {channels!r}")
    height, width, step = int(height), int(width), int(step)
    size = len(data)
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image: {width}x{height}")
    if name in _YUV_NAMES and width % 2:
        raise ImageError(f"{name} packs two pixels in 4 bytes: the width must be even, "
                         f"got {width}")
    row_bytes = width * ENCODINGS[name]  # Python ints: no overflow, whatever the header says
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than width*bytes per pixel = {row_bytes}")
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
    if name in _YUV_NAMES:
        return _from_yuv422(rows, _YUV_LAYOUT[_YUV_NAMES[name]], channels)
    if name == "mono8":
        pixels = rows
    elif name == "mono16":
        pixels = rows[:, (0 if bigendian else 1)::2]  # the high byte of every sample
    else:
        pixels = rows.reshape(height, width, ENCODINGS[name])
        pixels = pixels[:, :, 2::-1] if name.startswith("bgr") else pixels[:, :, :3]
    return as_channels(pixels, channels)


def as_channels(pixels: np.ndarray, channels: int | None) -> np.ndarray:
    """Grey (H, W) pixels replicated to (H, W, 3) (a read-only view) when ``channels`` is 3;
    anything else as it is."""
    if channels == 3 and pixels.ndim == 2:
        return np.broadcast_to(pixels[:, :, None], (*pixels.shape, 3))
    return pixels


def _from_yuv422(rows: np.ndarray, layout: tuple[int, int, int, int],
                 channels: int | None) -> np.ndarray:
    """(H, 2W) bytes of 4:2:2 -> grey of Y for a 1-channel model, else RGB (BT.601 limited)."""
    y0, cb, _, cr = layout
    luma = rows[:, y0::2]  # (H, W): Y0 Y1 of every pair, in pixel order
    if channels == 1:
        return np.take(_Y_GREY, luma)  # np.take: a few times faster than table[index] here
    pairs = rows.reshape(rows.shape[0], -1, 4)
    u, v = pairs[:, :, cb], pairs[:, :, cr]
    y = np.take(_Y_TERM, luma).reshape(pairs.shape[0], pairs.shape[1], 2)
    out = np.empty((*y.shape, 3), np.float32)
    np.add(y, np.take(_R_FROM_CR, v)[:, :, None], out=out[..., 0])
    np.add(y, (np.take(_G_FROM_CB, u) + np.take(_G_FROM_CR, v))[:, :, None], out=out[..., 1])
    np.add(y, np.take(_B_FROM_CB, u)[:, :, None], out=out[..., 2])
    np.clip(out, 0.0, 255.0, out=out)  # the tables carry the + 0.5 of rounding
    return out.astype(np.uint8).reshape(rows.shape[0], -1, 3)


def encode(pixels: np.ndarray, encoding: str) -> tuple[int, int, int, bytes]:
    """(height, width, step, data) of uint8 (H, W) grey or (H, W, 3) RGB pixels in
    ``encoding``: colour to mono by BT.601 luma, as the preprocessing converts it; mono16 as
    value x 257 (so that >> 8 gives the value back), little-endian; 4:2:2 in limited range with
    the chroma of each pixel pair averaged (the width must be even)."""
    name = encoding.strip().lower()
    if name not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}")
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        grey, rgb = pixels, None
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        grey, rgb = None, pixels
    else:
        raise ImageError(f"expected (H, W) or (H, W, 3) pixels, got shape {pixels.shape}")
    if name in _YUV_NAMES:
        out = _to_yuv422(pixels, _YUV_LAYOUT[_YUV_NAMES[name]])
    elif name in ("mono8", "mono16"):
        if grey is None:
            grey = (rgb @ np.array(LUMA)).round().clip(0, 255).astype(np.uint8)
        out = grey if name == "mono8" else (grey.astype("<u2") * 257).view(np.uint8)
    else:
        if rgb is None:
            rgb = np.repeat(grey[:, :, None], 3, axis=2)
        out = rgb[:, :, ::-1] if name.startswith("bgr") else rgb
        if name.endswith("a8"):
            alpha = np.full(out.shape[:2] + (1,), 255, np.uint8)
            out = np.concatenate([out, alpha], axis=2)
    out = np.ascontiguousarray(out)
    height, width = pixels.shape[:2]
    return int(height), int(width), int(width * ENCODINGS[name]), out.tobytes()


def _to_yuv422(pixels: np.ndarray, layout: tuple[int, int, int, int]) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB -> (H, W/2, 4) bytes of 4:2:2, BT.601 limited range."""
    height, width = pixels.shape[:2]
    if width % 2:
        raise ImageError(f"4:2:2 packs two pixels in 4 bytes: the width must be even, "
                         f"got {width}")
    kr, _, kb = LUMA
    x = pixels.astype(np.float64)
    luma = x if x.ndim == 2 else x @ np.array(LUMA)
    out = np.empty((height, width // 2, 4), np.uint8)
    y = 16.0 + luma * (219.0 / 255.0)
    out[:, :, layout[0]] = np.rint(y[:, 0::2])
    out[:, :, layout[2]] = np.rint(y[:, 1::2])
    if x.ndim == 2:
        out[:, :, layout[1]] = out[:, :, layout[3]] = 128
        return out
    pair = (x[:, 0::2] + x[:, 1::2]) / 2  # one chroma sample for two pixels
    pair_luma = pair @ np.array(LUMA)
    scale = 224.0 / 255.0
    cb = 128.0 + scale * (pair[:, :, 2] - pair_luma) / (2 * (1 - kb))
    cr = 128.0 + scale * (pair[:, :, 0] - pair_luma) / (2 * (1 - kr))
    out[:, :, layout[1]] = np.clip(np.rint(cb), 0, 255)
    out[:, :, layout[3]] = np.clip(np.rint(cr), 0, 255)
    return out
