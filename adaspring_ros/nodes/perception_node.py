"""perception_node: classifies camera frames with the active compact variant of the backbone.

Subscribes sensor_msgs/Image (IMAGE_QOS: best effort, keep last 1, so stale frames never queue),
publishes an InferenceResult (and a vision_msgs Classification: vision_out.py) per frame and
PerformanceMetrics + /diagnostics every ``metrics_period_s``, and serves Reconfigure, which swaps
the variant atomically between frames. Once per configuration it publishes ModelInfo (class
names, sha256s, engine) and LabelInfo latched; with ``debug_image`` also annotated frames.

A managed (lifecycle) node: ``configure`` loads and verifies the backbone and the profile table
and creates the publishers, ``activate`` subscribes to the camera and serves Reconfigure,
``deactivate`` stops both and keeps the served variant, its cache and the counters, ``cleanup``
and ``shutdown`` release everything. With ``managed`` false (the default, as for most ROS 2
drivers and image_pipeline nodes) it takes configure and activate itself at start and fails
the start, exit code 2, if configuring fails; with ``managed`` true it waits, unconfigured, for
a lifecycle manager or the launch file (``managed:=true``).

Threading: one SingleThreadedExecutor runs every callback in turn. A MultiThreadedExecutor
(tried first, so that building a variant would not hold up frames) hands each ready callback to
a thread pool, and that handoff was the largest tail of a camera frame (docs/benchmarks.md,
section *Where a 640x480 frame's time goes*). The price is that a frame arriving while the
Reconfigure service builds a variant waits for it; under the GIL a concurrent build slowed
frames anyway. A frame takes ONE reference to the (config, module) pair when it starts and the
service replaces the pair with a single assignment once the new module is built and warmed up,
so every frame is computed entirely by one variant (``serving.server``);
``serving.frame_stats`` keeps the counters and latency windows below.

What the counters mean:
  frames_received   images that reached the callback;
  frames_processed  images that produced an InferenceResult;
  frames_rejected   images refused as bad input (encoding, size, step, empty, huge);
  frame_errors      images that failed for any other reason (on /diagnostics; e.g. MemoryError);
  frames_skipped    images left unclassified to hold ``max_rate_hz``;
                    frames_received = frames_processed + frames_rejected + frame_errors
                                      + frames_skipped;
  stamps_rejected   classified images whose stamp cannot be right (negative, or further than
                    ``stamp_tolerance_s`` from this node's clock): their result is published,
                    stamp copied as is, but they are left out of the end-to-end latency that the
                    evolution node's deadline feedback reads (on /diagnostics);
  callback_errors   exceptions caught in any callback of this node (on /diagnostics): none may
                    end the node;
  frames_dropped    frames a publisher sent that never reached the callback: the gaps in each
                    publisher's DDS publication sequence number (see FrameStats).
"""

from __future__ import annotations

import math
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import Image

from adaspring_ros import msg_convert
from adaspring_ros.core import energy, paths
from adaspring_ros.core.data import datasets as data
from adaspring_ros.core.model.checkpoint import load_backbone, sha256_of
from adaspring_ros.core.model.config import ConfigError
from adaspring_ros.core.model.engine import EngineError, classify_logits, make_engine
from adaspring_ros.core.model.profile_table import load_profile_table
from adaspring_ros.core.serving.annotate import annotate, decision_lines
from adaspring_ros.core.serving.frame_stats import (
    FrameStats,
    TimingLog,
    percentile,
    window_metrics,
)
from adaspring_ros.core.serving.rate_cap import RateCap
from adaspring_ros.core.serving.server import VariantServer, freeze_heap, parse_config
from adaspring_ros.msg import CompressionConfig as ConfigMsg
from adaspring_ros.msg import InferenceResult, ModelInfo, PerformanceMetrics
from adaspring_ros.nodes.common import diagnostic_array, diagnostic_status, run
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
)
from adaspring_ros.nodes.settings import NODE_SETTINGS
from adaspring_ros.nodes.vision_out import VisionOut
from adaspring_ros.srv import Reconfigure

PARAMETERS = parameter_table(*NODE_SETTINGS["perception_node"])
# What a configure that cannot load the model raises: it fails, and the node stays unconfigured.
LOAD_ERRORS = (ValueError, OSError, EngineError)
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class PerceptionNode(LifecycleNode):
    """Camera frames in; InferenceResult, PerformanceMetrics and /diagnostics out; Reconfigure;
    a lifecycle node (see the module docstring for what each transition does)."""

    def __init__(self) -> None:
        super().__init__("perception_node")
        self.timing_log = None  # destroy_node() runs even when start-up fails below
        self.server = None  # set by configure
        self.configure_error = ""
        self.guard = CallbackGuard(self)
        declare(self, NODE_SETTINGS["perception_node"])
        problem = self._invalid({n: self.get_parameter(n).value for n in
                                 ("initial_config", "device_power_profile", "engine")})
        if problem:
            raise ValueError(problem)
        self.add_on_set_parameters_callback(
            self.guard.parameters(self.validate_parameters_callback))
        self.add_post_set_parameters_callback(self.guard(self.apply_parameters_callback))
        self.stamp_tolerance_ns = round(self.get_parameter("stamp_tolerance_s").value * 1e9)
        self.rate_cap = RateCap(self.get_parameter("max_rate_hz").value)
        self.debug_cap = RateCap(self.get_parameter("debug_image_rate_hz").value)
        # Created by configure (publishers) and activate (the rest), destroyed by their undoing.
        self.result_publisher = self.metrics_publisher = self.diagnostics_publisher = None
        self.model_info_publisher = self.debug_publisher = self.vision_out = None
        self.subscription = self.service = self.timer = None
        self.backbone = None

    # -- lifecycle ------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load()
        except LOAD_ERRORS as exc:
            self.configure_error = str(exc)
            self.get_logger().error(f"configure failed, still unconfigured: {exc}")
            self._release()
            return FAILURE
        self.result_publisher = self.create_publisher(InferenceResult, RESULT_TOPIC, RESULT_QOS)
        self.metrics_publisher = self.create_publisher(PerformanceMetrics, METRICS_TOPIC,
                                                       METRICS_QOS)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                           DIAGNOSTICS_QOS)
        self.model_info_publisher = self.create_publisher(ModelInfo, MODEL_INFO_TOPIC,
                                                          MODEL_INFO_QOS)
        self.model_info_publisher.publish(self.model_info)
        self.vision_out = VisionOut(self, self.backbone.classes)
        self._set_debug_view(self.get_parameter("debug_image").value)
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stats.take_window()  # the first window starts now, not at configure
        self.meter.start()
        self.subscription = self.create_subscription(
            Image, self.get_parameter("image_topic").value, self.guard(self.image_callback),
            IMAGE_QOS)
        self.service = self.create_service(Reconfigure, RECONFIGURE_SERVICE,
                                           self.guard.service(self.reconfigure_callback))
        self.timer = self.create_timer(self.get_parameter("metrics_period_s").value,
                                       self.guard(self.metrics_callback))
        config, _ = self.server.active
        self.get_logger().info(
            f"serving {config.id} (sha256 {self.backbone.sha256[:12]}) on "
            f"{self.subscription.topic_name}; energy: {self.meter.method}")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # The served variant, its cache and the counters stay: activate resumes where it was.
        for entity, destroy in ((self.subscription, self.destroy_subscription),
                                (self.service, self.destroy_service),
                                (self.timer, self.destroy_timer)):
            if entity is not None:
                destroy(entity)
        self.subscription = self.service = self.timer = None
        config, _ = self.server.active
        self.get_logger().info(f"inactive, {config.id} kept; frames are not classified")
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.subscription is not None:
            self.on_deactivate(state)
        self._release()
        return SUCCESS

    def _load(self) -> None:
        """Load and verify the backbone and the profile table, build the initial variant."""
        path = self.get_parameter("backbone_path").value or str(paths.default_backbone())
        self.backbone = load_backbone(path)  # verifies the sha256, weights_only=True
        threads = self.get_parameter("num_threads").value
        engine = make_engine(self.get_parameter("engine").value, threads)
        table_path = self.get_parameter("profile_table").value
        table = None
        if engine.name != "torch":  # the int8 activation ranges of the profiled variants
            table = load_profile_table(table_path or None, engine.name)
            table_path = table_path or str(paths.default_profile_table(engine.name))
        config = parse_config(self.get_parameter("initial_config").value, self.backbone.space)
        self.server = VariantServer(self.backbone, engine, table,
                                    self.get_parameter("max_cached_variants").value, config,
                                    threads)
        freeze_heap()  # no full garbage-collection pause in a later frame or swap
        self.model_info = msg_convert.model_info_to_msg(
            self.backbone.classes, path, self.backbone.sha256, table_path,
            sha256_of(table_path) if table_path else "", engine.info, ModelInfo)
        self.model_info.header.stamp = self.get_clock().now().to_msg()
        self.stats = FrameStats()
        self.reported: dict[str, int] = {}  # counters at the last report, for per-window rates
        self.meter = energy.make_meter(self.get_parameter("device_power_profile").value)
        self.meter.start()
        self.timing_log = TimingLog(self.get_parameter("timing_log").value or None)
        self.configure_error = ""

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
        if self.timing_log is not None:
            self.timing_log.close()
        self.server = self.timing_log = self.backbone = self.vision_out = None

    def _set_debug_view(self, on: bool) -> None:
        """The debug publisher exists only while configured with debug_image on: no cost off."""
        if on and self.debug_publisher is None and self.server is not None:
            self.debug_publisher = self.create_publisher(Image, DEBUG_IMAGE_TOPIC,
                                                         DEBUG_IMAGE_QOS)
        elif not on and self.debug_publisher is not None:
            self.destroy_publisher(self.debug_publisher)
            self.debug_publisher = None

    # -- parameters -----------------------------------------------------------------------------
    def _invalid(self, values: dict) -> str:
        """Why parameter values are unusable, or '' (numeric ranges are checked by rclpy)."""
        if "initial_config" in values:
            try:
                parse_config(values["initial_config"])
            except ConfigError as exc:
                return f"initial_config: {exc}"
        problem = invalid_choice(NODE_SETTINGS["perception_node"], values)
        if problem:
            return problem
        if "device_power_profile" in values:
            try:
                energy.load_device(values["device_power_profile"])
            except ValueError as exc:
                return f"device_power_profile: {exc}"
        return ""

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
        if "max_cached_variants" in value and self.server is not None:
            self.server.cache.capacity = value["max_cached_variants"]
        if "num_threads" in value and self.server is not None:  # the executor's one thread
            self.server.set_threads(value["num_threads"])      # runs the frames too
        if "stamp_tolerance_s" in value:
            self.stamp_tolerance_ns = round(value["stamp_tolerance_s"] * 1e9)
        if "device_power_profile" in value and self.server is not None:
            self.meter = energy.make_meter(value["device_power_profile"])
            self.meter.start()
        if "max_rate_hz" in value:
            self.rate_cap.max_rate_hz = value["max_rate_hz"]
        if "debug_image_rate_hz" in value:
            self.debug_cap.max_rate_hz = value["debug_image_rate_hz"]
        if "debug_image" in value:
            self._set_debug_view(value["debug_image"])

    # -- variants -------------------------------------------------------------------------------
    def reconfigure_callback(self, request, response):
        start = time.perf_counter()
        config, _ = self.server.active
        response.swap_ms = math.nan
        response.swapped = False
        try:
            wanted = msg_convert.config_from_msg(request.config, self.backbone.space)
            response.swapped, cached = self.server.swap(wanted)
            swap_ms = (time.perf_counter() - start) * 1e3
            if response.swapped:
                with self.stats.lock:
                    self.stats.counts["swaps"] += 1
                    self.stats.counts["last_swap_us"] = round(swap_ms * 1e3)
            config = wanted
            response.success = True
            response.swap_ms = swap_ms
            how = ("swapped, " if response.swapped else "already serving, ") \
                + ("cached" if cached else "built")
            response.message = f"serving {wanted.id} ({how}, {swap_ms:.1f} ms)"
            self.get_logger().info(f"reconfigure: {response.message}")
        except ConfigError as exc:
            self.stats.add("reconfigure_rejected")
            response.success = False
            response.message = f"invalid request, still serving {config.id}: {exc}"
            self.get_logger().warning(response.message)
        except Exception as exc:  # a failed build must not take the node down
            self.stats.add("reconfigure_rejected")
            response.success = False
            response.message = f"could not build the variant, still serving {config.id}: {exc}"
            self.get_logger().error(response.message)
        response.active = msg_convert.config_to_msg(config, ConfigMsg)
        return response

    # -- frames ---------------------------------------------------------------------------------
    def image_callback(self, msg: Image, info: MessageInfo) -> None:
        # Two required arguments: rclpy passes MessageInfo only to callbacks that need it.
        start = time.perf_counter()
        received_ns = time.time_ns()  # wall clock, comparable with the image stamp
        self.stats.received(info)
        if not self.rate_cap.admit(start):  # held below the camera rate: nothing else is done
            self.stats.add("frames_skipped")
            return
        try:
            pixels = msg_convert.image_to_numpy(msg)
            config, net = self.server.active  # one reference per frame: one variant computes it
            x = data.preprocess(pixels, config.resolution)
        except (msg_convert.ImageError, data.DataError) as exc:
            self.stats.add("frames_rejected")
            self.get_logger().warning(f"rejected image: {exc}", throttle_duration_sec=5.0)
            return
        except Exception:  # unforeseen (MemoryError...): counted here, logged by the guard
            self.stats.add("frame_errors")
            raise
        try:
            forward_start = time.perf_counter()
            preprocess_ms = (forward_start - start) * 1e3  # decoding + preprocessing
            class_id, score = classify_logits(net(x.numpy()))
            forward_ms = (time.perf_counter() - forward_start) * 1e3
            result = msg_convert.result_to_msg(
                msg.header, class_id, self.backbone.classes[class_id], score, config.id,
                forward_ms, InferenceResult)
            self.result_publisher.publish(result)
            self.vision_out.publish(result)
        except Exception:  # keep serving whatever one frame did; the guard logs it
            self.stats.add("frame_errors")
            raise
        callback_ms = (time.perf_counter() - start) * 1e3
        now_ns = self.get_clock().now().nanoseconds
        try:
            stamp_ns = msg_convert.checked_stamp_ns(msg.header.stamp, now_ns,
                                                    self.stamp_tolerance_ns)
        except msg_convert.StampError as exc:
            # Classified anyway (the pixels are fine; a robot with a wrong clock still needs
            # them), but its latency would be noise in the statistics and the deadline feedback.
            stamp_ns = None
            self.stats.add("stamps_rejected")
            self.get_logger().warning(f"image stamp left out of the latency: {exc}",
                                      throttle_duration_sec=5.0)
        e2e_ms = (now_ns - stamp_ns) / 1e6 if stamp_ns is not None else math.nan
        self.stats.add("frames_processed")
        self.stats.sample(model_ms=forward_ms, e2e_ms=e2e_ms, overhead_ms=callback_ms - forward_ms,
                          non_model_ms=e2e_ms - forward_ms)
        raw_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        self.timing_log.write(raw_ns, callback_ms, forward_ms, config.id, received_ns,
                              preprocess_ms)
        if self.debug_publisher is not None and self.debug_cap.admit(time.perf_counter()):
            self._publish_debug_view(msg.header, pixels, result, e2e_ms)

    def _publish_debug_view(self, header, pixels, result: InferenceResult, e2e_ms: float) -> None:
        """The frame with the decision drawn on it, for a person to look at (after the result,
        so the drawing never delays it)."""
        view = msg_convert.numpy_to_image(
            annotate(pixels, decision_lines(result.label, result.score, result.config_id,
                                            e2e_ms)), "rgb8", Image)
        view.header = header
        self.debug_publisher.publish(view)

    # -- reporting ------------------------------------------------------------------------------
    def metrics_callback(self) -> None:
        counts, window, seconds = self.stats.take_window()
        meter = self.meter  # the parameter callback may replace it meanwhile
        reading = meter.stop()
        meter.start()
        config, _ = self.server.active
        values = {**counts, **window_metrics(counts, window, seconds, reading.joules),
                  "config_id": config.id, "energy_method": reading.method,
                  "max_rate_hz": self.rate_cap.max_rate_hz}
        metrics = msg_convert.metrics_to_msg(values, PerformanceMetrics)
        metrics.header.stamp = self.get_clock().now().to_msg()
        self.metrics_publisher.publish(metrics)
        self._publish_diagnostics(counts, window, len(window["model_ms"]), metrics)

    def _publish_diagnostics(self, counts, window, processed: int, metrics) -> None:
        previous, self.reported = self.reported, counts
        dropped = counts.get("frames_dropped", 0) - previous.get("frames_dropped", 0)
        level, message = DiagnosticStatus.OK, f"serving {metrics.config_id}"
        if not processed:
            level, message = DiagnosticStatus.WARN, "no frames classified"
        elif dropped > processed:  # most frames never reach the callback: load or transport
            level = DiagnosticStatus.WARN
            message = (f"serving {metrics.config_id}, but {dropped} of {dropped + processed} "
                       f"frames were dropped")
        values = {
            "config_id": metrics.config_id, "fps": f"{metrics.fps:.2f}",
            "cached_variants": len(self.server.cache), "backbone_sha256": self.backbone.sha256,
            "overhead_ms_p50": f"{percentile(window['overhead_ms'], 50):.3f}",
            "overhead_ms_p95": f"{percentile(window['overhead_ms'], 95):.3f}",
            "callback_errors": self.guard.total,
            **{name: counts.get(name, 0) for name in (
                "frame_errors", "stamps_rejected", "frames_received", "frames_processed",
                "frames_dropped", "frames_rejected", "frames_skipped", "reconfigure_rejected",
                "swaps")},
        }
        array = diagnostic_array(self, diagnostic_status("adaspring: perception_node", level,
                                                         message, values))
        array.header.stamp = metrics.header.stamp
        self.diagnostics_publisher.publish(array)

    def destroy_node(self) -> None:
        if self.timing_log is not None:
            self.timing_log.close()
        super().destroy_node()


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
