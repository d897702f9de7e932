"""camera_replay_node: the embedded default camera, replaying labelled images as sensor_msgs/Image.

Sources (core/serving/replay.py): the Fashion-MNIST test split (core/data/datasets.py's loader), a
user's image folder (its test split, each image at its own size and colours, labelled in the
order of the model card of ``backbone_path``), or the sensor_msgs/Image messages of a ROS 2 bag
(read with ``rosbags``). Each frame is letterboxed to ``width`` x ``height`` (aspect kept, black
bars, so the perception node's centre crop sees exactly a square source image), encoded as
``encoding`` and published with SENSOR_QOS at ``rate_hz``.

Label convention: the true class travels in ``header.frame_id`` as
``<frame_id>/label=<id>/seq=<n>`` (``<frame_id>/seq=<n>`` when the source has no label). The
perception node copies the header into its InferenceResult, so a consumer parses
``result.header.frame_id`` with ``replay.parse_labelled_frame_id``: no stamp matching.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import Image

from adaspring_ros import msg_convert
from adaspring_ros.core.data import datasets as data
from adaspring_ros.core.model.checkpoint_reader import load_weight_bank
from adaspring_ros.core.serving.replay import (
    Frame,
    dataset_frames,
    fit_frame,
    folder_frames,
    index_image_files,
    labelled_frame_id,
    open_bag,
)
from adaspring_ros.core.serving.server import reuse_frame_memory
from adaspring_ros.nodes.common import diagnostic_array, diagnostic_status, run
from adaspring_ros.nodes.guard import CallbackGuard
from adaspring_ros.nodes.params import declare, invalid_choice, parameter_table
from adaspring_ros.nodes.qos import (
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    SENSOR_QOS,
)
from adaspring_ros.nodes.settings import NODE_SETTINGS

PARAMETERS = parameter_table(*NODE_SETTINGS["camera_replay_node"])


class CameraReplayNode(Node):
    """Publishes a labelled image source as sensor_msgs/Image at a fixed rate."""

    def __init__(self) -> None:
        super().__init__("camera_replay_node")
        self.guard = CallbackGuard(self)
        declare(self, NODE_SETTINGS["camera_replay_node"])
        names = ("source", "path", "encoding", "interpolation", "split")
        problem = self._invalid({name: self.get_parameter(name).value for name in names})
        if problem:
            raise ValueError(f"invalid parameter: {problem}")
        self.add_on_set_parameters_callback(
            self.guard.parameters(self.validate_parameters_callback))
        self.add_post_set_parameters_callback(self.guard(self.apply_parameters_callback))

        self.frames = self._open_source()
        self.seq = 0
        reuse_frame_memory()  # every frame it publishes is a few MB of fresh buffers otherwise
        self.publisher = self.create_publisher(Image, self.get_parameter("image_topic").value,
                                               SENSOR_QOS)
        self.timer = self.create_timer(1.0 / self.get_parameter("rate_hz").value,
                                       self.guard(self.timer_callback))
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                           DIAGNOSTICS_QOS)
        self.diagnostics_timer = self.create_timer(1.0, self.guard(self.diagnostics_callback))
        self.get_logger().info(
            f"replaying {self.get_parameter('source').value} at "
            f"{self.get_parameter('rate_hz').value} Hz on {self.publisher.topic_name}")

    @staticmethod
    def _invalid(values: dict) -> str:
        """Why a set of parameter values is unusable, or '' (ranges are checked by rclpy)."""
        problem = invalid_choice(NODE_SETTINGS["camera_replay_node"], values)
        if problem:
            return problem
        if values.get("source") in ("image_folder", "bag") and not values.get("path", "x"):
            return f"source {values['source']} needs a path"
        return ""

    def _open_source(self) -> Iterator[Frame]:
        p = {name: self.get_parameter(name).value for name in
             ("source", "path", "split", "bag_topic", "loop", "shuffle_seed", "limit",
              "backbone_path", "width", "height")}
        if p["source"] == "bag":
            return open_bag(Path(p["path"]), p["bag_topic"], p["loop"], p["limit"])
        if p["source"] == "image_folder":
            classes = (load_weight_bank(p["backbone_path"]).card.classes
                       if p["backbone_path"] else None)
            files = index_image_files(Path(p["path"]), classes)
            self.get_logger().info(
                f"{len(files)} images of {p['path']}, classes {list(files.classes)}"
                + (f"; skipped {files.skipped} files that are not images" if files.skipped
                   else ""))
            return folder_frames(files, p["loop"], p["shuffle_seed"], p["limit"],
                                 (p["width"], p["height"]))
        dataset = data.load_fashion_mnist(p["split"], p["path"] or data.FASHION_MNIST_DIR)
        self.get_logger().info(f"{len(dataset)} images, classes {list(dataset.classes)}")
        return dataset_frames(dataset, p["loop"], p["shuffle_seed"], p["limit"])

    def validate_parameters_callback(self, params) -> SetParametersResult:
        problem = self._invalid({p.name: p.value for p in params})
        return SetParametersResult(successful=not problem, reason=problem)

    def apply_parameters_callback(self, params) -> None:
        if any(p.name == "rate_hz" for p in params):
            self.timer.timer_period_ns = int(1e9 / self.get_parameter("rate_hz").value)
            self.timer.reset()

    def timer_callback(self) -> None:
        if (self.get_parameter("wait_for_subscriber").value
                and self.publisher.get_subscription_count() == 0):
            return
        try:
            pixels, label = next(self.frames)
        except StopIteration:
            self.get_logger().info(f"replay finished after {self.seq} frames")
            self.timer.cancel()
            return
        except Exception as exc:  # unreadable source (rosbags raises its own types)
            self.get_logger().error(f"cannot read the next frame, stopping the replay: {exc}")
            self.timer.cancel()
            return
        if pixels is None:
            self.get_logger().warning(f"skipped: {label}", throttle_duration_sec=5.0)
            return
        frame = fit_frame(pixels, self.get_parameter("width").value,
                          self.get_parameter("height").value,
                          self.get_parameter("interpolation").value)
        msg = msg_convert.numpy_to_image(frame, self.get_parameter("encoding").value, Image)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = labelled_frame_id(
            self.get_parameter("frame_id").value, label, self.seq)
        self.publisher.publish(msg)
        self.seq += 1

    def diagnostics_callback(self) -> None:
        errors = self.guard.total
        self.diagnostics_publisher.publish(diagnostic_array(self, diagnostic_status(
            "adaspring: camera_replay_node", DiagnosticStatus.WARN if errors else
            DiagnosticStatus.OK, f"{self.seq} frames published",
            {"frames_published": self.seq, "callback_errors": errors}, hardware_id="camera")))


def main(args: list[str] | None = None) -> None:
    run(CameraReplayNode, "camera_replay_node", args)  # bad parameters or source: exits 2

if __name__ == "__main__":
    main()
