"""What a robot integrator expects of the perception node, with real processes over real DDS: its
managed lifecycle driven through the real lifecycle services, the frame-rate cap, the latched
ModelInfo and the debug view.

One replay camera (30 Hz, 640x480 rgb8) and one perception node started with ``managed:=true``
serve the whole module; the tests run in file order, and the lifecycle test leaves the node
active for the others. Run-time parameters switch the rate cap and the debug view on and off.
"""

from __future__ import annotations

import time

import pytest
from ros_harness import (
    NodeProcess,
    PerceptionEnds,
    call_service,
    set_parameters,
    spin_for,
    spin_until,
)

from adaspring_ros import msg_convert
from adaspring_ros.core import paths
from adaspring_ros.core.data import datasets as data
from adaspring_ros.core.model.checkpoint import sha256_of
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.serving.replay import parse_labelled_frame_id

pytestmark = pytest.mark.ros

CAMERA = "adaspring_ros.nodes.camera_replay_node"
PERCEPTION = "adaspring_ros.nodes.perception_node"
NODE = "perception_node"
SMALLEST = CompressionConfig.smallest()


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("integration")
    params = ["--params-file", str(paths.config_dir() / "adaspring.yaml")]
    camera = NodeProcess.module(CAMERA, log_dir, ros_args=params + [
        "-p", "rate_hz:=30.0", "-p", "limit:=100"])
    perception = NodeProcess.module(PERCEPTION, log_dir, ros_args=params + [
        "-p", "managed:=true", "-p", "metrics_period_s:=0.5"])
    # Managed too, on a checkpoint that does not exist: configure must fail and leave it as is.
    broken = NodeProcess.module(PERCEPTION, log_dir, "broken_perception", ros_args=params + [
        "-r", "__node:=broken_perception", "-p", "managed:=true",
        "-p", f"backbone_path:={log_dir / 'missing.pt'}"])
    yield camera, perception, broken
    broken.stop()
    camera.stop()
    assert perception.stop() == 0, perception.output()[-3000:]


class Lifecycle:
    """The test process's client of a node's lifecycle services."""

    def __init__(self, node, name: str, procs: list[NodeProcess]) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self.node, self.procs = node, procs
        self.change = node.create_client(ChangeState, f"/{name}/change_state")
        self.get = node.create_client(GetState, f"/{name}/get_state")

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return call_service(self.node, self.get, GetState.Request(), "get_state",
                            self.procs).current_state.label

    def transition(self, label: str) -> bool:
        """Request the transition named ``label``; whether it succeeded. Sent once: a repeated
        transition request is not idempotent."""
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.label = label
        return call_service(self.node, self.change, request, f"change_state {label}",
                            self.procs, attempts=1, timeout=90.0).success


class Results(PerceptionEnds):
    """Results and metrics of the perception node, as received here."""

    wait_timeout = 60.0

    def __init__(self, node, procs: list[NodeProcess]) -> None:
        super().__init__(node)
        self.procs = procs

    def watched(self) -> list[NodeProcess]:
        return self.procs

    def quiet_for(self, seconds: float) -> int:
        """Results that arrive in ``seconds`` after those in flight have drained."""
        spin_for(self.node, 1.0)
        start = len(self.results)
        spin_for(self.node, seconds)
        return len(self.results) - start


def test_lifecycle_transitions_through_the_real_services(rclpy_node, graph):
    from adaspring_ros.msg import CompressionConfig as ConfigMsg

    camera, perception, broken = graph
    life = Lifecycle(rclpy_node, NODE, [camera, perception])
    out = Results(rclpy_node, [camera, perception])
    assert life.state() == "unconfigured"
    # A transition the state machine has no edge for: refused, state unchanged.
    assert not life.transition("activate")
    assert life.state() == "unconfigured"
    assert life.transition("configure")
    assert life.state() == "inactive"
    assert out.quiet_for(1.5) == 0, "inactive, yet frames were classified"
    assert life.transition("activate") and life.state() == "active"
    assert {r.config_id for r in out.results_after(5)} == {CompressionConfig.full().id}
    reply = out.reconfigure(msg_convert.config_to_msg(SMALLEST, ConfigMsg))
    assert reply.success, reply.message
    assert not life.transition("cleanup")  # only from inactive
    assert life.state() == "active"
    processed = out.fresh_metrics().frames_processed

    assert life.transition("deactivate") and life.state() == "inactive"
    assert out.quiet_for(1.5) == 0, "deactivated, yet frames were classified"
    spin_until(rclpy_node, lambda: not out.client.service_is_ready(), 30,
               "the Reconfigure service to go with deactivate", [perception])
    # Activate again: the variant and the counters were kept.
    assert life.transition("activate") and life.state() == "active"
    assert {r.config_id for r in out.results_after(5)} == {SMALLEST.id}
    assert out.fresh_metrics().frames_processed >= processed + 5

    # Cleanup releases everything; configure loads afresh (the initial variant again).
    assert life.transition("deactivate") and life.transition("cleanup")
    assert life.state() == "unconfigured"
    assert life.transition("configure") and life.transition("activate")
    assert {r.config_id for r in out.results_after(5)} == {CompressionConfig.full().id}

    # The node whose checkpoint is missing: configure fails, it stays unconfigured, answers.
    other = Lifecycle(rclpy_node, "broken_perception", [broken])
    assert other.state() == "unconfigured"
    assert not other.transition("configure")
    assert other.state() == "unconfigured"
    assert "configure failed, still unconfigured" in broken.output()
    assert "missing.pt" in broken.output() and "Traceback" not in broken.output()


def test_plain_mode_is_the_default_and_refuses_to_start_without_a_model(tmp_path):
    proc = NodeProcess.module(PERCEPTION, tmp_path, ros_args=[
        "-p", f"backbone_path:={tmp_path / 'missing.pt'}"])
    try:
        code = proc.proc.wait(60)
    finally:
        proc.kill()
    assert code == 2, proc.output()[-2000:]
    assert "cannot start" in proc.output() and "Traceback" not in proc.output()


def test_model_info_reaches_a_subscriber_that_joins_late(rclpy_node, graph):
    from adaspring_ros.msg import ModelInfo

    from adaspring_ros.nodes.qos import MODEL_INFO_QOS

    out = Results(rclpy_node, list(graph[:2]))
    out.results_after(1)  # the node is active and has published ModelInfo long ago
    infos: list = []
    rclpy_node.create_subscription(ModelInfo, "/adaspring/model_info", infos.append,
                                   MODEL_INFO_QOS)
    out.wait(lambda: infos, "the latched ModelInfo", timeout=30.0)
    spin_for(rclpy_node, 0.5)
    assert len(infos) == 1, "published once per configuration, kept for late subscribers"
    info = infos[0]
    assert list(info.class_names) == list(data.FASHION_MNIST_CLASSES)
    assert info.backbone_path == str(paths.default_backbone())
    assert info.backbone_sha256 == sha256_of(paths.default_backbone())
    assert info.profile_table_path == str(paths.default_profile_table())
    assert info.profile_table_sha256 == sha256_of(paths.default_profile_table())
    assert info.engine == "onnxruntime" and info.engine_version
    result = out.results_after(1)[0]
    assert info.class_names[result.class_id] == result.label


def test_rate_cap_holds_perception_below_the_camera_rate(rclpy_node, graph):
    procs = list(graph[:2])
    out = Results(rclpy_node, procs)
    before = out.fresh_metrics()
    for bad in (-1.0, 1000.5):
        assert not set_parameters(rclpy_node, NODE, {"max_rate_hz": bad}, procs)[0].successful
    assert set_parameters(rclpy_node, NODE, {"max_rate_hz": 5.0}, procs)[0].successful
    try:
        out.wait(lambda: out.metrics[-1].max_rate_hz == 5.0, "metrics carrying the cap")
        spin_for(rclpy_node, 1.0)
        first, start = len(out.results), time.monotonic()
        spin_for(rclpy_node, 6.0)
        rate = (len(out.results) - first) / (time.monotonic() - start)
        m = out.fresh_metrics()
    finally:
        assert set_parameters(rclpy_node, NODE, {"max_rate_hz": 0.0}, procs)[0].successful
    print(f"\ncamera 30 Hz, max_rate_hz 5: {rate:.2f} results/s; metrics fps {m.fps:.2f}")
    assert 2.0 < rate < 8.0
    assert m.frames_skipped > before.frames_skipped
    assert m.frames_received == m.frames_processed + m.frames_rejected + m.frames_skipped
    out.wait(lambda: out.metrics[-1].max_rate_hz == 0.0 and out.metrics[-1].fps > 8.0,
             "the full camera rate back without the cap")


def test_debug_view_is_off_by_default_and_annotates_frames_at_its_rate(rclpy_node, graph):
    from sensor_msgs.msg import Image

    from adaspring_ros.nodes.qos import SENSOR_QOS

    procs = list(graph[:2])
    topic = "/adaspring/debug_image"
    assert rclpy_node.count_publishers(topic) == 0  # off: not even a publisher
    views: list = []
    rclpy_node.create_subscription(Image, topic, views.append, SENSOR_QOS)
    for bad in (0.0, 31.0):
        reply = set_parameters(rclpy_node, NODE, {"debug_image_rate_hz": bad}, procs)[0]
        assert not reply.successful
    assert set_parameters(rclpy_node, NODE, {"debug_image_rate_hz": 4.0, "debug_image": True},
                          procs)[0].successful
    spin_until(rclpy_node, lambda: len(views) >= 2, 30, "annotated frames", procs)
    first, start = len(views), time.monotonic()
    spin_for(rclpy_node, 4.0)
    rate = (len(views) - first) / (time.monotonic() - start)
    assert set_parameters(rclpy_node, NODE, {"debug_image": False}, procs)[0].successful
    print(f"\ndebug_image_rate_hz 4: {rate:.2f} annotated frames/s")
    assert 1.5 < rate < 6.0
    view = views[-1]
    assert (view.width, view.height, view.encoding) == (640, 480, "rgb8")
    label, seq = parse_labelled_frame_id(view.header.frame_id)
    assert label is not None and seq is not None  # the camera frame's header, copied
    pixels = msg_convert.image_to_numpy(view).astype(int)
    # The replayed Fashion-MNIST frames are grey (R = G = B everywhere): coloured pixels are
    # the text drawn on the band at the top, and the frame below the band is left as it was.
    coloured = pixels[..., 0] != pixels[..., 2]
    assert coloured[:120].sum() > 200 and not coloured[200:].any()
    spin_until(rclpy_node, lambda: rclpy_node.count_publishers(topic) == 0, 30,
               "the debug publisher to go when switched off", procs)
