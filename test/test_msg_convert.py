"""Message <-> core mapping with the real generated types: Image fields to the image codec and
back, CompressionConfig round trips (the codec itself: test_serving_image_codec.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaspring_ros import msg_convert
from adaspring_ros.core.model.config import (
    DEFAULT_SPACE,
    CompressionConfig,
    ConfigError,
    StageConfig,
)

pytestmark = pytest.mark.ros


def _image(h, w, encoding, pixels=None, step=None):
    from sensor_msgs.msg import Image

    m = Image()
    m.height, m.width, m.encoding = h, w, encoding
    ch = msg_convert.ENCODINGS.get(encoding, 1)
    m.step = step if step is not None else w * ch
    if pixels is None:
        pixels = np.arange(m.step * h, dtype=np.uint32).astype(np.uint8).tobytes()
    m.data = pixels
    return m


@pytest.mark.parametrize("encoding", sorted(msg_convert.ENCODINGS))
def test_round_trip_every_encoding(encoding):
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(0)
    rgb = np.repeat(rng.integers(0, 256, (48, 32, 3), dtype=np.uint8), 2, axis=1)
    src = rgb[:, :, 0] if encoding.startswith("mono") else rgb
    msg = msg_convert.numpy_to_image(src, encoding, Image)
    assert (msg.encoding, msg.is_bigendian, msg.step) == (
        encoding, 0, 64 * msg_convert.ENCODINGS[encoding])
    out = msg_convert.image_to_numpy(msg)
    lossy = encoding not in ("mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8")  # 4:2:2
    assert np.abs(out.astype(int) - src).max() <= (2 if lossy else 0)
    assert msg_convert.image_to_numpy(msg, channels=3).shape == (48, 64, 3)


def test_mono16_follows_is_bigendian():
    from sensor_msgs.msg import Image

    m = Image(height=1, width=2, step=4, encoding="mono16",
              data=np.array([0x1234, 0xFF00], ">u2").tobytes())
    m.is_bigendian = 1
    assert msg_convert.image_to_numpy(m).tolist() == [[0x12, 0xFF]]
    m.is_bigendian = 0
    assert msg_convert.image_to_numpy(m).tolist() == [[0x34, 0x00]]


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_image_round_trip(fmt):
    from sensor_msgs.msg import CompressedImage

    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :32] = (200, 40, 10)
    msg = msg_convert.numpy_to_compressed(rgb, fmt, CompressedImage)
    assert msg.format == fmt and len(msg.data) < rgb.nbytes
    out = msg_convert.compressed_to_numpy(msg)  # msg.data as rclpy holds it: array.array
    assert np.abs(out.astype(int) - rgb).mean() < (2 if fmt == "jpeg" else 1e-9)
    assert msg_convert.compressed_to_numpy(msg, channels=1).ndim == (2 if fmt == "jpeg" else 3)
    msg.data = msg.data[:len(msg.data) // 2]
    with pytest.raises(msg_convert.ImageError, match="truncated"):
        msg_convert.compressed_to_numpy(msg)


def test_step_padding_is_honoured():
    h, w = 5, 7
    pixels = np.arange(h * 10, dtype=np.uint8).reshape(h, 10)  # 3 padding bytes per row
    out = msg_convert.image_to_numpy(_image(h, w, "mono8", pixels.tobytes(), step=10))
    assert np.array_equal(out, pixels[:, :w])


def test_a_bad_image_message_names_the_field():
    with pytest.raises(msg_convert.ImageError, match="unsupported encoding 'nv12'"):
        msg_convert.image_to_numpy(_image(4, 4, "nv12"))
    with pytest.raises(msg_convert.ImageError, match="width must be even"):
        msg_convert.image_to_numpy(_image(4, 5, "yuv422_yuy2"))
    with pytest.raises(msg_convert.ImageError, match="step 5 is smaller"):
        msg_convert.image_to_numpy(_image(4, 4, "rgb8", step=5))


@pytest.mark.parametrize("frame_id", ["", "c", "cam", "camera", "kamera_optische_achse_ä"])
def test_an_image_is_read_in_place_from_its_serialized_bytes(frame_id):
    """What rclpy's serializer writes, read back field by field: every string length moves the
    alignment of what follows (1-4 bytes of padding), so each frame_id length is a case."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    rgb = np.random.default_rng(1).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    for encoding, is_bigendian, stamp in (("rgb8", 0, (1_796_487_882, 999_999_999)),
                                          ("mono16", 1, (-3, 5)), ("bgra8", 0, (0, 0))):
        msg = msg_convert.numpy_to_image(rgb, encoding, Image)
        msg.header.frame_id, msg.is_bigendian = frame_id, is_bigendian
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        msg.step += 3 * is_bigendian  # row padding that the data then lacks: still read as sent
        data = serialize_message(msg)
        image = msg_convert.image_from_cdr(data, Header)
        assert image.header == msg.header
        assert (image.height, image.width, image.encoding, image.is_bigendian, image.step) == \
            (msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step)
        assert bytes(image.data) == bytes(msg.data) and image.data.readonly
        if encoding != "mono16":
            assert np.array_equal(msg_convert.image_to_numpy(image),
                                  msg_convert.image_to_numpy(msg))


def test_serialized_bytes_that_are_not_a_whole_image_are_refused():
    """Cut anywhere, another encapsulation, a string without its NUL or not UTF-8, more pixels
    claimed than arrived: ImageError, never a read past the bytes."""
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    msg = _image(4, 6, "rgb8")
    msg.header.frame_id = "camera"
    data = serialize_message(msg)
    for cut in range(len(data)):
        with pytest.raises(msg_convert.ImageError):
            msg_convert.image_from_cdr(data[:cut], Header)
    with pytest.raises(msg_convert.ImageError, match="little-endian CDR"):
        msg_convert.image_from_cdr(b"\x00\x00" + data[2:], Header)   # big-endian CDR
    frame_id_at = 16  # encapsulation 4, stamp 8, then the string's length
    no_nul = bytearray(data)
    no_nul[frame_id_at + 6] = ord("x")                               # "camera" and its NUL
    with pytest.raises(msg_convert.ImageError, match="bad string"):
        msg_convert.image_from_cdr(bytes(no_nul), Header)
    not_utf8 = bytearray(data)
    not_utf8[frame_id_at] = 0xFF
    with pytest.raises(msg_convert.ImageError, match="not UTF-8"):
        msg_convert.image_from_cdr(bytes(not_utf8), Header)
    more = bytearray(data)
    more[-len(msg.data) - 4:-len(msg.data)] = (len(msg.data) + 1).to_bytes(4, "little")
    with pytest.raises(msg_convert.ImageError, match="claims 73 bytes of pixels, 72 arrived"):
        msg_convert.image_from_cdr(bytes(more), Header)


def test_config_round_trip_through_message():
    from adaspring_ros.msg import CompressionConfig as ConfigMsg

    config = CompressionConfig(stages=(
        StageConfig(1.0, 3, "conv", 1.0, False),
        StageConfig(0.5, 2, "dwsep", 0.5, True),
        StageConfig(0.25, 1, "conv", 0.25, False),
    ), resolution=20)
    m = msg_convert.config_to_msg(config, ConfigMsg, predicted_latency_ms=float("inf"),
                                  storage_bytes=2**40, reason="test")
    assert m.config_id == config.id and m.reason == "test"
    assert math.isnan(m.predicted_latency_ms) and m.storage_bytes == 2**32 - 1
    assert msg_convert.config_from_msg(m, DEFAULT_SPACE) == config


def test_config_from_id_only_and_bad_requests():
    from adaspring_ros.msg import CompressionConfig as ConfigMsg

    m = ConfigMsg(config_id=CompressionConfig.full().id)
    assert msg_convert.config_from_msg(m, DEFAULT_SPACE) == CompressionConfig.full()
    with pytest.raises(ConfigError, match="names no variant"):
        msg_convert.config_from_msg(ConfigMsg(), DEFAULT_SPACE)
    good = msg_convert.config_to_msg(CompressionConfig.full(), ConfigMsg)
    bad = msg_convert.config_to_msg(CompressionConfig.full(), ConfigMsg)
    bad.operator_variant = ["conv", "winograd", "conv"]
    with pytest.raises(ConfigError, match="operator='winograd'"):
        msg_convert.config_from_msg(bad, DEFAULT_SPACE)
    bad = msg_convert.config_to_msg(CompressionConfig.full(), ConfigMsg)
    bad.width_ratio = [1.0, float("nan"), 1.0]
    with pytest.raises(ConfigError):
        msg_convert.config_from_msg(bad, DEFAULT_SPACE)
    bad.width_ratio = [1.0, 1.0]
    with pytest.raises(ConfigError, match="differ in length"):
        msg_convert.config_from_msg(bad, DEFAULT_SPACE)
    good.config_id = CompressionConfig.smallest().id
    with pytest.raises(ConfigError, match="does not match"):
        msg_convert.config_from_msg(good, DEFAULT_SPACE)
