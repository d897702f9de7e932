"""vision_msgs out of a real perception node (nodes/vision_out.py): every InferenceResult also as
a vision_msgs/Classification with the same header, class name and score; the class list as a
latched vision_msgs/LabelInfo that a subscriber joining late still gets; and, where vision_msgs
is not importable, one log line and the package's own messages only.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ros_harness import NodeProcess, spin_until

pytestmark = pytest.mark.ros

PERCEPTION = "adaspring_ros.nodes.perception_node"
CAMERA = "/test_vision/image"


class Frames:
    """The test's camera (64x48 rgb8 at 20 Hz) and its subscriptions to the perception node's
    InferenceResults and, when ``vision``, Classifications."""

    def __init__(self, node, vision: bool) -> None:
        from adaspring_ros.msg import InferenceResult
        from sensor_msgs.msg import Image

        from adaspring_ros.nodes.qos import CLASSIFICATION_QOS, RESULT_QOS, SENSOR_QOS

        self.node = node
        self.results: list = []
        self.classifications: list = []
        pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        self.image = Image(height=48, width=64, encoding="rgb8", step=64 * 3,
                           data=pixels.tobytes())
        self.image.header.frame_id = "test_vision"
        self.publisher = node.create_publisher(Image, CAMERA, SENSOR_QOS)
        node.create_subscription(InferenceResult, "/adaspring/result", self.results.append,
                                 RESULT_QOS)
        if vision:
            from vision_msgs.msg import Classification

            node.create_subscription(Classification, "/adaspring/classification",
                                     self.classifications.append, CLASSIFICATION_QOS)
        node.create_timer(0.05, self.publish)

    def publish(self) -> None:
        self.image.header.stamp = self.node.get_clock().now().to_msg()
        self.publisher.publish(self.image)


def start_perception(log_dir, env=None) -> NodeProcess:
    return NodeProcess.module(PERCEPTION, log_dir, ros_args=["-p", f"image_topic:={CAMERA}"],
                              env=env)


def test_results_are_also_classifications_and_label_info_is_latched(rclpy_node, tmp_path):
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not installed (make setup)")
    from adaspring_ros.msg import ModelInfo
    from vision_msgs.msg import LabelInfo

    from adaspring_ros.nodes.qos import LABEL_INFO_QOS, MODEL_INFO_QOS

    frames = Frames(rclpy_node, vision=True)
    perception = start_perception(tmp_path)
    try:
        spin_until(rclpy_node, lambda: len(frames.classifications) >= 5, 60,
                   "5 Classifications", [perception])
        by_stamp = {(r.header.stamp.sec, r.header.stamp.nanosec): r for r in frames.results}
        for classification in frames.classifications[:5]:
            stamp = classification.header.stamp
            result = by_stamp[(stamp.sec, stamp.nanosec)]  # the same frame, the same header
            assert classification.header.frame_id == "test_vision"
            [hypothesis] = classification.results
            assert hypothesis.class_id == result.label  # the class name, not the index
            assert hypothesis.score == pytest.approx(result.score, rel=1e-6)
            assert 0.0 < hypothesis.score <= 1.0

        # Subscribers that join after the node was configured still get LabelInfo (and
        # ModelInfo), published once: the class map is ModelInfo's class list, in order.
        label_infos, model_infos = [], []
        rclpy_node.create_subscription(LabelInfo, "/adaspring/label_info", label_infos.append,
                                       LABEL_INFO_QOS)
        rclpy_node.create_subscription(ModelInfo, "/adaspring/model_info", model_infos.append,
                                       MODEL_INFO_QOS)
        spin_until(rclpy_node, lambda: label_infos and model_infos, 15,
                   "the latched LabelInfo and ModelInfo", [perception])
        [label_info] = label_infos
        classes = list(model_infos[0].class_names)
        assert len(classes) >= 2
        assert [(c.class_id, c.class_name) for c in label_info.class_map] == list(
            enumerate(classes))
        assert label_info.threshold == 0.0
        assert {c.results[0].class_id for c in frames.classifications} <= set(classes)
    finally:
        perception.stop()


def test_without_vision_msgs_the_node_says_so_once_and_publishes_its_own(rclpy_node, tmp_path):
    from lifecycle_msgs.srv import ChangeState
    from ros_harness import REPO, call_service

    # A vision_msgs package first on the path that cannot be imported, as on a robot without it.
    shim = tmp_path / "shim" / "vision_msgs"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named vision_msgs')\n")
    frames = Frames(rclpy_node, vision=False)
    path = os.pathsep.join([str(shim.parent), str(REPO)])
    perception = start_perception(tmp_path, env={"PYTHONPATH": path})
    try:
        spin_until(rclpy_node, lambda: len(frames.results) >= 5, 60, "5 InferenceResults",
                   [perception])
        # A second configuration (cleanup, configure) says nothing more.
        change = rclpy_node.create_client(ChangeState, "/perception_node/change_state")
        for label in ("deactivate", "cleanup", "configure", "activate"):
            request = ChangeState.Request()
            request.transition.label = label
            assert call_service(rclpy_node, change, request, label, [perception],
                                attempts=1, timeout=60.0).success, label
        seen = len(frames.results)
        spin_until(rclpy_node, lambda: len(frames.results) >= seen + 5, 60,
                   "5 InferenceResults after a new configuration", [perception])
        assert rclpy_node.count_publishers("/adaspring/classification") == 0
        assert rclpy_node.count_publishers("/adaspring/label_info") == 0
        assert rclpy_node.count_publishers("/adaspring/model_info") == 1
    finally:
        perception.stop()
    log = perception.output()
    assert log.count("vision_msgs is not importable") == 1, log
    assert "/adaspring/classification" in log and "Traceback" not in log, log
