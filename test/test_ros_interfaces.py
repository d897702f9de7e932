"""The generated interfaces match msg/ and srv/, and cross process boundaries over real DDS on
loopback."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from ros_harness import NodeProcess, call_service, spin_until

from adaspring_ros import msg_convert
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parent.parent
MESSAGE_TYPES = ["ContextState", "CompressionConfig", "PerformanceMetrics", "InferenceResult"]
# .msg primitive types as the generated classes' get_fields_and_field_types() spells them
PRIMITIVES = {"bool": "boolean", "byte": "octet", "char": "uint8", "float32": "float",
              "float64": "double", "string": "string", "wstring": "wstring",
              **{f"{s}int{n}": f"{s}int{n}" for s in ("", "u") for n in (8, 16, 32, 64)}}


def declared_fields(text: str) -> list[tuple[str, str]]:
    """(name, type as the generated class spells it) of each field of a .msg (or one half of a
    .srv), in file order. Only the forms msg/ and srv/ use: primitives, nested types and
    unbounded arrays; anything else fails here, so a new form gets its own mapping."""
    fields = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        type_, name, *rest = line.split()
        assert not rest and "=" not in name, f"defaults and constants need a check: {line!r}"
        base, array = (type_[:-2], True) if type_.endswith("[]") else (type_, False)
        assert "[" not in base and "<" not in base, f"unhandled type form: {line!r}"
        if base in PRIMITIVES:
            base = PRIMITIVES[base]
        elif "/" not in base:
            base = "std_msgs/Header" if base == "Header" else f"adaspring_ros/{base}"
        fields.append((name, f"sequence<{base}>" if array else base))
    return fields


def interface_classes() -> list[tuple[str, str, type]]:
    """(file, declaration text, generated class) for every message and service half."""
    from adaspring_ros import msg, srv

    found = [(p.name, p.read_text(), getattr(msg, p.stem))
             for p in sorted((ROOT / "msg").glob("*.msg"))]
    for p in sorted((ROOT / "srv").glob("*.srv")):
        request, response = p.read_text().split("\n---\n")
        service = getattr(srv, p.stem)
        found += [(f"{p.name} request", request, service.Request),
                  (f"{p.name} response", response, service.Response)]
    return found


def test_generated_interfaces_match_msg_and_srv_files():
    from adaspring_ros import msg

    generated = {name for name in dir(msg) if name[:1].isupper()}
    assert generated == {p.stem for p in (ROOT / "msg").glob("*.msg")}
    for where, text, cls in interface_classes():
        declared = declared_fields(text)
        assert declared, where
        assert list(cls.get_fields_and_field_types().items()) == declared, where
        # No declared defaults, so a fresh message holds each type's zero value.
        fresh = cls()
        for name, type_ in declared:
            value = getattr(fresh, name)
            if type_.startswith("sequence<"):
                assert len(value) == 0, (where, name)
            elif "/" in type_:
                assert type(value).__name__ == type_.rsplit("/", 1)[1], (where, name)
            elif type_ == "string":
                assert value == "", (where, name)
            else:
                assert value == 0, (where, name)


@pytest.mark.parametrize("type_name", MESSAGE_TYPES + ["Image"])
def test_message_crosses_processes(type_name, rclpy_node, tmp_path):
    from sensor_msgs.msg import Image

    from adaspring_ros import msg as amsg

    msg_type = Image if type_name == "Image" else getattr(amsg, type_name)
    topic = f"/test_interfaces/{type_name.lower()}"
    received = []
    rclpy_node.create_subscription(msg_type, topic, received.append, 10)
    peer = NodeProcess(["test/ros_peer.py", "publish", type_name, topic], tmp_path, "peer")
    try:
        spin_until(rclpy_node, lambda: rclpy_node.count_publishers(topic) > 0, 15,
                   f"a publisher on {topic}", [peer])
        spin_until(rclpy_node, lambda: received, 10, f"a message on {topic}", [peer])
    finally:
        peer.stop()
    m = received[0]
    if type_name == "Image":
        assert (m.width, m.height, m.encoding, m.step) == (640, 480, "rgb8", 1920)
        pixels = msg_convert.image_to_numpy(m)
        expected = (np.arange(480 * 640 * 3, dtype=np.uint32) % 251).astype(np.uint8)
        assert np.array_equal(pixels, expected.reshape(480, 640, 3))
    elif type_name == "ContextState":
        assert m.battery_percent == pytest.approx(42.5) and m.charging
        assert math.isnan(m.battery_seconds_left) and m.source == "peer"
    elif type_name == "CompressionConfig":
        assert msg_convert.config_from_msg(m, DEFAULT_SPACE) == CompressionConfig.smallest()
        assert m.reason == "peer" and m.context.source == "peer"
    elif type_name == "PerformanceMetrics":
        assert (m.config_id, m.frames_received) == ("peer", 7)
    else:
        assert (m.class_id, m.label) == (3, "Dress")


def test_reconfigure_round_trip(rclpy_node, tmp_path):
    from adaspring_ros.msg import CompressionConfig as ConfigMsg
    from adaspring_ros.srv import Reconfigure

    service = "/test_interfaces/reconfigure"
    client = rclpy_node.create_client(Reconfigure, service)
    peer = NodeProcess(["test/ros_peer.py", "echo_reconfigure", service], tmp_path, "peer")
    try:
        wanted = CompressionConfig.smallest()
        request = Reconfigure.Request(config=msg_convert.config_to_msg(wanted, ConfigMsg))
        response = call_service(rclpy_node, client, request, "the Reconfigure reply", [peer])
    finally:
        peer.stop()
    assert response.success and response.message == f"echo {wanted.id}"
    assert msg_convert.config_from_msg(response.active, DEFAULT_SPACE) == wanted
    assert response.swap_ms == pytest.approx(1.5)
