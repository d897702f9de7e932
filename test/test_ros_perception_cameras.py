"""Camera encodings and the compressed transport through real perception node processes.

Two nodes run on the shipped backbone: one on the raw transport, one with ``transport:
compressed`` (subscribing ``<image_topic>/compressed``). This process publishes 640x480 frames
of a Fashion-MNIST test image as a colour camera would (bgr8, yuv422_yuy2, a jpeg at quality
90) and requires, for each, a result stamped with that frame's header whose class and score are
the ones the same decoder, preprocessing and variant give offline (so a wrong byte order or
colour conversion fails). A garbage, truncated or bomb compressed frame is counted in
frames_rejected, its reason on /diagnostics, and the node keeps classifying.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_harness import NodeProcess, PerceptionEnds, spin_for

from adaspring_ros import msg_convert
from adaspring_ros.core import paths
from adaspring_ros.core.data import datasets as data
from adaspring_ros.core.serving.replay import fit_frame

pytestmark = pytest.mark.ros

PERCEPTION = "adaspring_ros.nodes.perception_node"
TOPIC = "/test_cameras/image"
PARAMS = {"backbone_path": "", "engine": "onnxruntime", "profile_table": "",
          "initial_config": "full", "num_threads": 1, "max_cached_variants": 2,
          "device_power_profile": "cloud_x86_vcpu", "timing_log": "", "max_rate_hz": 0.0,
          "debug_image_rate_hz": 2.0, "stamp_tolerance_s": 10.0}


def _node(log_dir, transport: str) -> NodeProcess:
    return NodeProcess.module(PERCEPTION, log_dir, f"{transport}_perception", ros_args=[
        "--params-file", str(paths.config_dir() / "adaspring.yaml"),
        "-r", f"__node:={transport}_perception",
        "-r", f"/adaspring/result:=/test_cameras/{transport}/result",
        "-r", f"/adaspring/metrics:=/test_cameras/{transport}/metrics",
        "-r", f"/adaspring/perception/reconfigure:=/test_cameras/{transport}/reconfigure",
        "-r", f"/diagnostics:=/test_cameras/{transport}/diagnostics",
        "-p", f"image_topic:={TOPIC}", "-p", f"transport:={transport}",
        "-p", "metrics_period_s:=0.25"])


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    if not paths.default_backbone().is_file():
        pytest.skip("no shipped backbone in this checkout")
    log_dir = tmp_path_factory.mktemp("cameras")
    started = {transport: _node(log_dir, transport) for transport in ("raw", "compressed")}
    yield started
    for proc in started.values():
        assert proc.stop() == 0, proc.output()[-3000:]


@pytest.fixture(scope="module")
def offline():
    """The node's computation in this process (core only): decode with the model's channels,
    preprocess, the full variant in ONNX Runtime."""
    from adaspring_ros.core.serving.perception import Perception

    served = Perception(PARAMS)
    yield served
    served.close()


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A 640x480 colour camera frame: a Fashion-MNIST test image, letterboxed and tinted."""
    grey = fit_frame(data.load_fashion_mnist("test").images[0], 640, 480, "nearest")
    return (grey[:, :, None] * np.array([1.0, 0.8, 0.6])).astype(np.uint8)


class Ends(PerceptionEnds):
    def __init__(self, node, transport: str, proc: NodeProcess) -> None:
        super().__init__(node, f"/test_cameras/{transport}",
                         f"/test_cameras/{transport}/reconfigure")
        self.proc = proc

    def watched(self) -> list[NodeProcess]:
        return [self.proc]

    def send_until(self, publisher, msg, done, what: str, timeout: float = 45.0) -> None:
        """Publish ``msg`` (best effort, keep last 1: one may be lost) until ``done()``."""
        self.wait(lambda: publisher.get_subscription_count() > 0, "the node's subscription")
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"{what}\n{self.proc.output()[-3000:]}"
            publisher.publish(msg)
            spin_for(self.node, 0.2)

    def classify(self, publisher, msg, tag: str):
        """The result for ``msg``, sent with frame_id ``tag`` and the current time as stamp."""
        msg.header.frame_id = tag
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.send_until(publisher, msg, lambda: self.result_for(tag),
                        f"no result for the {tag} frame")
        return self.result_for(tag)

    def result_for(self, tag: str):
        return next((r for r in self.results if r.header.frame_id == tag), None)


def _check(result, msg, expected, source) -> None:
    """``result`` answers ``msg``, as ``expected`` (the node's computation offline) says, and
    agrees with ``source`` (the RGB frame before encoding, classified offline) up to what the
    encoding loses."""
    assert (result.header.stamp.sec, result.header.stamp.nanosec) == (
        msg.header.stamp.sec, msg.header.stamp.nanosec)
    assert (result.class_id, result.label) == (expected.class_id, expected.label)
    assert result.score == pytest.approx(expected.score, abs=1e-4)
    assert result.config_id == expected.config.id
    assert result.class_id == source.class_id
    assert result.score == pytest.approx(source.score, abs=0.02)


def _classified(perception, decode):
    return perception.classify(perception.receive(None), decode)


@pytest.mark.parametrize("encoding", ["bgr8", "yuv422_yuy2"])
def test_raw_camera_encodings_are_classified(rclpy_node, nodes, offline, frame, encoding):
    from sensor_msgs.msg import Image

    from adaspring_ros.nodes.qos import SENSOR_QOS

    ends = Ends(rclpy_node, "raw", nodes["raw"])
    publisher = rclpy_node.create_publisher(Image, TOPIC, SENSOR_QOS)
    msg = msg_convert.numpy_to_image(frame, encoding, Image)
    result = ends.classify(publisher, msg, f"camera/{encoding}")
    _check(result, msg, _classified(offline, lambda c: msg_convert.image_to_numpy(msg, c)),
           _classified(offline, lambda c: frame))


def test_a_compressed_jpeg_frame_is_classified(rclpy_node, nodes, offline, frame):
    from sensor_msgs.msg import CompressedImage

    from adaspring_ros.nodes.qos import SENSOR_QOS

    ends = Ends(rclpy_node, "compressed", nodes["compressed"])
    publisher = rclpy_node.create_publisher(CompressedImage, f"{TOPIC}/compressed", SENSOR_QOS)
    msg = msg_convert.numpy_to_compressed(frame, "bgr8; jpeg compressed bgr8", CompressedImage,
                                          quality=90)
    result = ends.classify(publisher, msg, "camera/jpeg")
    _check(result, msg, _classified(offline, lambda c: msg_convert.compressed_to_numpy(msg, c)),
           _classified(offline, lambda c: frame))


def _bad_compressed(kind: str, frame: np.ndarray):
    from sensor_msgs.msg import CompressedImage

    good = msg_convert.numpy_to_compressed(frame, "jpeg", CompressedImage)
    if kind == "garbage":
        return CompressedImage(format="jpeg", data=bytes(range(256)) * 64), "not a jpeg file"
    if kind == "truncated":
        return CompressedImage(format="jpeg", data=bytes(good.data[:len(good.data) // 2])), \
            "truncated jpeg"
    at = bytes(good.data).index(b"\xff\xc0")  # the frame header claims 60000 x 60000 pixels
    bomb = bytes(good.data[:at + 5]) + (60000).to_bytes(2, "big") * 2 + bytes(good.data[at + 9:])
    return CompressedImage(format="jpeg", data=bomb), "pixel limit"


@pytest.mark.parametrize("kind", ["garbage", "truncated", "bomb"])
def test_bad_compressed_frames_are_rejected_and_the_node_keeps_serving(
        rclpy_node, nodes, frame, kind):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage

    from adaspring_ros.nodes.qos import SENSOR_QOS

    ends = Ends(rclpy_node, "compressed", nodes["compressed"])
    arrays = []
    rclpy_node.create_subscription(DiagnosticArray, "/test_cameras/compressed/diagnostics",
                                   arrays.append, 10)
    publisher = rclpy_node.create_publisher(CompressedImage, f"{TOPIC}/compressed", SENSOR_QOS)
    before = ends.fresh_metrics()
    bad, reason = _bad_compressed(kind, frame)
    ends.send_until(publisher, bad,
                    lambda: ends.metrics[-1].frames_rejected > before.frames_rejected,
                    f"the {kind} frame was never counted as rejected")

    def rejection() -> str:
        values = [{kv.key: kv.value for kv in s.values} for a in arrays for s in a.status
                  if s.name == "adaspring: perception_node"]
        return values[-1].get("last_rejection", "") if values else ""

    ends.wait(lambda: reason in rejection(), f"'{reason}' on /diagnostics")
    good = msg_convert.numpy_to_compressed(frame, "jpeg", CompressedImage)
    assert ends.classify(publisher, good, f"after/{kind}").class_id >= 0  # still serving
    assert nodes["compressed"].alive()
    assert "Traceback" not in nodes["compressed"].output()
