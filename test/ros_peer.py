"""A second process for the interface tests: publishes sample messages or serves Reconfigure.

    python test/ros_peer.py publish <type> <topic>     publish a filled sample at 20 Hz
    python test/ros_peer.py echo_reconfigure <service> serve Reconfigure, echoing the request
"""

from __future__ import annotations

import sys

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from adaspring_ros import msg_convert
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig


def sample(type_name: str):
    from sensor_msgs.msg import Image

    from adaspring_ros import msg as amsg

    if type_name == "Image":
        # A 640x480 rgb8 frame with a known pattern the subscriber checks.
        pixels = (np.arange(480 * 640 * 3, dtype=np.uint32) % 251).astype(np.uint8)
        return msg_convert.numpy_to_image(pixels.reshape(480, 640, 3), "rgb8", Image)
    if type_name == "ContextState":
        m = amsg.ContextState()
        m.battery_percent, m.charging, m.latency_budget_ms = 42.5, True, 33.0
        m.battery_seconds_left = float("nan")
        m.source = "peer"
        return m
    if type_name == "CompressionConfig":
        m = msg_convert.config_to_msg(
            CompressionConfig.smallest(), amsg.CompressionConfig, reason="peer",
            predicted_accuracy_percent=88.0)
        m.context.source = "peer"
        return m
    if type_name == "PerformanceMetrics":
        m = amsg.PerformanceMetrics()
        m.config_id, m.frames_received, m.fps, m.energy_method = "peer", 7, 29.5, "peer"
        return m
    if type_name == "InferenceResult":
        m = amsg.InferenceResult()
        m.class_id, m.label, m.score, m.config_id = 3, "Dress", 0.75, "peer"
        return m
    raise SystemExit(f"unknown type {type_name}")


class Peer(Node):
    def __init__(self, mode: str, type_name: str, name: str) -> None:
        super().__init__("ros_peer")
        if mode == "publish":
            self.msg = sample(type_name)
            self.pub = self.create_publisher(type(self.msg), name, 10)
            self.timer = self.create_timer(0.05, self.timer_callback)
        elif mode == "echo_reconfigure":
            from adaspring_ros.srv import Reconfigure

            self.srv = self.create_service(Reconfigure, name, self.reconfigure_callback)
        else:
            raise SystemExit(f"unknown mode {mode}")

    def timer_callback(self) -> None:
        self.pub.publish(self.msg)

    def reconfigure_callback(self, request, response):
        config = msg_convert.config_from_msg(request.config, DEFAULT_SPACE)
        response.success = True
        response.message = f"echo {config.id}"
        response.active = request.config
        response.swap_ms = 1.5
        return response


def main() -> None:
    mode, type_name_or_service = sys.argv[1], sys.argv[2]
    name = sys.argv[3] if len(sys.argv) > 3 else type_name_or_service
    try:
        with rclpy.init():
            rclpy.spin(Peer(mode, type_name_or_service, name))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
