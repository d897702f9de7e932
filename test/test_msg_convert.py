"""Image decoding and CompressionConfig message round trips, with the real generated types."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaspring_ros import msg_convert
from adaspring_ros.core.model.config import CompressionConfig, ConfigError, StageConfig

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


@pytest.mark.parametrize("encoding", ["mono8", "rgb8", "bgr8", "rgba8", "bgra8"])
def test_round_trip_every_encoding(encoding):
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    src = rgb[:, :, 0] if encoding == "mono8" else rgb
    out = msg_convert.image_to_numpy(msg_convert.numpy_to_image(src, encoding, Image))
    assert np.array_equal(out, src)


def test_step_padding_is_honoured():
    h, w = 5, 7
    pixels = np.arange(h * 10, dtype=np.uint8).reshape(h, 10)  # 3 padding bytes per row
    out = msg_convert.image_to_numpy(_image(h, w, "mono8", pixels.tobytes(), step=10))
    assert np.array_equal(out, pixels[:, :w])


def test_bgr_is_returned_as_rgb():
    m = _image(1, 1, "bgr8", bytes([10, 20, 30]))
    assert msg_convert.image_to_numpy(m).tolist() == [[[30, 20, 10]]]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(h=4, w=4, encoding="yuv422"), "unsupported encoding"),
    (dict(h=0, w=4, encoding="mono8", pixels=b""), "empty image"),
    (dict(h=4, w=4, encoding="rgb8", step=5), "step 5 is smaller"),
    (dict(h=4, w=4, encoding="mono8", pixels=b"\0" * 15), "data has 15 bytes"),
    (dict(h=4, w=4, encoding="mono8", pixels=b"\0" * 17), "data has 17 bytes"),
    (dict(h=20000, w=20000, encoding="rgba8", pixels=b""), "header claims 1600000000 bytes"),
    # The step bomb of issue 18: 1,920 bytes claiming a 4 GiB frame.
    (dict(h=1, w=640, encoding="rgb8", step=2**32 - 1, pixels=bytes(1920)), "header claims"),
    (dict(h=2**32 - 1, w=1, encoding="mono8", step=1, pixels=bytes(64)), "header claims"),
])
def test_bad_images_are_rejected_with_the_reason(kwargs, fragment):
    with pytest.raises(msg_convert.ImageError, match=fragment):
        msg_convert.image_to_numpy(_image(**kwargs))


def test_decoding_costs_memory_in_proportion_to_the_data_received():
    """Header fields far larger than the data (within the size limit) allocate nothing of their
    size: the rows are a view, and the missing padding after the last row is not filled in."""
    import tracemalloc

    tracemalloc.start()
    try:
        for h, w, encoding, step, size in ((1, 640, "rgb8", 60_000_000, 1920),
                                           (2, 8, "mono8", 30_000_000, 30_000_008),
                                           (3, 4, "bgra8", 16, 48)):
            pixels = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
            msg = _image(h, w, encoding, pixels, step=step)
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            out = msg_convert.image_to_numpy(msg)
            peak = tracemalloc.get_traced_memory()[1] - before
            assert out.shape[:2] == (h, w) and not out.flags.writeable
            assert peak < 64 * 1024, (h, w, step, peak)
            rows = np.frombuffer(pixels, np.uint8)
            first = rows[:w * msg_convert.ENCODINGS[encoding]].reshape(w, -1)[:, :3]
            expected = first[:, 2::-1] if encoding.startswith("bgr") else first
            assert np.array_equal(out[0].reshape(w, -1), expected)
            last = rows[step * (h - 1):step * (h - 1) + w * msg_convert.ENCODINGS[encoding]]
            assert np.array_equal(out[-1].reshape(-1)[:3], (
                last[:3][::-1] if encoding.startswith("bgr") else last[:3]))
    finally:
        tracemalloc.stop()


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
    assert msg_convert.config_from_msg(m) == config


def test_config_from_id_only_and_bad_requests():
    from adaspring_ros.msg import CompressionConfig as ConfigMsg

    m = ConfigMsg(config_id=CompressionConfig.full().id)
    assert msg_convert.config_from_msg(m) == CompressionConfig.full()
    with pytest.raises(ConfigError, match="names no variant"):
        msg_convert.config_from_msg(ConfigMsg())
    good = msg_convert.config_to_msg(CompressionConfig.full(), ConfigMsg)
    bad = msg_convert.config_to_msg(CompressionConfig.full(), ConfigMsg)
    bad.operator_variant = ["conv", "winograd", "conv"]
    with pytest.raises(ConfigError, match="operator='winograd'"):
        msg_convert.config_from_msg(bad)
    bad = msg_convert.config_to_msg(CompressionConfig.full(), ConfigMsg)
    bad.width_ratio = [1.0, float("nan"), 1.0]
    with pytest.raises(ConfigError):
        msg_convert.config_from_msg(bad)
    bad.width_ratio = [1.0, 1.0]
    with pytest.raises(ConfigError, match="differ in length"):
        msg_convert.config_from_msg(bad)
    good.config_id = CompressionConfig.smallest().id
    with pytest.raises(ConfigError, match="does not match"):
        msg_convert.config_from_msg(good)
