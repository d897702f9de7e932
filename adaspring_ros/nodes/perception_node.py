"""perception_node: classifies camera frames with the active compact variant of the backbone.

Subscribes sensor_msgs/Image (IMAGE_QOS: best effort, keep last 1, so stale frames never queue),
publishes an InferenceResult per frame and PerformanceMetrics + /diagnostics every
``metrics_period_s``, and serves Reconfigure, which swaps the variant atomically between frames.

Threading: one SingleThreadedExecutor runs every callback in turn. A MultiThreadedExecutor
(tried first, so that building a variant would not hold up frames) hands each ready callback to
a thread pool, and that handoff was the largest tail of a 640x480 frame: transport + wake-up p95
5.95 -> 0.99 ms and end-to-end p95 9.9 -> 8.4 ms with the single-threaded one (docs/benchmarks.md,
section *Where a 640x480 frame's time goes*). The price is that a frame arriving while the
Reconfigure service builds a variant (5-20 ms, a few times a minute) waits for it; with the GIL a
concurrent build slowed frames anyway. A frame takes ONE reference to the (config, module) pair
when it starts and the service replaces the pair with a single assignment once the new module is
built and warmed up, so every frame is computed entirely by one variant.

What the counters mean:
  frames_received   images that reached the callback;
  frames_processed  images that produced an InferenceResult;
  frames_rejected   images refused as bad input (encoding, size, step, empty, huge);
  frame_errors      images that failed for any other reason (on /diagnostics; e.g. MemoryError);
                    frames_received = frames_processed + frames_rejected + frame_errors;
  stamps_rejected   classified images whose stamp cannot be right (negative, or further than
                    ``stamp_tolerance_s`` from this node's clock): their result is published,
                    stamp copied as is, but they are left out of the end-to-end latency that the
                    evolution node's deadline feedback reads (on /diagnostics);
  callback_errors   exceptions caught in any callback of this node (on /diagnostics): none may
                    end the node;
  frames_dropped    frames a publisher sent that never reached the callback, counted exactly from
                    the gaps in each publisher's DDS publication sequence number (MessageInfo):
                    overwritten in the keep-last-1 queue while an earlier frame was processed, or
                    lost on the wire.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import Image

from adaspring_ros import msg_convert, paths
from adaspring_ros.core import data, energy
from adaspring_ros.core.config import DEFAULT_SPACE, CompressionConfig, ConfigError, SearchSpace
from adaspring_ros.core.engine import (
    DEFAULT_ENGINE,
    ENGINES,
    EngineError,
    Runner,
    VariantBuilder,
    classify_logits,
    make_engine,
)
from adaspring_ros.core.search import default_table
from adaspring_ros.core.supernet import VariantCache, freeze_heap, load_backbone, set_num_threads
from adaspring_ros.msg import CompressionConfig as ConfigMsg
from adaspring_ros.msg import InferenceResult, PerformanceMetrics
from adaspring_ros.nodes.guard import CallbackGuard
from adaspring_ros.nodes.params import describe
from adaspring_ros.nodes.qos import (
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    IMAGE_QOS,
    IMAGE_TOPIC,
    METRICS_QOS,
    METRICS_TOPIC,
    RECONFIGURE_SERVICE,
    RESULT_QOS,
    RESULT_TOPIC,
)
from adaspring_ros.srv import Reconfigure

# rmw's "this middleware does not number publications" value.
_SEQ_UNSUPPORTED = 2**64 - 1


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


class FrameStats:
    """Counters since start and per-window latency samples; shared by the callback threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = defaultdict(int)
        self.last_seq: dict[bytes, int] = {}
        self.window: dict[str, list[float]] = defaultdict(list)
        self.window_start = time.monotonic()

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def received(self, info: MessageInfo | None) -> None:
        """Count a frame and the publications of its publisher that never arrived."""
        gid = seq = None
        if isinstance(info, dict):
            seq = info.get("publication_sequence_number")
            gid = bytes((info.get("publisher_gid") or {}).get("data", b""))
        with self.lock:
            self.counts["frames_received"] += 1
            if not isinstance(seq, int) or seq in (0, _SEQ_UNSUPPORTED):
                return
            last = self.last_seq.get(gid)
            if last is not None and seq > last + 1:
                self.counts["frames_dropped"] += seq - last - 1
            self.last_seq[gid] = max(seq, last or 0)

    def sample(self, **values: float) -> None:
        with self.lock:
            for name, value in values.items():
                self.window[name].append(value)

    def take_window(self) -> tuple[dict[str, int], dict[str, list[float]], float]:
        """Counters, the window's samples and its length in s; starts a new window."""
        with self.lock:
            now = time.monotonic()
            window, self.window = self.window, defaultdict(list)
            seconds, self.window_start = now - self.window_start, now
            return dict(self.counts), window, seconds


RO = {"read_only": True}
# name, default, descriptor: read-only ones are fixed at start, the rest may change at run time.
PARAMETERS = (
    ("image_topic", IMAGE_TOPIC, describe("sensor_msgs/Image topic to classify", **RO)),
    ("backbone_path", "", describe("trained backbone checkpoint ('' = the shipped "
                                   "models/backbone.pt); its .sha256 must match", **RO)),
    ("engine", DEFAULT_ENGINE, describe(
        f"inference engine for the variants: {', '.join(ENGINES)} (torch is the reference)",
        **RO)),
    ("profile_table", "", describe(
        "profile table of the engine ('' = the engine's shipped table): its int8 activation "
        "ranges make profiled int8 variants compute in int8 (onnxruntime)", **RO)),
    ("initial_config", "full", describe("variant served at start: full, smallest or a config "
                                        "id", **RO)),
    ("timing_log", "", describe("CSV file of per-frame timings ('' = off; for profiling)", **RO)),
    ("num_threads", 1, describe("engine intra-op threads (1 is fastest at batch 1 here; in "
                                "onnxruntime from the next variant built)",
                                integer=(1, 64))),
    ("metrics_period_s", 1.0, describe("period of PerformanceMetrics and /diagnostics, s",
                                       floating=(0.1, 60.0))),
    ("max_cached_variants", 8, describe("materialised variants kept for fast swaps",
                                        integer=(1, 256))),
    ("stamp_tolerance_s", 10.0, describe("an image stamped further than this from the node's "
                                         "clock (either way) is classified but counted in "
                                         "stamps_rejected and left out of the end-to-end "
                                         "latency, s", floating=(0.001, 86400.0))),
    ("device_power_profile", energy.DEFAULT_DEVICE,
     describe("device power model for energy per frame when RAPL is not readable: a name in "
              "config/devices/ or a .yaml path")),
)


class PerceptionNode(Node):
    """Camera frames in; InferenceResult, PerformanceMetrics and /diagnostics out; Reconfigure."""

    def __init__(self) -> None:
        super().__init__("perception_node")
        self.timing_log = None  # destroy_node() runs even when start-up fails below
        self.guard = CallbackGuard(self)
        for name, default, descriptor in PARAMETERS:
            self.declare_parameter(name, default, descriptor)
        problem = self._invalid({n: self.get_parameter(n).value for n in
                                 ("initial_config", "device_power_profile", "engine")})
        if problem:
            raise ValueError(problem)
        self.add_on_set_parameters_callback(
            self.guard.parameters(self.validate_parameters_callback))
        self.add_post_set_parameters_callback(self.guard(self.apply_parameters_callback))
        self.stamp_tolerance_ns = round(self.get_parameter("stamp_tolerance_s").value * 1e9)

        path = self.get_parameter("backbone_path").value or paths.default_backbone()
        self.backbone = load_backbone(path)  # verifies the sha256, weights_only=True
        self.threads = self.get_parameter("num_threads").value
        set_num_threads(self.threads)
        self.engine = make_engine(self.get_parameter("engine").value, self.threads)
        table = None
        if self.engine.name != "torch":  # the int8 activation ranges of the profiled variants
            table, _ = default_table(self.get_parameter("profile_table").value or None,
                                     engine=self.engine.name)
        self.cache = VariantCache(VariantBuilder(self.backbone, self.engine, table),
                                  self.get_parameter("max_cached_variants").value)
        config = self._parse_config(self.get_parameter("initial_config").value,
                                    self.backbone.space)
        self.active = (config, self._build(config))  # replaced whole, never mutated
        freeze_heap()  # no full garbage-collection pause in a later frame or swap
        self.stats = FrameStats()
        self.reported: dict[str, int] = {}  # counters at the last report, for per-window rates
        self.meter = energy.make_meter(self.get_parameter("device_power_profile").value)
        self.meter.start()
        timing_log = self.get_parameter("timing_log").value
        self.timing_log = open(timing_log, "w", buffering=1 << 16) if timing_log else None
        if self.timing_log:
            self.timing_log.write("stamp_ns,callback_ms,forward_ms,overhead_ms,config_id,"
                                  "received_ns,preprocess_ms\n")

        self.result_publisher = self.create_publisher(InferenceResult, RESULT_TOPIC, RESULT_QOS)
        self.metrics_publisher = self.create_publisher(PerformanceMetrics, METRICS_TOPIC,
                                                       METRICS_QOS)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                           DIAGNOSTICS_QOS)
        self.subscription = self.create_subscription(
            Image, self.get_parameter("image_topic").value, self.guard(self.image_callback),
            IMAGE_QOS)
        self.service = self.create_service(Reconfigure, RECONFIGURE_SERVICE,
                                           self.guard.service(self.reconfigure_callback))
        self.timer = self.create_timer(self.get_parameter("metrics_period_s").value,
                                       self.guard(self.metrics_callback))
        self.get_logger().info(
            f"serving {config.id} from {path} (sha256 {self.backbone.sha256[:12]}) on "
            f"{self.subscription.topic_name}; energy: {self.meter.method}")

    # -- parameters -----------------------------------------------------------------------------
    @staticmethod
    def _parse_config(text: str, space: SearchSpace = DEFAULT_SPACE) -> CompressionConfig:
        if text == "full":
            return CompressionConfig.full(space)
        if text == "smallest":
            return CompressionConfig.smallest(space)
        return CompressionConfig.from_id(text, space)

    def _invalid(self, values: dict) -> str:
        """Why parameter values are unusable, or '' (numeric ranges are checked by rclpy)."""
        if "initial_config" in values:
            try:
                self._parse_config(values["initial_config"])
            except ConfigError as exc:
                return f"initial_config: {exc}"
        if "engine" in values and values["engine"] not in ENGINES:
            return f"engine: {values['engine']!r} is not one of {', '.join(ENGINES)}"
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
        names = {p.name for p in params}
        if "metrics_period_s" in names:
            self.timer.timer_period_ns = int(self.get_parameter("metrics_period_s").value * 1e9)
            self.timer.reset()
        if "max_cached_variants" in names:
            self.cache.capacity = self.get_parameter("max_cached_variants").value
        if "stamp_tolerance_s" in names:
            self.stamp_tolerance_ns = round(self.get_parameter("stamp_tolerance_s").value * 1e9)
        if "device_power_profile" in names:
            self.meter = energy.make_meter(self.get_parameter("device_power_profile").value)
            self.meter.start()

    def _apply_threads(self) -> None:
        # Called from the image thread too: the setting takes effect for the thread that runs
        # the forward passes.
        wanted = self.get_parameter("num_threads").value
        if wanted != self.threads:
            set_num_threads(wanted)
            self.threads = wanted
            if self.engine.name != "torch":
                # An engine session fixes its thread count: later builds use the new one.
                self.engine.threads = wanted
                self.cache.clear()

    # -- variants -------------------------------------------------------------------------------
    def _build(self, config: CompressionConfig) -> Runner:
        """Look up ``config``, or build it and run one warm-up forward (first-call allocations
        happen here, off the frame path, not on the first frame it serves)."""
        if config in self.cache:
            return self.cache.get(config)
        runner = self.cache.get(config)
        blank = np.zeros((config.resolution, config.resolution), np.uint8)
        runner(data.preprocess(blank, config.resolution).numpy())
        return runner

    def reconfigure_callback(self, request, response):
        start = time.perf_counter()
        config, _ = self.active
        response.swap_ms = math.nan
        response.swapped = False
        try:
            wanted = msg_convert.config_from_msg(request.config, self.backbone.space)
            cached = wanted in self.cache
            if wanted != config:
                net = self._build(wanted)
                self.active = (wanted, net)  # the swap: one reference assignment
                response.swapped = True
                swap_ms = (time.perf_counter() - start) * 1e3
                with self.stats.lock:
                    self.stats.counts["swaps"] += 1
                    self.stats.counts["last_swap_us"] = round(swap_ms * 1e3)
            config = wanted
            swap_ms = (time.perf_counter() - start) * 1e3
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
        try:
            pixels = msg_convert.image_to_numpy(msg)
            config, net = self.active  # one reference per frame: one variant computes it
            x = data.preprocess(pixels, config.resolution)
        except (msg_convert.ImageError, data.DataError) as exc:
            self.stats.add("frames_rejected")
            self.get_logger().warning(f"rejected image: {exc}", throttle_duration_sec=5.0)
            return
        except Exception:  # unforeseen (MemoryError...): counted here, logged by the guard
            self.stats.add("frame_errors")
            raise
        try:
            self._apply_threads()
            forward_start = time.perf_counter()
            preprocess_ms = (forward_start - start) * 1e3  # decoding + preprocessing
            class_id, score = classify_logits(net(x.numpy()))
            forward_ms = (time.perf_counter() - forward_start) * 1e3
            result = msg_convert.result_to_msg(
                msg.header, class_id, self.backbone.classes[class_id], score, config.id,
                forward_ms, InferenceResult)
            self.result_publisher.publish(result)
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
        if self.timing_log:
            try:
                raw_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                self.timing_log.write(f"{raw_ns},{callback_ms:.4f},{forward_ms:.4f},"
                                      f"{callback_ms - forward_ms:.4f},{config.id},"
                                      f"{received_ns},{preprocess_ms:.4f}\n")
            except (ValueError, OSError):  # closed at shutdown, or the disk is full
                pass

    # -- reporting ------------------------------------------------------------------------------
    def metrics_callback(self) -> None:
        counts, window, seconds = self.stats.take_window()
        processed = len(window["model_ms"])
        e2e = [v for v in window["e2e_ms"] if math.isfinite(v)]
        non_model = [v for v in window["non_model_ms"] if math.isfinite(v)]
        meter = self.meter  # the parameter callback may replace it meanwhile
        reading = meter.stop()
        meter.start()
        config, _ = self.active
        values = dict(counts)
        values.update(
            config_id=config.id,
            model_latency_ms_p50=_percentile(window["model_ms"], 50),
            model_latency_ms_p95=_percentile(window["model_ms"], 95),
            end_to_end_latency_ms_p50=_percentile(e2e, 50),
            end_to_end_latency_ms_p95=_percentile(e2e, 95),
            # what the policy subtracts from the frame budget to budget the forward pass
            non_model_latency_ms_p50=_percentile(non_model, 50),
            non_model_latency_ms_p95=_percentile(non_model, 95),
            fps=processed / seconds if seconds > 0 else math.nan,
            energy_per_frame_mj=reading.joules * 1e3 / processed if processed else math.nan,
            energy_method=reading.method,
            last_swap_ms=counts["last_swap_us"] / 1e3 if "last_swap_us" in counts else math.nan,
        )
        metrics = msg_convert.metrics_to_msg(values, PerformanceMetrics)
        metrics.header.stamp = self.get_clock().now().to_msg()
        self.metrics_publisher.publish(metrics)
        self._publish_diagnostics(counts, window, processed, metrics)

    def _publish_diagnostics(self, counts, window, processed: int, metrics) -> None:
        status = DiagnosticStatus(name="adaspring: perception_node", hardware_id="cpu")
        previous, self.reported = self.reported, counts
        dropped = counts.get("frames_dropped", 0) - previous.get("frames_dropped", 0)
        if not processed:
            status.level, status.message = DiagnosticStatus.WARN, "no frames classified"
        elif dropped > processed:  # most frames never reach the callback: load or transport
            status.level = DiagnosticStatus.WARN
            status.message = (f"serving {metrics.config_id}, but {dropped} of "
                              f"{dropped + processed} frames were dropped")
        else:
            status.level, status.message = DiagnosticStatus.OK, f"serving {metrics.config_id}"
        values = {
            "config_id": metrics.config_id, "fps": f"{metrics.fps:.2f}",
            "cached_variants": str(len(self.cache)), "backbone_sha256": self.backbone.sha256,
            "overhead_ms_p50": f"{_percentile(window['overhead_ms'], 50):.3f}",
            "overhead_ms_p95": f"{_percentile(window['overhead_ms'], 95):.3f}",
            "frame_errors": str(counts.get("frame_errors", 0)),
            "stamps_rejected": str(counts.get("stamps_rejected", 0)),
            "callback_errors": str(self.guard.total),
        }
        for name in ("frames_received", "frames_processed", "frames_dropped", "frames_rejected",
                     "reconfigure_rejected", "swaps"):
            values[name] = str(counts.get(name, 0))
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = metrics.header.stamp
        self.diagnostics_publisher.publish(array)

    def destroy_node(self) -> None:
        if self.timing_log:
            self.timing_log.close()
            self.timing_log = None
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    try:
        with rclpy.init(args=args):
            try:
                node = PerceptionNode()
            # Bad weights, a table of another engine (ValueError), a missing engine.
            except (ValueError, OSError, ParameterException, EngineError) as exc:
                rclpy.logging.get_logger("perception_node").fatal(f"cannot start: {exc}")
                raise SystemExit(2) from None
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            try:
                executor.spin()
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
