"""The image codec (pure numpy): every encoding both ways, known pixels of the YUV ones, what a
grey or a colour model gets, row padding, and bad headers refused with the reason before
anything of their size is allocated (no ROS)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from adaspring_ros.core.data.transforms import LUMA, STD, preprocess_frame
from adaspring_ros.core.serving.image_codec import ENCODINGS, ImageError, decode, encode


def _fields(h: int, w: int, encoding: str, pixels: bytes | None = None,
            step: int | None = None) -> tuple:
    step = step if step is not None else w * ENCODINGS.get(encoding, 1)
    if pixels is None:
        pixels = np.arange(step * h, dtype=np.uint32).astype(np.uint8).tobytes()
    return encoding, h, w, step, pixels


LOSSLESS = ("mono8", "rgb8", "bgr8", "rgba8", "bgra8", "mono16")
YUV = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")


def test_every_encoding_is_covered_here():
    assert set(ENCODINGS) == set(LOSSLESS) | set(YUV)


@pytest.mark.parametrize("encoding", LOSSLESS)
def test_round_trip_every_lossless_encoding(encoding):
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    src = rgb[:, :, 0] if encoding.startswith("mono") else rgb
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


def test_mono16_keeps_the_high_byte_in_either_byte_order_and_honours_padding():
    samples = [0x0000, 0x00FF, 0x1234, 0xABCD, 0xFFFF]
    little = np.array(samples, "<u2").tobytes() + b"\xee\xee"  # one padding sample
    big = np.array(samples, ">u2").tobytes() + b"\xee\xee"
    expected = [[0x00, 0x00, 0x12, 0xAB, 0xFF]] * 2
    assert decode("mono16", 2, 5, 12, little * 2).tolist() == expected
    assert decode("mono16", 2, 5, 12, big * 2, bigendian=True).tolist() == expected
    h, w, step, data = encode(np.array([[0, 1, 128, 255]], np.uint8), "mono16")
    assert np.frombuffer(data, "<u2").tolist() == [0, 257, 128 * 257, 65535]  # full scale


# BT.601 limited range: (Y, Cb, Cr) of black, white, red, green, blue, mid grey.
PRIMARIES = [((16, 128, 128), (0, 0, 0)), ((235, 128, 128), (255, 255, 255)),
             ((81, 90, 240), (255, 0, 0)), ((145, 54, 34), (0, 255, 0)),
             ((41, 240, 110), (0, 0, 255)), ((126, 128, 128), (128, 128, 128))]


@pytest.mark.parametrize("encoding", YUV)
@pytest.mark.parametrize("ycc, rgb", PRIMARIES)
def test_yuv422_known_pixels_are_bt601_limited_range(encoding, ycc, rgb):
    y, cb, cr = ycc
    uyvy = encoding in ("yuv422", "uyvy")
    pair = bytes([cb, y, cr, y]) if uyvy else bytes([y, cb, y, cr])
    out = decode(encoding, 1, 2, 4, pair)
    assert out.shape == (1, 2, 3)
    assert np.abs(out.astype(int) - rgb).max() <= 2, (out.tolist(), rgb)
    grey = decode(encoding, 1, 2, 4, pair, channels=1)
    luma = round(float(np.dot(rgb, LUMA)))
    assert grey.shape == (1, 2) and np.abs(grey.astype(int) - luma).max() <= 1


def test_uyvy_and_yuyv_order_their_bytes_as_v4l2_does():
    # a dark and a bright pixel sharing one neutral chroma pair
    assert decode("uyvy", 1, 2, 4, bytes([128, 16, 128, 235])).tolist() == [
        [[0, 0, 0], [255, 255, 255]]]
    assert decode("yuyv", 1, 2, 4, bytes([16, 128, 235, 128])).tolist() == [
        [[0, 0, 0], [255, 255, 255]]]
    # the same bytes read in the other layout are another picture
    assert decode("yuyv", 1, 2, 4, bytes([128, 16, 128, 235])).tolist() != [
        [[0, 0, 0], [255, 255, 255]]]


@pytest.mark.parametrize("encoding", YUV)
def test_yuv422_round_trip_and_aliases(encoding):
    rng = np.random.default_rng(1)
    rgb = np.repeat(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8), 2, axis=1)  # pairs alike
    h, w, step, data = encode(rgb, encoding)
    assert (h, w, step, len(data)) == (30, 40, 80, 30 * 80)
    out = decode(encoding, h, w, step, data)
    assert np.abs(out.astype(int) - rgb).max() <= 2  # 219/224 levels for 256
    alias = {"yuv422": "uyvy", "uyvy": "yuv422", "yuv422_yuy2": "yuyv", "yuyv": "yuv422_yuy2"}
    assert np.array_equal(decode(alias[encoding], h, w, step, data), out)
    # grey is Y rescaled, the BT.601 luma of the RGB (rounded twice: +-1)
    grey = decode(encoding, h, w, step, data, channels=1)
    assert np.abs(grey.astype(int) - np.rint(rgb @ np.array(LUMA))).max() <= 1
    # step padding: the same picture with 6 bytes after every row
    padded = np.concatenate([np.frombuffer(data, np.uint8).reshape(h, step),
                             np.full((h, 6), 7, np.uint8)], axis=1)
    assert np.array_equal(decode(encoding, h, w, step + 6, padded.tobytes()), out)


def test_a_grey_frame_survives_yuv422_as_grey():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    h, w, step, data = encode(grey, "yuyv")
    assert set(np.frombuffer(data, np.uint8).reshape(16, 8, 4)[:, :, [1, 3]].ravel()) == {128}
    back = decode("yuyv", h, w, step, data, channels=1)
    assert np.abs(back.astype(int) - grey).max() <= 1


def test_yuv422_needs_an_even_width():
    with pytest.raises(ImageError, match="width must be even, got 3"):
        decode("yuv422_yuy2", 2, 3, 8, bytes(16))
    with pytest.raises(ImageError, match="width must be even"):
        encode(np.zeros((2, 3, 3), np.uint8), "uyvy")


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_model_gets_its_channels(encoding):
    """Grey models take grey where it comes cheaper (mono, YUV's Y) and RGB otherwise (the
    preprocessing converts it after cropping); colour models always RGB, grey replicated."""
    rgb = np.random.default_rng(2).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    fields = encode(rgb, encoding)
    native = decode(encoding, *fields)
    colour = decode(encoding, *fields, channels=3)
    assert colour.shape == (6, 8, 3) and colour.dtype == np.uint8
    if native.ndim == 2:
        assert all(np.array_equal(colour[:, :, c], native) for c in range(3))
    else:
        assert np.array_equal(colour, native)
    grey_model = decode(encoding, *fields, channels=1)
    assert grey_model.ndim == (3 if encoding[:3] in ("rgb", "bgr") else 2)
    with pytest.raises(ImageError, match="1 or 3 channels"):
        decode(encoding, *fields, channels=4)


def test_the_model_input_is_the_same_whichever_way_a_grey_model_gets_its_frame():
    """rgb8, bgr8, bgra8 and yuv422 of one frame give a grey model (nearly) one input."""
    rgb = np.repeat(np.random.default_rng(3).integers(0, 256, (48, 32, 3), dtype=np.uint8),
                    2, axis=1)
    reference = preprocess_frame(rgb, 16)
    for encoding, tolerance in (("rgb8", 0), ("bgr8", 0), ("bgra8", 0), ("yuyv", 1.5)):
        x = preprocess_frame(decode(encoding, *encode(rgb, encoding), channels=1), 16)
        assert x.shape == (1, 1, 16, 16)
        assert np.abs(x - reference).max() * STD * 255 <= tolerance + 1e-3, encoding


@pytest.mark.parametrize("fields, fragment", [
    (_fields(4, 4, "nv12"), "unsupported encoding"),
    (_fields(4, 4, "bayer_rggb8"), "unsupported encoding"),
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
        encode(np.zeros((2, 2), np.uint8), "nv12")
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
