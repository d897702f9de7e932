"""perception_node: classifies camera frames with the active compact variant of the backbone.

Subscribes sensor_msgs/Image (taken serialized and read in place, ``msg_convert.image_from_cdr``),
or with ``transport: compressed`` sensor_msgs/CompressedImage on ``<image_topic>/compressed``
(IMAGE_QOS either way: best effort, keep last 1, so stale frames never queue; the codecs in
core/serving/ say which encodings and formats are read and how),
publishes an InferenceResult (and a vision_msgs Classification: vision_out.py) per frame and
PerformanceMetrics + /diagnostics every ``metrics_period_s``, and serves Reconfigure, which swaps
the variant atomically between frames. Once per configuration it publishes ModelInfo (class
names, sha256s, engine) and LabelInfo latched; with ``debug_image`` also annotated frames.
Everything but the wiring is ``core.serving.perception.Perception``; with the default engine
(onnxruntime) the process never loads torch.

A managed (lifecycle) node: ``configure`` loads and verifies the backbone and the profile table
and creates the publishers, ``activate`` subscribes to the camera and serves Reconfigure,
``deactivate`` stops both and keeps the served variant, its cache and the counters, ``cleanup``
and ``shutdown`` release everything. With ``managed`` false (the default, as for most ROS 2
drivers and image_pipeline nodes) it takes configure and activate itself at start and fails
the start, exit code 2, if configuring fails; with ``managed`` true it waits, unconfigured, for
a lifecycle manager or the launch file (``managed:=true``).

Threading: camera frames are taken and classified on a thread of their own (nodes/frame_thread.py:
rclpy's executor costs ~0.45 ms of CPU per wake here, a tenth of a colour frame); everything else
(Reconfigure, the metrics timer, parameters, lifecycle transitions) runs on one
SingleThreadedExecutor (a thread pool for the callbacks was the largest tail of a camera frame:
docs/benchmarks.md, *Design measurements*). A frame takes ONE reference to the
(config, runner) pair when it starts and the Reconfigure service replaces the pair with a single
assignment once the new variant is built and warmed up, so every frame is computed entirely by
one variant (``serving.server``). A build still holds the GIL (ONNX Runtime's session
constructor does), so Reconfigure starts one between two frames (``serving.frame_gaps``).
Deactivate stops the frame thread (after the frame in progress) before anything else goes.

The counters in PerformanceMetrics and /diagnostics are explained in core/serving/perception.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.serialization import deserialize_message
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from adaspring_ros import msg_convert
from adaspring_ros.core.model.engine import EngineError
from adaspring_ros.core.serving.perception import (
    Classification,
    Perception,
    RejectedFrame,
    invalid_parameters,
)
from adaspring_ros.msg import CompressionConfig as ConfigMsg
from adaspring_ros.msg import InferenceResult, ModelInfo, PerformanceMetrics
from adaspring_ros.msg_convert import SerializedImage
from adaspring_ros.nodes.common import diagnostic_array, diagnostic_status, run
from adaspring_ros.nodes.frame_thread import FrameThread
from adaspring_ros.nodes.guard import CallbackGuard
from adaspring_ros.nodes.params import declare, invalid_choice, parameter_table
from adaspring_ros.nodes.qos import (
    DEBUG_IMAGE_QOS,
    DEBUG_IMAGE_TOPIC,
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    IMAGE_QOS,
    METRICS_QOS,
    METRICS_TOPIC,
    MODEL_INFO_QOS,
    MODEL_INFO_TOPIC,
    RECONFIGURE_SERVICE,
    RESULT_QOS,
    RESULT_TOPIC,
    transport_topic,
)
from adaspring_ros.nodes.settings import NODE_SETTINGS
from adaspring_ros.nodes.vision_out import VisionOut
from adaspring_ros.srv import Reconfigure

SETTINGS = NODE_SETTINGS["perception_node"]
PARAMETERS = parameter_table(*SETTINGS)
# What a configure that cannot load the model raises: it fails, and the node stays unconfigured.
LOAD_ERRORS = (ValueError, OSError, EngineError)
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class PerceptionNode(LifecycleNode):
    """Camera frames in; InferenceResult, PerformanceMetrics and /diagnostics out; Reconfigure;
    a lifecycle node (see the module docstring for what each transition does)."""

    def __init__(self) -> None:
        super().__init__("perception_node")
        # Created by configure (publishers) and activate (the rest), destroyed by their undoing;
        # set before anything can fail: destroy_node reads them.
        self.result_publisher = self.metrics_publisher = self.diagnostics_publisher = None
        self.model_info_publisher = self.debug_publisher = self.vision_out = None
        self.frames = self.service = self.timer = None
        self.debug_lock = threading.Lock()  # the frame thread publishes on what may go
        self.serving: Perception | None = None  # while configured
        self.configure_error = ""
        self.guard = CallbackGuard(self)
        declare(self, SETTINGS)
        problem = self._invalid({n: self.get_parameter(n).value for n in
                                 ("device_power_profile", "engine")})
        if problem:
            raise ValueError(problem)
        self.add_on_set_parameters_callback(
            self.guard.parameters(self.validate_parameters_callback))
        self.add_post_set_parameters_callback(self.guard(self.apply_parameters_callback))

    # -- lifecycle ------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.serving = Perception({name: self.get_parameter(name).value
                                       for name, _, _ in PARAMETERS})
        except LOAD_ERRORS as exc:
            self.configure_error = str(exc)
            self.get_logger().error(f"configure failed, still unconfigured: {exc}")
            self._release()
            return FAILURE
        self.configure_error = ""
        self.result_publisher = self.create_publisher(InferenceResult, RESULT_TOPIC, RESULT_QOS)
        self.metrics_publisher = self.create_publisher(PerformanceMetrics, METRICS_TOPIC,
                                                       METRICS_QOS)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                           DIAGNOSTICS_QOS)
        self.model_info_publisher = self.create_publisher(ModelInfo, MODEL_INFO_TOPIC,
                                                          MODEL_INFO_QOS)
        self.publish_model_info()
        self.vision_out = VisionOut(self, self.serving.model_info.class_names)
        self._set_debug_view(self.get_parameter("debug_image").value)
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.serving.start_window()  # the first window starts now, not at configure
        transport = self.get_parameter("transport").value
        # Images are taken serialized and read in place (image_callback)
        msg_type, callback, raw = ((CompressedImage, self.compressed_callback, False)
                                   if transport == "compressed"
                                   else (Image, self.image_callback, True))
        self.frames = FrameThread(
            self, msg_type, transport_topic(self.get_parameter("image_topic").value, transport),
            self.guard(callback), IMAGE_QOS, raw=raw,
            on_error=partial(self.guard.record, "frame_thread"))
        self.service = self.create_service(Reconfigure, RECONFIGURE_SERVICE,
                                           self.guard.service(self.reconfigure_callback))
        self.timer = self.create_timer(self.get_parameter("metrics_period_s").value,
                                       self.guard(self.metrics_callback))
        config, _ = self.serving.server.active
        self.get_logger().info(
            f"serving {config.id} (sha256 {self.serving.bank.sha256[:12]}) on "
            f"{self.frames.topic_name}; energy: {self.serving.meter.method}")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # The served variant, its cache and the counters stay: activate resumes where it was.
        if self.frames is not None:
            self.frames.stop()  # first: no frame runs while the rest goes
        for entity, destroy in ((self.service, self.destroy_service),
                                (self.timer, self.destroy_timer)):
            if entity is not None:
                destroy(entity)
        self.frames = self.service = self.timer = None
        config, _ = self.serving.server.active
        self.get_logger().info(f"inactive, {config.id} kept; frames are not classified")
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.frames is not None:
            self.on_deactivate(state)
        self._release()
        return SUCCESS

    def _release(self) -> None:
        """Back to unconfigured: no model, no publishers."""
        self._set_debug_view(False)
        for name in ("result_publisher", "metrics_publisher", "diagnostics_publisher",
                     "model_info_publisher"):
            if getattr(self, name) is not None:
                self.destroy_publisher(getattr(self, name))
                setattr(self, name, None)
        if self.vision_out is not None:
            self.vision_out.destroy()
        if self.serving is not None:
            self.serving.close()
        self.serving = self.vision_out = None

    def _set_debug_view(self, on: bool) -> None:
        """The debug publisher exists only while configured with debug_image on: no cost off."""
        with self.debug_lock:
            self._switch_debug_view(on)

    def _switch_debug_view(self, on: bool) -> None:
        if on and self.debug_publisher is None and self.serving is not None:
            self.debug_publisher = self.create_publisher(Image, DEBUG_IMAGE_TOPIC,
                                                         DEBUG_IMAGE_QOS)
        elif not on and self.debug_publisher is not None:
            self.destroy_publisher(self.debug_publisher)
            self.debug_publisher = None

    # -- parameters -----------------------------------------------------------------------------
    def _invalid(self, values: dict) -> str:
        """Why parameter values are unusable, or '' (numeric ranges are checked by rclpy)."""
        return invalid_choice(SETTINGS, values) or invalid_parameters(values)

    def validate_parameters_callback(self, params) -> SetParametersResult:
        problem = self._invalid({p.name: p.value for p in params})
        return SetParametersResult(successful=not problem, reason=problem)

    def apply_parameters_callback(self, params) -> None:
        # What configure or activate creates is changed only while it exists; they read the
        # parameters afresh.
        value = {p.name: p.value for p in params}
        if "metrics_period_s" in value and self.timer is not None:
            self.timer.timer_period_ns = int(value["metrics_period_s"] * 1e9)
            self.timer.reset()
        if self.serving is not None:
            self.serving.apply(value)
        if "debug_image" in value:
            self._set_debug_view(value["debug_image"])

    # -- callbacks ------------------------------------------------------------------------------
    def reconfigure_callback(self, request, response):
        outcome = self.serving.reconfigure(partial(msg_convert.config_from_msg, request.config))
        response.success, response.swapped = outcome.success, outcome.swapped
        response.swap_ms, response.message = outcome.swap_ms, outcome.message
        response.active = msg_convert.config_to_msg(outcome.active, ConfigMsg)
        log = self.get_logger()
        {"info": lambda m: log.info(f"reconfigure: {m}"), "warning": log.warning,
         "error": log.error}[outcome.level](outcome.message)
        return response

    def image_callback(self, data: bytes, info: MessageInfo) -> None:
        # The frame's serialized bytes, its pixels read where they are (image_from_cdr spares
        # two copies of them); what that reader does not read, rclpy's deserializer does.
        decode = msg_convert.image_to_numpy
        try:
            msg = msg_convert.image_from_cdr(data, Header)
        except msg_convert.ImageError as exc:
            try:  # another encapsulation (big-endian CDR, XCDR2)
                msg = deserialize_message(data, Image)
            except Exception:  # bytes that are no Image: refused and counted as a bad frame is
                msg, decode = Image(), partial(_refuse, exc)
        self.classify_frame(msg, info, decode)

    def compressed_callback(self, msg: CompressedImage, info: MessageInfo) -> None:
        self.classify_frame(msg, info, msg_convert.compressed_to_numpy)

    def classify_frame(self, msg: SerializedImage | Image | CompressedImage, info: MessageInfo,
                       decode: Callable) -> None:
        """A frame of either transport (``decode(msg, channels)`` reads its pixels): counted,
        classified, its result published with the frame's header."""
        with self.serving.gaps.frame():  # Reconfigure builds between frames
            self._classify_frame(msg, info, decode)

    def _classify_frame(self, msg: SerializedImage | Image | CompressedImage, info: MessageInfo,
                        decode: Callable) -> None:
        frame = self.serving.receive(info)
        if frame is None:  # held below max_rate_hz
            return
        try:
            result = self.serving.classify(frame, partial(decode, msg))
        except RejectedFrame as exc:
            self.get_logger().warning(f"rejected image: {exc}", throttle_duration_sec=5.0)
            return
        with self.serving.publishing(frame):  # a failure is counted, the guard logs it
            self.publish_result(msg.header, result)
        now_ns = self.get_clock().now().nanoseconds
        try:
            stamp_ns = msg_convert.checked_stamp_ns(msg.header.stamp, now_ns,
                                                    self.serving.stamp_tolerance_ns)
        except msg_convert.StampError as exc:
            # Classified anyway (the pixels are fine; a robot with a wrong clock still needs
            # them), but its latency would be noise in the statistics and the deadline feedback.
            stamp_ns = None
            self.serving.stamp_rejected()
            self.get_logger().warning(f"image stamp left out of the latency: {exc}",
                                      throttle_duration_sec=5.0)
        raw_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        e2e_ms = self.serving.finish(frame, result, raw_ns, stamp_ns, now_ns)
        if self.debug_publisher is not None:
            view = self.serving.debug_view(result, e2e_ms)
            with self.debug_lock:  # debug_image may be turned off meanwhile
                if view is not None and self.debug_publisher is not None:
                    self.publish_debug_view(msg.header, view)

    def metrics_callback(self) -> None:
        # Stamped when its window closes (report() closes it first thing), so the stamps of two
        # reports span the window their fps is measured over, however long the report takes.
        closed = self.get_clock().now().to_msg()
        values, health = self.serving.report(self.guard.total)
        metrics = msg_convert.metrics_to_msg(values, PerformanceMetrics)
        metrics.header.stamp = closed
        self.metrics_publisher.publish(metrics)
        level = DiagnosticStatus.WARN if health.warn else DiagnosticStatus.OK
        array = diagnostic_array(self, diagnostic_status("adaspring: perception_node", level,
                                                         health.message, health.values))
        array.header.stamp = metrics.header.stamp
        self.diagnostics_publisher.publish(array)

    # -- what this node publishes about its frames and its model ---------------------------------
    def publish_result(self, header, result: Classification) -> None:
        """A frame's decision, stamped with the image's header, as an InferenceResult and a
        vision_msgs Classification."""
        msg = msg_convert.result_to_msg(header, result.class_id, result.label, result.score,
                                        result.config.id, result.forward_ms, InferenceResult)
        self.result_publisher.publish(msg)
        self.vision_out.publish(msg)

    def publish_model_info(self) -> None:
        """What decodes this configuration's results (latched)."""
        info = self.serving.model_info
        msg = msg_convert.model_info_to_msg(info.class_names, info.backbone_path,
                                            info.backbone_sha256, info.table_path,
                                            info.table_sha256, info.engine, ModelInfo)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.model_info_publisher.publish(msg)

    def publish_debug_view(self, header, view) -> None:
        """The frame with the decision drawn on it, for a person to look at (after the result,
        so the drawing never delays it)."""
        msg = msg_convert.numpy_to_image(view, "rgb8", Image)
        msg.header = header
        self.debug_publisher.publish(msg)

    def destroy_node(self) -> None:
        if self.frames is not None:
            self.frames.stop()
            self.frames = None
        if self.serving is not None:
            self.serving.close()
        super().destroy_node()


def _refuse(reason: Exception, msg: Image, channels: int | None) -> None:
    """The decoder of bytes that are not an Image."""
    raise msg_convert.ImageError(f"not a sensor_msgs/Image: {reason}")


def start(managed: bool | None = None) -> PerceptionNode:
    """A perception node; unless ``managed``, configured and activated (ValueError if the
    configure fails, e.g. bad weights or a table of another engine)."""
    node = PerceptionNode()
    if managed is None:
        managed = node.get_parameter("managed").value
    if not managed:
        if node.trigger_configure() != SUCCESS:
            reason = node.configure_error or "configure failed (see the log)"
            node.destroy_node()
            raise ValueError(reason)
        node.trigger_activate()
    return node


def main(args: list[str] | None = None) -> None:
    # Bad parameters or weights, a table of another engine, a missing engine: exits 2 unless
    # managed. One thread runs every callback in turn (see the module docstring).
    run(start, "perception_node", args, (EngineError,))


if __name__ == "__main__":
    main()
