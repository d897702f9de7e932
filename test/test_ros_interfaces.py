"""The generated interfaces import and cross process boundaries over real DDS on loopback."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ros_harness import NodeProcess, call_service, spin_until

from adaspring_ros import msg_convert
from adaspring_ros.core.model.config import CompressionConfig

pytestmark = pytest.mark.ros

MESSAGE_TYPES = ["ContextState", "CompressionConfig", "PerformanceMetrics", "InferenceResult"]


def test_every_interface_imports():
    from adaspring_ros import msg, srv

    for name in MESSAGE_TYPES:
        assert getattr(msg, name)() is not None
    assert srv.Reconfigure.Request().config.config_id == ""
    assert hasattr(srv.Reconfigure.Response(), "swap_ms")
    assert hasattr(msg.CompressionConfig(), "swap_ms")  # the swap time is a field, not text


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
        assert msg_convert.config_from_msg(m) == CompressionConfig.smallest()
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
    assert msg_convert.config_from_msg(response.active) == wanted
    assert response.swap_ms == pytest.approx(1.5)
