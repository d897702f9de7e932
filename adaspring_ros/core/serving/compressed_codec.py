"""Compressed camera frames (sensor_msgs/CompressedImage: jpeg, png) <-> numpy, with Pillow.

:func:`decode_compressed` turns a CompressedImage's ``format`` and ``data`` into the pixels
``image_codec.decode`` gives for a raw frame (uint8 (H, W) grey or (H, W, 3) RGB, ``channels``
as there); :func:`encode_compressed` writes them (tests, benchmarks). ``format`` is what
image_transport's compressed plugin writes, e.g. "jpeg", "png" or "rgb8; jpeg compressed
bgr8": the word after the ";" (or the whole field) names the codec. The file itself holds the
colours in its own order (a JPEG or PNG is RGB whatever the camera's encoding), so the rest of
the field is not needed; compressedDepth (a depth-specific header in front of a PNG) is refused.

Nothing is decoded before the data has been checked against what it claims, so a frame costs
memory in proportion to what it may decode to, never to what a header says:
  - the bytes must start with the format's signature (a PNG sent as "jpeg" is refused);
  - the image size is read from the file's own header (PNG's IHDR, JPEG's frame header), without
    Pillow, and refused above ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`, so that even
    RGBA stays within the raw frames' ``MAX_IMAGE_BYTES``): a decompression bomb is refused
    before a pixel is allocated. Pillow's own process-wide limit (``Image.MAX_IMAGE_PIXELS``) is
    neither read nor changed;
  - the data must end where the format ends (JPEG's end-of-image marker, PNG's IEND chunk), so
    a truncated file is refused whatever Pillow's process-wide LOAD_TRUNCATED_IMAGES says;
  - anything Pillow then cannot decode is refused too. Every refusal is an ImageError naming
    the reason. (A file cut short and closed again with a valid end decodes as Pillow fills
    it, the missing part blank: a viewer shows it the same way.)
For a 1-channel model a colour JPEG is decoded to its luma plane only (libjpeg skips the
colour conversion: JPEG's Y is the BT.601 luma in full range); 16-bit grey PNGs are scaled to
8 bits by >> 8, as mono16.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from adaspring_ros.core.serving.image_codec import MAX_IMAGE_BYTES, ImageError, as_channels

__all__ = ["FORMATS", "MAX_IMAGE_PIXELS", "compressed_format", "declared_size",
           "decode_compressed", "encode_compressed"]

FORMATS = ("jpeg", "png")
# Largest decoded frame: 4096 x 4096, 64 MB even at 4 bytes a pixel.
MAX_IMAGE_PIXELS = MAX_IMAGE_BYTES // 4
_NAMES = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
_SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # an empty IEND chunk and its CRC
# JPEG frame headers (SOF0..SOF15 but DHT, JPG and DAC, which share the range).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0..RST7, SOI, EOI.
_STANDALONE = frozenset((0x01, *range(0xD0, 0xDA)))
# Segments before the frame header: real files carry a dozen (APPn, DQT, DHT, COM...).
_MAX_SEGMENTS = 256


def compressed_format(fmt: str) -> str:
    """"jpeg" or "png" from a CompressedImage's ``format`` ("jpeg", "png", "jpg", or
    image_transport's "<encoding>; jpeg compressed <encoding>"); ImageError for any other."""
    text = str(fmt).strip().lower()
    words = text.split(";", 1)[-1].split()
    if not words or words[0] not in _NAMES:
        raise ImageError(f"unsupported compressed format {fmt!r}; supported: jpeg, png "
                         f"(image_transport's compressed, not compressedDepth)")
    return _NAMES[words[0]]


def _octets(data: Any) -> memoryview:
    """The bytes of ``data`` (bytes, array.array('B') as rclpy gives them, uint8 ndarray),
    without a copy."""
    return memoryview(data).cast("B")


def declared_size(kind: str, data: Any) -> tuple[int, int]:
    """(width, height) that the ``kind`` ("jpeg"/"png") file in ``data`` declares, read from
    its header without decoding; ImageError if the data is not such a file."""
    head = _octets(data)
    if bytes(head[:len(_SIGNATURES[kind])]) != _SIGNATURES[kind]:
        raise ImageError(f"the data is not a {kind} file (format says {kind}, the first bytes "
                         f"are {bytes(head[:8]).hex()})")
    cut = ImageError(f"truncated {kind}: its {len(head)} bytes end inside its header")
    if kind == "png":
        if len(head) < 24:
            raise cut
        if bytes(head[12:16]) != b"IHDR":
            raise ImageError("png without an image header (IHDR)")
        return (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))
    i, end = 2, len(head)
    for _ in range(_MAX_SEGMENTS):
        if i + 4 > end:
            raise cut
        if head[i] != 0xFF:
            break
        marker = head[i + 1]
        if marker == 0xFF or marker in _STANDALONE:  # a fill byte, or a marker without length
            i += 1 if marker == 0xFF else 2
        elif marker in _SOF:
            if i + 9 > end:
                raise cut
            return (int.from_bytes(head[i + 7:i + 9], "big"),
                    int.from_bytes(head[i + 5:i + 7], "big"))
        elif marker == 0xDA:  # start of scan before any frame header
            break
        else:
            i += 2 + int.from_bytes(head[i + 2:i + 4], "big")
    raise ImageError("jpeg without a readable frame header before its data")


def _check_end(kind: str, data: Any) -> None:
    """ImageError unless ``data`` ends where a complete ``kind`` file ends."""
    tail = bytes(_octets(data)[-64:])
    complete = (tail.rstrip(b"\x00").endswith(b"\xff\xd9") if kind == "jpeg"
                else tail.endswith(_PNG_END))
    if not complete:
        end = "end-of-image marker" if kind == "jpeg" else "IEND chunk"
        raise ImageError(f"truncated {kind}: {len(_octets(data))} bytes without the {end}")


def decode_compressed(fmt: str, data: Any, *, channels: int | None = None,
                      max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """uint8 (H, W) grey or (H, W, 3) RGB pixels of a CompressedImage's ``format`` and
    ``data`` (see the module docstring for the checks, ``image_codec.decode`` for
    ``channels``). Raises ImageError naming the reason; MemoryError is left to the caller."""
    kind = compressed_format(fmt)
    if channels not in (None, 1, 3):
        raise ImageError(f"a model takes 1 or 3 channels, not {channels!r}")
    size = len(_octets(data))
    if size > MAX_IMAGE_BYTES:
        raise ImageError(f"{size} bytes of {kind}, more than the {MAX_IMAGE_BYTES}-byte limit")
    width, height = declared_size(kind, data)
    if width <= 0 or height <= 0:
        raise ImageError(f"{kind} declares an empty image: {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(f"{kind} declares {width}x{height} = {width * height} pixels, more "
                         f"than the {max_pixels}-pixel limit ({size} bytes arrived)")
    _check_end(kind, data)
    from PIL import Image  # only a node on compressed transport loads Pillow

    try:
        with Image.open(io.BytesIO(data), formats=(kind.upper(),)) as image:
            if image.size != (width, height):
                raise ImageError(f"{kind} header says {width}x{height}, the decoder "
                                 f"{image.size[0]}x{image.size[1]}")
            if kind == "jpeg" and channels == 1 and image.mode in ("RGB", "YCbCr"):
                image.draft("L", None)  # the luma plane only
            image.load()
            pixels = _pixels(image)
    except (ImageError, MemoryError):
        raise
    except Exception as exc:  # Pillow reports damaged data in many types
        raise ImageError(f"cannot decode the {kind} data ({size} bytes): "
                         f"{type(exc).__name__}: {exc}") from exc
    return as_channels(pixels, channels)


def _pixels(image: Any) -> np.ndarray:
    """A decoded Pillow image as uint8 (H, W) grey or (H, W, 3) RGB."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return np.asarray(image)
    if mode == "LA":
        return np.asarray(image)[:, :, 0]
    if mode == "RGBA":
        return np.asarray(image)[:, :, :3]
    if mode.startswith("I"):  # 16-bit grey PNG ("I;16", "I;16B", "I"): as mono16, >> 8
        return (np.asarray(image).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
    # palette, bilevel, CMYK...: Pillow's own conversion
    return np.asarray(image.convert("L" if mode == "1" else "RGB"))


def encode_compressed(pixels: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """uint8 (H, W) grey or (H, W, 3) RGB pixels as a jpeg (at ``quality``) or png file."""
    from PIL import Image

    kind = compressed_format(fmt)
    out = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    if kind == "jpeg":
        image.save(out, "JPEG", quality=int(quality))
    else:
        image.save(out, "PNG")
    return out.getvalue()
