"""camera_replay_node: the embedded default camera, replaying labelled images as sensor_msgs/Image.

Sources: the Fashion-MNIST test split (core/data.py's loader), an ImageFolder, or the
sensor_msgs/Image messages of a ROS 2 bag (read with ``rosbags``). Each frame is letterboxed to
``width`` x ``height`` (aspect kept, black bars, so the perception node's centre crop sees exactly
the source image), encoded as ``encoding`` and published with SENSOR_QOS at ``rate_hz``.

Label convention: the true class travels in ``header.frame_id`` as
``<frame_id>/label=<id>/seq=<n>`` (``<frame_id>/seq=<n>`` when the source has no label). The
perception node copies the header into its InferenceResult, so a consumer parses
``result.header.frame_id`` with ``msg_convert.parse_labelled_frame_id``: no stamp matching.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image

from adaspring_ros import msg_convert
from adaspring_ros.core import data
from adaspring_ros.nodes.guard import CallbackGuard
from adaspring_ros.nodes.params import describe
from adaspring_ros.nodes.qos import (
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    IMAGE_TOPIC,
    SENSOR_QOS,
)

SOURCES = ("fashion_mnist", "image_folder", "bag")
INTERPOLATIONS = ("nearest", "bilinear")
MAX_SIDE = 8192

Frame = tuple[np.ndarray, "int | None"]


def fit_frame(pixels: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    """Scale uint8 (H, W[, 3]) pixels to fit ``width`` x ``height``, aspect kept, black bars.

    0 for both sides keeps the source size; 0 for one side derives it from the aspect ratio.
    """
    h, w = pixels.shape[:2]
    if width <= 0 and height <= 0:
        return pixels
    scale = min(width / w if width > 0 else np.inf, height / h if height > 0 else np.inf)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    width, height = width or new_w, height or new_h
    if interpolation == "nearest":
        rows = np.minimum((np.arange(new_h) + 0.5) * h / new_h, h - 1).astype(np.intp)
        cols = np.minimum((np.arange(new_w) + 0.5) * w / new_w, w - 1).astype(np.intp)
        scaled = pixels[rows[:, None], cols[None, :]]
    else:  # bilinear, pixel centres aligned (like align_corners=False)
        y = np.clip((np.arange(new_h) + 0.5) * h / new_h - 0.5, 0, h - 1)
        x = np.clip((np.arange(new_w) + 0.5) * w / new_w - 0.5, 0, w - 1)
        y0, x0 = np.floor(y).astype(np.intp), np.floor(x).astype(np.intp)
        y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
        fy, fx = (y - y0)[:, None], (x - x0)[None, :]
        if pixels.ndim == 3:
            fy, fx = fy[..., None], fx[..., None]
        src = pixels.astype(np.float32)
        top = src[y0][:, x0] * (1 - fx) + src[y0][:, x1] * fx
        bottom = src[y1][:, x0] * (1 - fx) + src[y1][:, x1] * fx
        scaled = (top * (1 - fy) + bottom * fy).round().clip(0, 255).astype(np.uint8)
    out = np.zeros((height, width) + pixels.shape[2:], np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top:top + new_h, left:left + new_w] = scaled
    return out


def dataset_frames(dataset: data.Dataset, loop: bool, seed: int, limit: int) -> Iterator[Frame]:
    """Frames of an in-memory dataset, optionally shuffled (seeded) and limited, looping."""
    order = np.arange(len(dataset))
    if seed >= 0:
        order = np.random.default_rng(seed).permutation(len(dataset))
    if limit > 0:
        order = order[:limit]
    while True:
        for i in order:
            yield dataset.images[i], int(dataset.labels[i])
        if not loop:
            return


def bag_frames(path: Path, topic: str, loop: bool, limit: int) -> Iterator[Frame]:
    """sensor_msgs/Image frames of a ROS 2 bag, read lazily; a label in frame_id is kept.

    A frame that cannot be decoded comes out as (None, reason) so the caller can skip it.
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    while True:
        count = 0
        with AnyReader([path], default_typestore=typestore) as reader:
            connections = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/Image"
                           and (not topic or c.topic == topic)]
            if not connections:
                raise data.DataError(
                    f"bag {path} has no sensor_msgs/Image on {topic or 'any topic'}")
            for connection, _stamp, raw in reader.messages(connections=connections[:1]):
                msg = reader.deserialize(raw, connection.msgtype)
                label, _seq = msg_convert.parse_labelled_frame_id(msg.header.frame_id)
                count += 1
                try:
                    frame = np.array(msg_convert.image_to_numpy(msg)), label
                except msg_convert.ImageError as exc:  # one bad frame: skip it, keep replaying
                    frame = None, f"bag frame {count}: {exc}"
                yield frame
                if 0 < limit <= count:
                    break
        if not loop or count == 0:
            return


RO = {"read_only": True}
# name, default, descriptor: read-only ones pick the source, the rest may change at run time.
PARAMETERS = (
    ("source", "fashion_mnist", describe(f"one of {SOURCES}", **RO)),
    ("path", "", describe("dataset dir (default: Fashion-MNIST's), image folder or bag", **RO)),
    ("split", "test", describe("Fashion-MNIST split: test or train", **RO)),
    ("bag_topic", "", describe("Image topic inside the bag ('' = the first one)", **RO)),
    ("image_topic", IMAGE_TOPIC, describe("topic the frames are published on", **RO)),
    ("loop", True, describe("start again after the last frame", **RO)),
    ("wait_for_subscriber", True, describe("pause while nobody subscribes, so no replayed "
                                           "frame is lost to discovery")),
    ("shuffle_seed", -1, describe("seed of a shuffled order, -1 = source order (not for bags)",
                                  integer=(-1, 2**31 - 1), **RO)),
    ("limit", 0, describe("publish only the first N frames (0 = all)", integer=(0, 2**31 - 1),
                          **RO)),
    ("frame_id", "camera", describe("header.frame_id prefix (label and seq follow)")),
    ("rate_hz", 30.0, describe("frames per second", floating=(0.1, 1000.0))),
    ("width", 640, describe("output width, px (0 = from the aspect ratio / source)",
                            integer=(0, MAX_SIDE))),
    ("height", 480, describe("output height, px (0 = from the aspect ratio / source)",
                             integer=(0, MAX_SIDE))),
    ("encoding", "rgb8", describe(f"one of {tuple(msg_convert.ENCODINGS)}")),
    ("interpolation", "nearest", describe(f"upscaling: one of {INTERPOLATIONS}")),
)


class CameraReplayNode(Node):
    """Publishes a labelled image source as sensor_msgs/Image at a fixed rate."""

    def __init__(self) -> None:
        super().__init__("camera_replay_node")
        self.guard = CallbackGuard(self)
        for name, default, descriptor in PARAMETERS:
            self.declare_parameter(name, default, descriptor)
        names = ("source", "path", "encoding", "interpolation", "split")
        problem = self._invalid({name: self.get_parameter(name).value for name in names})
        if problem:
            raise ValueError(f"invalid parameter: {problem}")
        self.add_on_set_parameters_callback(
            self.guard.parameters(self.validate_parameters_callback))
        self.add_post_set_parameters_callback(self.guard(self.apply_parameters_callback))

        self.frames = self._open_source()
        self.seq = 0
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
        checks = {
            "source": SOURCES, "encoding": tuple(msg_convert.ENCODINGS),
            "interpolation": INTERPOLATIONS, "split": ("test", "train"),
        }
        for name, allowed in checks.items():
            if name in values and values[name] not in allowed:
                return f"{name}={values[name]!r} is not one of {allowed}"
        if values.get("source") in ("image_folder", "bag") and not values.get("path", "x"):
            return f"source {values['source']} needs a path"
        return ""

    def _open_source(self) -> Iterator[Frame]:
        p = {name: self.get_parameter(name).value for name in
             ("source", "path", "split", "bag_topic", "loop", "shuffle_seed", "limit")}
        if p["source"] == "bag":
            frames = bag_frames(Path(p["path"]), p["bag_topic"], p["loop"], p["limit"])
            try:  # read the first frame now, so a bad bag fails at start-up, not mid-stream
                first = next(frames)
            except StopIteration:
                raise data.DataError(f"bag {p['path']} holds no images") from None
            except (data.DataError, msg_convert.ImageError):
                raise
            except Exception as exc:  # rosbags' own errors: missing file, bad metadata, ...
                raise data.DataError(f"cannot read bag {p['path']}: {exc}") from exc
            return itertools.chain([first], frames)
        if p["source"] == "image_folder":
            dataset = data.load_image_folder(p["path"])
        else:
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
        msg.header.frame_id = msg_convert.labelled_frame_id(
            self.get_parameter("frame_id").value, label, self.seq)
        self.publisher.publish(msg)
        self.seq += 1

    def diagnostics_callback(self) -> None:
        errors = self.guard.total
        status = DiagnosticStatus(name="adaspring: camera_replay_node", hardware_id="camera",
                                  level=DiagnosticStatus.WARN if errors else DiagnosticStatus.OK,
                                  message=f"{self.seq} frames published")
        status.values = [KeyValue(key="frames_published", value=str(self.seq)),
                         KeyValue(key="callback_errors", value=str(errors))]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(array)


def main(args: list[str] | None = None) -> None:
    try:
        with rclpy.init(args=args):
            try:
                node = CameraReplayNode()
            except (ValueError, OSError, ParameterException) as exc:  # bad parameters/source
                rclpy.logging.get_logger("camera_replay_node").fatal(str(exc))
                raise SystemExit(2) from None
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
