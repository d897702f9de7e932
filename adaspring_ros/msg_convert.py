"""The one place that knows the message layout: ROS messages <-> core dataclasses, Image <-> numpy.

Nodes call these and never touch message fields one by one. Every decoder validates what it reads
and raises a ValueError subclass with a message fit for a log line. What is not about the layout
lives in core: the image codec (``core.serving.image_codec``), the replay camera's labelled
frame ids (``core.serving.replay``).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from adaspring_ros.core.model.config import (
    CompressionConfig,
    ConfigError,
    SearchSpace,
    StageConfig,
)
from adaspring_ros.core.serving.compressed_codec import decode_compressed, encode_compressed
from adaspring_ros.core.serving.image_codec import ENCODINGS, ImageError, decode, encode

__all__ = [
    "ImageError",
    "ENCODINGS",
    "image_to_numpy",
    "image_from_cdr",
    "SerializedImage",
    "numpy_to_image",
    "compressed_to_numpy",
    "numpy_to_compressed",
    "config_to_msg",
    "config_from_msg",
]


def image_to_numpy(msg: Any, channels: int | None = None) -> np.ndarray:
    """Decode a sensor_msgs/Image into uint8 (H, W) grey or (H, W, 3) RGB, for a model of
    ``channels`` input channels (``image_codec.decode`` of its fields: ImageError naming the bad
    one). The result may be a read-only view of the message buffer; callers must not keep it
    past the callback."""
    return decode(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                  bigendian=bool(msg.is_bigendian), channels=channels)


class SerializedImage:
    """A sensor_msgs/Image read in place from its serialized bytes (:func:`image_from_cdr`):
    the fields of the message, ``header`` a real Header, ``data`` a view of the bytes."""

    __slots__ = ("header", "height", "width", "encoding", "is_bigendian", "step", "data")


_CDR_LE = b"\x00\x01"  # the encapsulation of little-endian plain CDR (XCDR1), what rmws send


def image_from_cdr(data: bytes, header_type: Any) -> SerializedImage:
    """A sensor_msgs/Image from the bytes a raw subscription takes (little-endian CDR), its
    pixels a read-only view of ``data``; ImageError for any other encapsulation or bytes that
    are not a whole Image (every length is checked against what arrived).

    rclpy's own reading copies the pixels twice more (into a C message, then a Python array):
    0.19 ms of a 640x480 rgb8 frame's CPU here, the bytes read in place 0.23 against 0.42 ms
    (``rclpy.serialization.deserialize_message`` reads what this refuses).
    """
    view = memoryview(data).cast("B")
    if bytes(view[:2]) != _CDR_LE or len(view) < 4:
        raise ImageError("not little-endian CDR")
    end = len(view)
    pos = 4  # CDR aligns each field to its size, counting from after the encapsulation

    def number(kind: str) -> int:
        nonlocal pos
        size = struct.calcsize(kind)
        pos += -(pos - 4) % size
        if pos + size > end:
            raise ImageError(f"serialized Image cut short: {end} bytes")
        (value,) = struct.unpack_from("<" + kind, view, pos)
        pos += size
        return value

    def string() -> str:
        nonlocal pos
        length = number("I")  # with the terminating NUL
        if length < 1 or pos + length > end or view[pos + length - 1] != 0:
            raise ImageError(f"serialized Image has a bad string at byte {pos}")
        text = bytes(view[pos:pos + length - 1])
        pos += length
        try:
            return text.decode()
        except UnicodeDecodeError as exc:
            raise ImageError(f"serialized Image has a string that is not UTF-8: {exc}") from None

    image = SerializedImage()
    image.header = header_type()
    image.header.stamp.sec, image.header.stamp.nanosec = number("i"), number("I")
    image.header.frame_id = string()
    image.height, image.width = number("I"), number("I")
    image.encoding = string()
    image.is_bigendian = number("B")
    image.step = number("I")
    size = number("I")
    if pos + size > end:
        raise ImageError(f"serialized Image claims {size} bytes of pixels, {end - pos} arrived")
    image.data = view[pos:pos + size].toreadonly()
    return image


def numpy_to_image(pixels: np.ndarray, encoding: str, msg_type: Any) -> Any:
    """Encode uint8 (H, W) grey or (H, W, 3) RGB pixels as an Image of ``encoding``."""
    msg = msg_type()
    msg.height, msg.width, msg.step, msg.data = encode(pixels, encoding)
    msg.encoding = encoding.strip().lower()
    msg.is_bigendian = 0
    return msg


def compressed_to_numpy(msg: Any, channels: int | None = None) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg or png) into uint8 (H, W) grey or (H, W, 3)
    RGB (``compressed_codec.decode_compressed``: ImageError naming the reason)."""
    return decode_compressed(msg.format, msg.data, channels=channels)


def numpy_to_compressed(pixels: np.ndarray, fmt: str, msg_type: Any, quality: int = 90) -> Any:
    """Encode uint8 (H, W) grey or (H, W, 3) RGB pixels as a CompressedImage of ``fmt``
    (jpeg at ``quality``, or png)."""
    msg = msg_type()
    msg.format = fmt
    msg.data = encode_compressed(pixels, fmt, quality)
    return msg


def _finite(value: float, default: float = float("nan")) -> float:
    value = float(value) if value is not None else default
    return value if math.isfinite(value) else default


def config_to_msg(config: CompressionConfig, msg_type: Any, **extra: Any) -> Any:
    """Fill an adaspring_ros/CompressionConfig message.

    ``extra`` sets the prediction fields by name (predicted_accuracy_percent, predicted_latency_ms,
    predicted_energy_mj, storage_bytes, reason, swap_ms, context, header).
    """
    msg = msg_type()
    msg.config_id = config.id
    msg.input_resolution_px = int(config.resolution)
    msg.width_ratio = [float(s.width) for s in config.stages]
    msg.depth_blocks = [int(s.depth) for s in config.stages]
    msg.operator_variant = [str(s.operator) for s in config.stages]
    msg.rank_ratio = [float(s.rank) for s in config.stages]
    msg.int8_weights = [bool(s.int8) for s in config.stages]
    for name, value in extra.items():
        if value is None:
            continue
        if name in ("predicted_accuracy_percent", "predicted_latency_ms", "predicted_energy_mj"):
            value = _finite(value)
        elif name == "storage_bytes":
            value = max(0, min(int(value), 2**32 - 1))
        setattr(msg, name, value)
    return msg


def config_from_msg(msg: Any, space: SearchSpace) -> CompressionConfig:
    """Decode the operator choices of a CompressionConfig message and validate them in
    ``space`` (the served backbone's, from its checkpoint or profile table).

    The per-stage arrays decide; when they are all empty, a non-empty ``config_id`` is parsed
    instead. Raises ConfigError naming the bad field.
    """
    arrays = {
        "width_ratio": list(msg.width_ratio),
        "depth_blocks": list(msg.depth_blocks),
        "operator_variant": list(msg.operator_variant),
        "rank_ratio": list(msg.rank_ratio),
        "int8_weights": list(msg.int8_weights),
    }
    if not any(arrays.values()):
        if msg.config_id:
            return CompressionConfig.from_id(msg.config_id, space)
        raise ConfigError("request names no variant: config_id and all per-stage arrays are empty")
    lengths = {name: len(v) for name, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ConfigError(f"per-stage arrays differ in length: {lengths}")
    stages = tuple(
        StageConfig(width=float(w), depth=int(d), operator=str(o), rank=float(r), int8=bool(q))
        for w, d, o, r, q in zip(*arrays.values(), strict=True)
    )
    for i, s in enumerate(stages):
        if not (math.isfinite(s.width) and math.isfinite(s.rank)):
            raise ConfigError(f"stage {i}: width_ratio and rank_ratio must be finite")
    config = CompressionConfig(stages=stages, resolution=int(msg.input_resolution_px))
    config = config.validated(space)
    if msg.config_id and msg.config_id != config.id:
        raise ConfigError(
            f"config_id {msg.config_id!r} does not match the per-stage fields ({config.id})"
        )
    return config


# -- inference results, model info, performance metrics ------------------------------------------
__all__ += [
    "result_to_msg",
    "model_info_to_msg",
    "metrics_to_msg",
]


def model_info_to_msg(class_names: list[str], backbone_path: str, backbone_sha256: str,
                      table_path: str, table_sha256: str, engine: Any, msg_type: Any) -> Any:
    """Fill an adaspring_ros/ModelInfo: what decodes the InferenceResults of one configuration
    (``engine``: an EngineInfo, its name and version)."""
    msg = msg_type()
    msg.class_names = [str(c) for c in class_names]
    msg.backbone_path = str(backbone_path)
    msg.backbone_sha256 = str(backbone_sha256)
    msg.profile_table_path = str(table_path)
    msg.profile_table_sha256 = str(table_sha256)
    msg.engine = str(engine.name)
    msg.engine_version = str(engine.version)
    return msg


def result_to_msg(header: Any, class_id: int, label: str, score: float, config_id: str,
                  latency_ms: float, msg_type: Any) -> Any:
    """Fill an adaspring_ros/InferenceResult; ``header`` is the input image's header."""
    msg = msg_type()
    msg.header = header
    msg.class_id = int(class_id)
    msg.label = str(label)
    msg.score = _finite(score)
    msg.config_id = str(config_id)
    msg.latency_ms = _finite(latency_ms)
    return msg


_METRIC_COUNTS = ("frames_received", "frames_processed", "frames_dropped", "frames_rejected",
                  "frames_skipped", "reconfigure_rejected")
_METRIC_FLOATS = ("model_latency_ms_p50", "model_latency_ms_p95", "end_to_end_latency_ms_p50",
                  "end_to_end_latency_ms_p95", "fps", "energy_per_frame_mj", "last_swap_ms",
                  "non_model_latency_ms_p50", "non_model_latency_ms_p95", "max_rate_hz")


def metrics_to_msg(values: dict[str, Any], msg_type: Any) -> Any:
    """Fill an adaspring_ros/PerformanceMetrics from a dict keyed by field name.

    Counts are clamped to the field's range, floats that are missing or not finite become NaN
    (the message's "unknown"), so a bad sample can never make publish() raise.
    """
    msg = msg_type()
    if "header" in values:
        msg.header = values["header"]
    msg.config_id = str(values.get("config_id", ""))
    msg.energy_method = str(values.get("energy_method", ""))
    for name in _METRIC_COUNTS:
        setattr(msg, name, max(0, min(int(values.get(name, 0)), 2**64 - 1)))
    msg.swaps = max(0, min(int(values.get("swaps", 0)), 2**32 - 1))
    for name in _METRIC_FLOATS:
        setattr(msg, name, _finite(values.get(name)))
    return msg


# -- context: adaspring_ros/ContextState <-> core Context, sensor_msgs/BatteryState ---------------
# ContextState carries an unknown reading as NaN; core Context carries it as None. Loads and the
# latency budget are always known, so NaN there is an error, not "unknown".

__all__ += [
    "ContextError",
    "context_to_msg",
    "context_from_msg",
    "battery_from_msg",
]


class ContextError(ValueError):
    """A ContextState or BatteryState that cannot be used; the message names the field."""


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def context_to_msg(context: Any, msg_type: Any, stamp: Any = None) -> Any:
    """Fill an adaspring_ros/ContextState from a core ``Context`` (None -> NaN).

    ``stamp`` (a builtin_interfaces/Time) goes into the header; without it the header is left
    empty for the caller to stamp.
    """
    msg = msg_type()
    if stamp is not None:
        msg.header.stamp = stamp
    for name in ("battery_percent", "battery_seconds_left", "memory_available_mb",
                 "cpu_frequency_mhz", "cpu_temperature_c"):
        setattr(msg, name, _nan_if_none(getattr(context, name)))
    msg.charging = bool(context.charging)
    msg.cpu_load_percent = float(context.cpu_load_percent)
    msg.cpu_load_other_percent = float(context.cpu_load_other_percent)
    msg.latency_budget_ms = float(context.latency_budget_ms)
    msg.source = str(context.source)
    return msg


def context_from_msg(msg: Any) -> Any:
    """A core ``Context`` from an adaspring_ros/ContextState; raises ContextError naming the
    field that is out of range (NaN optional readings become None = unknown)."""
    from adaspring_ros.core.policy.context import Context

    stamp = msg.header.stamp
    try:
        return Context(
            battery_percent=msg.battery_percent, charging=msg.charging,
            battery_seconds_left=msg.battery_seconds_left,
            cpu_load_percent=msg.cpu_load_percent,
            cpu_load_other_percent=msg.cpu_load_other_percent,
            memory_available_mb=msg.memory_available_mb,
            cpu_frequency_mhz=msg.cpu_frequency_mhz, cpu_temperature_c=msg.cpu_temperature_c,
            latency_budget_ms=msg.latency_budget_ms, source=msg.source or "unknown",
            timestamp=stamp.sec + stamp.nanosec * 1e-9,
        )
    except ValueError as exc:
        raise ContextError(f"ContextState from {msg.source or 'unknown source'!r}: {exc}") from exc


def battery_from_msg(msg: Any) -> Any:
    """A core ``BatteryReading`` from a sensor_msgs/BatteryState.

    Stricter than the message convention on purpose: the context node needs a state of charge,
    so a reading without one (percentage NaN and no charge/capacity to derive it from), any
    infinite value, or a value out of range raises ContextError rather than being guessed.
    A battery reported as not ``present`` is a valid reading of "no battery".
    """
    from adaspring_ros.core.policy.context import battery_from_state

    if not msg.present:
        return battery_from_state(math.nan, 0, present=False)
    values = {"percentage": msg.percentage, "charge": msg.charge, "capacity": msg.capacity,
              "current": msg.current, "voltage": msg.voltage}
    infinite = [name for name, v in values.items() if math.isinf(v)]
    if infinite:
        raise ContextError(f"BatteryState {', '.join(infinite)} is infinite")
    derivable = math.isfinite(msg.charge) and math.isfinite(msg.capacity) and msg.capacity > 0
    if math.isnan(msg.percentage) and not derivable:
        raise ContextError("BatteryState has no state of charge: percentage is NaN and "
                           "charge/capacity are unknown")
    try:
        return battery_from_state(msg.percentage, msg.power_supply_status, charge=msg.charge,
                                  capacity=msg.capacity, current=msg.current)
    except ValueError as exc:  # out of range, or an unknown power_supply_status
        raise ContextError(f"BatteryState: {exc}") from exc


# -- stamps: builtin_interfaces/Time that cannot be right ----------------------------------------
# A stamp is compared with the receiving node's clock. Both ends of a ROS graph are expected to
# share time (NTP, or /clock in simulation), so a stamp far from it is a driver bug or a forgery,
# and latency computed from it would be noise (one such frame alone can make a p95 of 10^12 ms).

__all__ += ["StampError", "stamp_to_ns", "checked_stamp_ns"]


class StampError(ValueError):
    """A header stamp that cannot be right; the message says why."""


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a builtin_interfaces/Time; StampError for a negative time or a nanosec
    field outside [0, 1e9) (the message's own invariant)."""
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if not 0 <= nanosec < 10**9:
        raise StampError(f"stamp nanosec {nanosec} is outside [0, 1e9)")
    ns = sec * 10**9 + nanosec
    if ns < 0:
        raise StampError(f"stamp {sec}.{nanosec:09d} s is negative")
    return ns


def checked_stamp_ns(stamp: Any, now_ns: int, tolerance_ns: int) -> int | None:
    """The stamp in ns, None when it is zero (not stamped: no time to measure from), or
    StampError when it is negative, malformed, or more than ``tolerance_ns`` from ``now_ns``
    (the receiving node's clock) in either direction."""
    ns = stamp_to_ns(stamp)
    if ns == 0:
        return None
    offset = ns - int(now_ns)
    if abs(offset) > tolerance_ns:
        where = "ahead of" if offset > 0 else "behind"
        raise StampError(f"stamp is {abs(offset) / 1e9:.3g} s {where} this node's clock "
                         f"(tolerance {tolerance_ns / 1e9:g} s)")
    return ns


# -- PerformanceMetrics at the evolution node -----------------------------------------------------
__all__ += ["MetricsError", "check_metrics_origin"]


class MetricsError(ValueError):
    """PerformanceMetrics that cannot come from the perception node serving now.

    ``stale`` is true when the only problem is that the window closed before the last confirmed
    swap: such a message is genuine but describes the previous variant.
    """

    def __init__(self, message: str, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


def check_metrics_origin(msg: Any, now_ns: int, tolerance_ns: int, known: Any,
                         not_before_ns: int | None = None) -> int:
    """The stamp (ns) of a PerformanceMetrics message that may describe the serving variant.

    Raises MetricsError when it names a variant outside ``known`` (the profile table: the
    evolution node never applies another), when its stamp is malformed, zero, negative or more
    than ``tolerance_ns`` from ``now_ns``, and (``stale=True``) when it is stamped at or before
    ``not_before_ns`` (the last confirmed swap).
    """
    config_id = str(msg.config_id)
    if config_id not in known:
        shown = config_id if len(config_id) <= 80 else config_id[:77] + "..."
        raise MetricsError(f"metrics name variant {shown!r}, which is not in the profile table")
    try:
        ns = checked_stamp_ns(msg.header.stamp, now_ns, tolerance_ns)
    except StampError as exc:
        raise MetricsError(f"metrics for {config_id}: {exc}") from exc
    if ns is None:
        raise MetricsError(f"metrics for {config_id} carry no stamp")
    if not_before_ns is not None and ns <= not_before_ns:
        raise MetricsError(f"metrics for {config_id} closed {(not_before_ns - ns) / 1e9:.3g} s "
                           f"before the last swap", stale=True)
    return ns


# -- vision_msgs (nodes/vision_out.py): the same results in the messages integrators expect -------

__all__ += ["classification_to_msg", "label_info_to_msg"]


def classification_to_msg(result: Any, msg_type: Any, hypothesis_type: Any) -> Any:
    """A vision_msgs/Classification of an adaspring_ros/InferenceResult: the image's header and
    one hypothesis, the top-1 class with its score. vision_msgs' ``class_id`` is a string: it
    holds the class name, so a subscriber needs no lookup (LabelInfo maps indexes to names)."""
    msg = msg_type()
    msg.header = result.header
    msg.results = [hypothesis_type(class_id=str(result.label), score=_finite(result.score))]
    return msg


def label_info_to_msg(class_names: list[str], msg_type: Any, class_type: Any) -> Any:
    """A vision_msgs/LabelInfo: every class index (InferenceResult.class_id) with its name.
    The threshold is 0: every frame's top-1 class is published, whatever its score."""
    msg = msg_type()
    msg.class_map = [class_type(class_id=index, class_name=str(name))
                     for index, name in enumerate(class_names)]
    msg.threshold = 0.0
    return msg
