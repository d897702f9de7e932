"""Property-based fuzzing of the entry points that read outside data (no ROS processes needed;
the message decoders need the generated message types: marked ros).

Each property: the decoder either returns a valid value or raises its documented ValueError
subclass with a message; nothing else escapes. The number of inputs tried per entry point is
printed (run with -s) and set by FUZZ_EXAMPLES.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaspring_ros import msg_convert
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig, ConfigError
from adaspring_ros.core.model.profile_table import ProfileError, ProfileTable

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
TRIED: dict[str, int] = {}


def _count(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nfuzzed inputs per entry point:", json.dumps(TRIED, sort_keys=True))


encodings = st.sampled_from(["mono8", "rgb8", "bgr8", "rgba8", "bgra8", "RGB8", "16UC1",
                             "yuv422", "", "rgb8\0", "bayer_rggb8", "mono16", "yuv422_yuy2",
                             "uyvy", "YUYV", "nv12"])
dims = st.one_of(st.integers(0, 64), st.sampled_from([2**31 - 1, 2**32 - 1, 65536]))


@pytest.mark.ros
@FUZZ
@given(encoding=encodings, height=dims, width=dims, step=dims,
       extra=st.integers(-64, 64), bigendian=st.integers(0, 1),
       channels=st.sampled_from([None, 1, 3]))
def test_image_decoder_never_escapes(encoding, height, width, step, extra, bigendian, channels):
    from sensor_msgs.msg import Image

    _count("image_to_numpy")
    m = Image(height=height, width=width, step=step, encoding=encoding, is_bigendian=bigendian)
    size = max(0, min(step * height + extra, 1 << 16))
    m.data = bytes(size)
    try:
        out = msg_convert.image_to_numpy(m, channels)
    except msg_convert.ImageError as exc:
        assert str(exc)
        return
    assert out.dtype == np.uint8 and out.shape[:2] == (height, width)
    assert out.ndim == 2 or out.shape[2] == 3
    assert channels != 3 or out.ndim == 3


def _compressed_files() -> dict[str, bytes]:
    """Small real files to damage: jpeg colour and grey, png colour, grey, 16-bit, palette."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    images = {"jpeg": Image.fromarray(rgb), "jpeg-grey": Image.fromarray(rgb[..., 0]),
              "png": Image.fromarray(rgb), "png-grey": Image.fromarray(rgb[..., 0]),
              "png-16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
              "png-palette": Image.fromarray(rgb).quantize(8)}
    files = {}
    for name, image in images.items():
        out = io.BytesIO()
        image.save(out, "JPEG" if name.startswith("jpeg") else "PNG")
        files[name] = out.getvalue()
    return files


COMPRESSED = _compressed_files()


@pytest.mark.ros
@FUZZ
@given(name=st.sampled_from(sorted(COMPRESSED)), data=st.data(),
       fmt=st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png "
                            "compressed bgr8", "JPG", "", "tiff", "16UC1; compressedDepth png"]),
       channels=st.sampled_from([None, 1, 3]))
def test_compressed_decoder_never_escapes(name, data, fmt, channels):
    """Real small jpeg/png files, cut, spliced and with bytes overwritten (headers included),
    under any format string: a valid frame or an ImageError, nothing else."""
    from sensor_msgs.msg import CompressedImage

    _count("compressed_to_numpy")
    raw = bytearray(COMPRESSED[name])
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    raw = raw[:data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw
    m = CompressedImage(format=fmt)
    m.data = bytes(raw)
    try:
        out = msg_convert.compressed_to_numpy(m, channels)
    except msg_convert.ImageError as exc:
        assert str(exc)
        return
    assert out.dtype == np.uint8 and out.ndim in (2, 3) and out.size <= 1 << 24
    assert channels != 3 or out.shape[2] == 3


floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([0.25, 0.5, 0.75, 1.0]))
stage_lists = st.integers(0, 5)


@pytest.mark.ros
@FUZZ
@given(n=stage_lists, res=st.integers(0, 65535), data=st.data())
def test_reconfigure_request_decoder_never_escapes(n, res, data):
    from adaspring_ros.msg import CompressionConfig as ConfigMsg

    _count("config_from_msg")
    m = ConfigMsg()
    m.input_resolution_px = res
    m.width_ratio = [data.draw(floats) for _ in range(n)]
    m.depth_blocks = [data.draw(st.integers(0, 255)) for _ in range(n)]
    m.operator_variant = [data.draw(st.sampled_from(["conv", "dwsep", "", "CONV", "x" * 300]))
                          for _ in range(n)]
    m.rank_ratio = [data.draw(floats) for _ in range(data.draw(st.sampled_from([n, n + 1])))]
    m.int8_weights = [data.draw(st.booleans()) for _ in range(n)]
    m.config_id = data.draw(st.one_of(st.just(""), st.text(max_size=60)))
    try:
        config = msg_convert.config_from_msg(m, DEFAULT_SPACE)
    except ConfigError as exc:
        assert str(exc)
        return
    assert CompressionConfig.from_id(config.id) == config


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(stage=st.dictionaries(
    st.sampled_from(["width", "depth", "operator", "rank", "int8", "bogus"]),
    json_values, max_size=6), n=st.integers(0, 4), res=json_values)
def test_config_from_dict_never_escapes(stage, n, res):
    _count("CompressionConfig.from_dict")
    try:
        config = CompressionConfig.from_dict({"stages": [stage] * n, "resolution": res})
    except ConfigError as exc:
        assert str(exc)
        return
    assert CompressionConfig.from_json(config.to_json()) == config


@FUZZ
@given(text=st.one_of(st.text(max_size=80), st.just(CompressionConfig.full().id)))
def test_config_from_id_never_escapes(text):
    _count("CompressionConfig.from_id")
    try:
        config = CompressionConfig.from_id(text)
    except ConfigError:
        return
    assert config.id == text.strip()


def _valid_table_dict() -> dict:
    entry = {"config": CompressionConfig.full().to_dict(), "accuracy": 0.9,
             "latency_ms_p50": 1.0, "latency_ms_p95": 1.2, "macs": 1000, "params": 10,
             "storage_bytes": 40, "peak_memory_mb": 1.0, "energy_mj": 2.0}
    from adaspring_ros.core.model.config import DEFAULT_SPACE

    return {"schema_version": 1, "space": DEFAULT_SPACE.to_dict(), "entries": [entry]}


@FUZZ
@given(field=st.sampled_from(["accuracy", "latency_ms_p50", "macs", "energy_mj", "config",
                              "schema_version", "space", "entries"]),
       value=json_values)
def test_profile_table_rejects_bad_fields(field, value):
    _count("ProfileTable.from_dict")
    data = _valid_table_dict()
    if field in data:
        data[field] = value
    else:
        data["entries"][0][field] = value
    try:
        table = ProfileTable.from_dict(data)
    except ProfileError as exc:
        assert str(exc)
        return
    e = table.entries[0]
    assert 0 <= e.accuracy <= 1 and math.isfinite(e.latency_ms_p50)


def test_profile_table_file_checksum_and_truncation(tmp_path):
    path = tmp_path / "table.json"
    ProfileTable.from_dict(_valid_table_dict()).save(path)
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(ProfileTable.load(path, expected_sha256=digest)) == 1
    with pytest.raises(ProfileError, match="checksum mismatch"):
        ProfileTable.load(path, expected_sha256="0" * 64)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ProfileError, match="not valid JSON"):
        ProfileTable.load(path)
    with pytest.raises(ProfileError, match="cannot read"):
        ProfileTable.load(tmp_path / "missing.json")
