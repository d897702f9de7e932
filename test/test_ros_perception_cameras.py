"""Camera encodings and the compressed transport through real perception node processes.

Three nodes run on the shipped models: the grey Fashion-MNIST one and the colour one
(models/colour) on the raw transport, and the colour one with ``transport: compressed``
(subscribing ``<image_topic>/compressed``). This process publishes 640x480 frames as a colour
camera would (bgr8, yuv422_yuy2, a jpeg at quality 90) — for the grey model a Fashion-MNIST test
image, tinted; for the colour one an image of its test split (test/data/colour/, from
openclipart-png) — and requires, for each, a result stamped with that frame's header whose
class and score are the ones the same decoder, preprocessing and variant give offline (so a
wrong byte order or colour conversion fails), and for the colour model the class its card names
and the image's folder says. A garbage, truncated or bomb compressed frame is counted in
frames_rejected, its reason on /diagnostics, and the node keeps classifying.
"""

from __future__ import annotations

import time
from pathlib import Path

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
COLOUR = paths.models_dir() / "colour"
COLOUR_IMAGE = Path(__file__).parent / "data" / "colour" / "fruit_orange.png"
# node name -> (model, transport)
NODES = {"raw": ("grey", "raw"), "colour": ("colour", "raw"),
         "compressed": ("colour", "compressed")}
PARAMS = {"backbone_path": "", "engine": "onnxruntime", "profile_table": "",
          "initial_config": "full", "num_threads": 1, "max_cached_variants": 2,
          "device_power_profile": "cloud_x86_vcpu", "timing_log": "", "max_rate_hz": 0.0,
          "debug_image_rate_hz": 2.0, "stamp_tolerance_s": 10.0}


def _model_params(model: str) -> dict[str, str]:
    if model == "grey":
        return {}
    return {"backbone_path": str(COLOUR / "backbone.pt"),
            "profile_table": str(COLOUR / "profile_table.json")}


def _node(log_dir, name: str) -> NodeProcess:
    model, transport = NODES[name]
    return NodeProcess.module(PERCEPTION, log_dir, f"{name}_perception", ros_args=[
        "--params-file", str(paths.config_dir() / "adaspring.yaml"),
        "-r", f"__node:={name}_perception",
        "-r", f"/adaspring/result:=/test_cameras/{name}/result",
        "-r", f"/adaspring/metrics:=/test_cameras/{name}/metrics",
        "-r", f"/adaspring/perception/reconfigure:=/test_cameras/{name}/reconfigure",
        "-r", f"/adaspring/model_info:=/test_cameras/{name}/model_info",
        "-r", f"/diagnostics:=/test_cameras/{name}/diagnostics",
        "-p", f"image_topic:={TOPIC}", "-p", f"transport:={transport}",
        "-p", "metrics_period_s:=0.25",
        *[arg for k, v in _model_params(model).items() for arg in ("-p", f"{k}:={v}")]])


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    for backbone in (paths.default_backbone(), COLOUR / "backbone.pt"):
        if not backbone.is_file():
            pytest.skip(f"no {backbone} in this checkout")
    log_dir = tmp_path_factory.mktemp("cameras")
    started = {name: _node(log_dir, name) for name in NODES}
    yield started
    for proc in started.values():
        assert proc.stop() == 0, proc.output()[-3000:]


@pytest.fixture(scope="module")
def offline():
    """The nodes' computation in this process (core only), per model: decode with the model's
    channels, preprocess, the full variant in ONNX Runtime."""
    from adaspring_ros.core.serving.perception import Perception

    served = {model: Perception({**PARAMS, **_model_params(model)})
              for model in ("grey", "colour")}
    yield served
    for perception in served.values():
        perception.close()


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    """640x480 colour camera frames per model: a Fashion-MNIST test image, letterboxed and
    tinted; an image of the colour model's test split, letterboxed."""
    from PIL import Image

    grey = fit_frame(data.load_fashion_mnist("test").images[0], 640, 480, "nearest")
    with Image.open(COLOUR_IMAGE) as image:
        colour = fit_frame(np.asarray(image.convert("RGB")), 640, 480, "bilinear")
    return {"grey": (grey[:, :, None] * np.array([1.0, 0.8, 0.6])).astype(np.uint8),
            "colour": colour}


class Ends(PerceptionEnds):
    def __init__(self, node, name: str, proc: NodeProcess) -> None:
        super().__init__(node, f"/test_cameras/{name}", f"/test_cameras/{name}/reconfigure")
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


def _expect_the_image_class(result, model: str) -> None:
    if model == "colour":  # the test image is a fruit the colour model knows
        assert result.label == COLOUR_IMAGE.stem.split("_")[0]


@pytest.mark.parametrize("name, encoding", [("raw", "bgr8"), ("raw", "yuv422_yuy2"),
                                            ("colour", "bgr8"), ("colour", "yuv422_yuy2")])
def test_raw_camera_encodings_are_classified(rclpy_node, nodes, offline, frames, name,
                                             encoding):
    from sensor_msgs.msg import Image

    from adaspring_ros.nodes.qos import SENSOR_QOS

    model = NODES[name][0]
    ends = Ends(rclpy_node, name, nodes[name])
    publisher = rclpy_node.create_publisher(Image, TOPIC, SENSOR_QOS)
    msg = msg_convert.numpy_to_image(frames[model], encoding, Image)
    result = ends.classify(publisher, msg, f"camera/{model}/{encoding}")
    _check(result, msg, _classified(offline[model],
                                    lambda c: msg_convert.image_to_numpy(msg, c)),
           _classified(offline[model], lambda c: frames[model]))
    _expect_the_image_class(result, model)


def test_a_compressed_jpeg_frame_is_classified(rclpy_node, nodes, offline, frames):
    from sensor_msgs.msg import CompressedImage

    from adaspring_ros.nodes.qos import SENSOR_QOS

    ends = Ends(rclpy_node, "compressed", nodes["compressed"])
    publisher = rclpy_node.create_publisher(CompressedImage, f"{TOPIC}/compressed", SENSOR_QOS)
    msg = msg_convert.numpy_to_compressed(frames["colour"], "bgr8; jpeg compressed bgr8",
                                          CompressedImage, quality=90)
    result = ends.classify(publisher, msg, "camera/jpeg")
    _check(result, msg, _classified(offline["colour"],
                                    lambda c: msg_convert.compressed_to_numpy(msg, c)),
           _classified(offline["colour"], lambda c: frames["colour"]))
    _expect_the_image_class(result, "colour")


def test_the_colour_models_card_names_its_classes_in_model_info(rclpy_node, nodes):
    from adaspring_ros.msg import ModelInfo

    from adaspring_ros.core.model.checkpoint_reader import load_weight_bank
    from adaspring_ros.nodes.qos import MODEL_INFO_QOS

    ends = Ends(rclpy_node, "colour", nodes["colour"])
    infos: list = []
    rclpy_node.create_subscription(ModelInfo, "/test_cameras/colour/model_info", infos.append,
                                   MODEL_INFO_QOS)
    ends.wait(lambda: infos, "the colour node's latched ModelInfo", timeout=30.0)
    card = load_weight_bank(COLOUR / "backbone.pt").card
    assert tuple(infos[-1].class_names) == card.classes
    assert card.channels == 3 and "fruit" in card.classes
    assert infos[-1].backbone_path == str(COLOUR / "backbone.pt")


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
        rclpy_node, nodes, frames, kind):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage

    from adaspring_ros.nodes.qos import SENSOR_QOS

    ends = Ends(rclpy_node, "compressed", nodes["compressed"])
    arrays = []
    rclpy_node.create_subscription(DiagnosticArray, "/test_cameras/compressed/diagnostics",
                                   arrays.append, 10)
    publisher = rclpy_node.create_publisher(CompressedImage, f"{TOPIC}/compressed", SENSOR_QOS)
    before = ends.fresh_metrics()
    frame = frames["colour"]
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
