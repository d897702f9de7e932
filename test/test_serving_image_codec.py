"""The image codec (pure numpy): every encoding both ways, row padding, and bad headers refused
with the reason before anything of their size is allocated (no ROS)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from adaspring_ros.core.serving.image_codec import ENCODINGS, ImageError, decode, encode


def _fields(h: int, w: int, encoding: str, pixels: bytes | None = None,
            step: int | None = None) -> tuple:
    step = step if step is not None else w * ENCODINGS.get(encoding, 1)
    if pixels is None:
        pixels = np.arange(step * h, dtype=np.uint32).astype(np.uint8).tobytes()
    return encoding, h, w, step, pixels


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip_every_encoding(encoding):
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    src = rgb[:, :, 0] if encoding == "mono8" else rgb
    h, w, step, data = encode(src, encoding)
    assert (h, w, step, len(data)) == (48, 64, 64 * ENCODINGS[encoding], 48 * step)
    out = decode(encoding, h, w, step, data)
    assert np.array_equal(out, src) and not out.flags.writeable


def test_colour_to_mono8_is_the_luma_of_the_preprocessing():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    _, _, _, data = encode(rgb, "mono8")
    assert list(data) == [76, 150, 29]       # round(255 x 0.299 / 0.587 / 0.114)


def test_step_padding_is_honoured_and_bgr_comes_back_as_rgb():
    pixels = np.arange(5 * 10, dtype=np.uint8).reshape(5, 10)  # 3 padding bytes per row
    assert np.array_equal(decode("mono8", 5, 7, 10, pixels.tobytes()), pixels[:, :7])
    assert decode(" BGR8 ", 1, 1, 3, bytes([10, 20, 30])).tolist() == [[[30, 20, 10]]]
    assert decode("bgra8", 1, 1, 4, bytes([10, 20, 30, 40])).tolist() == [[[30, 20, 10]]]
    assert decode("rgb8", 1, 1, 3, np.array([1, 2, 3], np.uint8)).tolist() == [[[1, 2, 3]]]


@pytest.mark.parametrize("fields, fragment", [
    (_fields(4, 4, "yuv422"), "unsupported encoding"),
    (_fields(0, 4, "mono8", b""), "empty image"),
    (_fields(4, 4, "rgb8", step=5), "step 5 is smaller"),
    (_fields(4, 4, "mono8", b"\0" * 15), "data has 15 bytes"),
    (_fields(4, 4, "mono8", b"\0" * 17), "data has 17 bytes"),
    (_fields(20000, 20000, "rgba8", b""), "header claims 1600000000 bytes"),
    # a step bomb: 1,920 bytes claiming a 4 GiB frame
    (_fields(1, 640, "rgb8", bytes(1920), step=2**32 - 1), "header claims"),
    (_fields(2**32 - 1, 1, "mono8", bytes(64), step=1), "header claims"),
])
def test_bad_images_are_rejected_with_the_reason(fields, fragment):
    with pytest.raises(ImageError, match=fragment):
        decode(*fields)


def test_encoding_refuses_what_it_cannot_write():
    with pytest.raises(ImageError, match="unsupported"):
        encode(np.zeros((2, 2), np.uint8), "yuv422")
    with pytest.raises(ImageError, match="shape"):
        encode(np.zeros((2, 2, 4), np.uint8), "rgb8")


def test_decoding_costs_memory_in_proportion_to_the_data_received():
    """Header fields far larger than the data (within the size limit) allocate nothing of their
    size: the rows are a view, and the missing padding after the last row is not filled in."""
    tracemalloc.start()
    try:
        for h, w, encoding, step, size in ((1, 640, "rgb8", 60_000_000, 1920),
                                           (2, 8, "mono8", 30_000_000, 30_000_008),
                                           (3, 4, "bgra8", 16, 48)):
            pixels = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            out = decode(encoding, h, w, step, pixels)
            peak = tracemalloc.get_traced_memory()[1] - before
            assert out.shape[:2] == (h, w) and not out.flags.writeable
            assert peak < 64 * 1024, (h, w, step, peak)
            rows = np.frombuffer(pixels, np.uint8)
            first = rows[:w * ENCODINGS[encoding]].reshape(w, -1)[:, :3]
            expected = first[:, 2::-1] if encoding.startswith("bgr") else first
            assert np.array_equal(out[0].reshape(w, -1), expected)
            last = rows[step * (h - 1):step * (h - 1) + w * ENCODINGS[encoding]]
            assert np.array_equal(out[-1].reshape(-1)[:3], (
                last[:3][::-1] if encoding.startswith("bgr") else last[:3]))
    finally:
        tracemalloc.stop()
