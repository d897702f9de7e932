"""The compressed-frame codec (jpeg, png with Pillow): format strings, colours and channels,
16-bit and alpha PNGs, and refusals (decompression bombs before any allocation, truncated
files, garbage, a format that does not match the data), without depending on or changing
Pillow's process-wide settings (no ROS)."""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from adaspring_ros.core.data.transforms import LUMA
from adaspring_ros.core.serving.compressed_codec import (
    compressed_format,
    declared_size,
    decode_compressed,
    encode_compressed,
)
from adaspring_ros.core.serving.image_codec import ImageError


def _smooth(h: int = 48, w: int = 64) -> np.ndarray:
    """A colour picture JPEG keeps well: gradients, no noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, np.full((h, w), 90)], axis=2).astype(np.uint8)


def _png(width: int, height: int, rows: bytes, depth: int = 8, colour: int = 0) -> bytes:
    """A PNG file written by hand: its header may claim anything."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


def _with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF0) claiming ``width`` x ``height``."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[:at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9:]


@pytest.mark.parametrize("fmt", ["jpeg", "JPEG", "jpg", "rgb8; jpeg compressed bgr8",
                                 "bgr8; jpeg compressed bgr8", " mono8 ; jpeg compressed mono8"])
def test_format_strings_of_image_transport_name_the_codec(fmt):
    assert compressed_format(fmt) == "jpeg"
    assert compressed_format("png") == compressed_format("rgba8; png compressed rgba8") == "png"


def test_jpeg_decodes_to_rgb_in_the_file_colours():
    rgb = _smooth()
    data = encode_compressed(rgb, "jpeg", 90)
    assert declared_size("jpeg", data) == (64, 48)
    for fmt in ("jpeg", "bgr8; jpeg compressed bgr8"):  # the file is RGB, whatever the camera's
        out = decode_compressed(fmt, data)
        assert out.shape == (48, 64, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - rgb).mean() < 3
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    out = decode_compressed("jpeg", encode_compressed(red, "jpeg", 90))
    assert out[..., 0].min() > 240 and out[..., 1:].max() < 15


def test_a_grey_model_gets_the_jpeg_luma_and_a_colour_model_rgb():
    rgb = _smooth()
    data = encode_compressed(rgb, "jpeg", 90)
    grey = decode_compressed("jpeg", data, channels=1)
    assert grey.shape == (48, 64)
    assert np.abs(grey - rgb @ np.array(LUMA)).mean() < 2
    grey_file = encode_compressed(rgb[..., 1], "jpeg", 90)
    colour = decode_compressed("jpeg", grey_file, channels=3)
    assert colour.shape == (48, 64, 3)
    assert np.array_equal(colour[..., 0], colour[..., 2])
    assert np.array_equal(colour[..., 0], decode_compressed("jpeg", grey_file))


def test_png_is_lossless_in_every_mode():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(decode_compressed("png", encode_compressed(rgb, "png")), rgb)
    grey = rgb[..., 0]
    assert np.array_equal(decode_compressed("png", encode_compressed(grey, "png")), grey)
    assert np.array_equal(decode_compressed("png", encode_compressed(grey, "png"), channels=3),
                          np.repeat(grey[..., None], 3, axis=2))

    def saved(image: Image.Image) -> bytes:
        import io

        out = io.BytesIO()
        image.save(out, "PNG")
        return out.getvalue()

    rgba = np.concatenate([rgb, np.full((20, 30, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(decode_compressed("png", saved(Image.fromarray(rgba))), rgb)
    palette = Image.fromarray(rgb).quantize(16)
    assert np.array_equal(decode_compressed("png", saved(palette)),
                          np.asarray(palette.convert("RGB")))
    # 16-bit grey: the high byte, as mono16
    samples = np.array([[0, 255, 256, 0x1234, 0xFFFF]], ">u2")
    sixteen = _png(5, 1, b"\x00" + samples.tobytes(), depth=16)
    assert decode_compressed("png", sixteen).tolist() == [[0, 0, 1, 0x12, 0xFF]]


def test_a_decompression_bomb_is_refused_before_anything_is_allocated():
    bomb = _png(100_000, 100_000, b"\x00" * 100_001)  # 10^10 pixels claimed in ~100 bytes
    jpeg_bomb = _with_size(encode_compressed(_smooth(), "jpeg"), 60_000, 60_000)
    tracemalloc.start()
    try:
        for fmt, data in (("png", bomb), ("jpeg", jpeg_bomb)):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            with pytest.raises(ImageError, match="more than the 16777216-pixel limit"):
                decode_compressed(fmt, data)
            assert tracemalloc.get_traced_memory()[1] - before < 256 * 1024
    finally:
        tracemalloc.stop()
    small = encode_compressed(_smooth(), "png")
    with pytest.raises(ImageError, match="64x48 = 3072 pixels, more than the 3000-pixel"):
        decode_compressed("png", small, max_pixels=3000)
    assert decode_compressed("png", small, max_pixels=3072).shape == (48, 64, 3)


def test_pillow_process_wide_settings_are_neither_read_nor_changed(monkeypatch):
    limit, truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    decode_compressed("jpeg", encode_compressed(_smooth(), "jpeg"))
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == (limit, truncated)
    # another library of the process lets Pillow load truncated files: still refused here
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encode_compressed(_smooth(), "jpeg")
    with pytest.raises(ImageError, match="truncated jpeg"):
        decode_compressed("jpeg", data[:len(data) // 2])
    # and a process-wide limit lowered elsewhere does not change what is accepted here
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageError, match="pixel limit"):
        decode_compressed("jpeg", _with_size(data, 60_000, 60_000))


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_truncated_files_are_refused(fmt):
    data = encode_compressed(_smooth(), fmt)
    for cut in (len(data) - 1, len(data) // 2, 40):
        with pytest.raises(ImageError, match=f"truncated {fmt}"):
            decode_compressed(fmt, data[:cut])


@pytest.mark.parametrize("fmt, data, fragment", [
    ("jpeg", bytes(range(256)) * 8, "not a jpeg file"),
    ("png", b"\x89PNG\r\n\x1a\n" + bytes(200), "png without an image header"),
    ("jpeg", b"", "not a jpeg file"),
    ("jpeg", b"\xff\xd8\xff\xda" + bytes(100) + b"\xff\xd9", "without a readable frame header"),
    # a header walk that never ends: thousands of empty comment segments
    ("jpeg", b"\xff\xd8" + b"\xff\xfe\x00\x02" * 20000 + b"\xff\xd9", "frame header"),
    ("tiff", b"II*\x00", "unsupported compressed format 'tiff'"),
    ("16UC1; compressedDepth png", b"", "unsupported compressed format"),
    ("", b"", "unsupported compressed format ''"),
])
def test_garbage_and_unsupported_formats_are_refused(fmt, data, fragment):
    start = time.perf_counter()
    with pytest.raises(ImageError, match=fragment):
        decode_compressed(fmt, data)
    assert time.perf_counter() - start < 1.0


def test_a_format_that_does_not_match_the_data_is_refused():
    png = encode_compressed(_smooth(), "png")
    jpeg = encode_compressed(_smooth(), "jpeg")
    with pytest.raises(ImageError, match="not a jpeg file"):
        decode_compressed("rgb8; jpeg compressed bgr8", png)
    with pytest.raises(ImageError, match="not a png file"):
        decode_compressed("png", jpeg)
    # a complete file whose image data is damaged: Pillow's refusal becomes an ImageError
    damaged = jpeg[:jpeg.index(b"\xff\xda")] + b"\xff\xda\x00\x0c" + bytes(40) + b"\xff\xd9"
    with pytest.raises(ImageError, match="cannot decode the jpeg data"):
        decode_compressed("jpeg", damaged)
