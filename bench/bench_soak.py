"""Soak: the perception node for minutes under a 30 Hz camera, swaps every 2 s and CPU contention.

A camera_replay_node publishes 640x480 rgb8 frames at 30 Hz into a real perception_node; this
process sends a Reconfigure every ``--swap-period`` seconds, cycling through several variants,
and runs one busy-loop CPU hog process during the middle third of the run. It measures:

* perception RSS after warm-up (every variant built once) and at the end, and its growth;
* frames: published by the camera (the highest DDS publication sequence number this process saw
  on the image topic), received / processed / dropped / rejected by the node, and whether
  received + dropped covers every publication between the first and the last frame received
  (drops then come only from the keep-last-1 queue, nothing vanishes unaccounted);
* swaps requested / confirmed by the reply / counted by the node; a lost swap is a request whose
  reply did not name the requested variant, or a difference between replies and the counter;
* results from a half-swapped model: every result's config_id must be one that could have been
  active between its image stamp and its arrival here, and every result must equal what
  ``materialise(config_id)`` computes offline for the same replayed frame (the camera loops over
  the first ``LIMIT`` test images, so every frame is a known probe).

Goals: RSS growth <= 5 %, 0 lost swaps, 0 inconsistent results. Measures and prints (never
asserts times); writes the ``soak`` section of docs/benchmarks.md. test/test_soak.py runs a short
version and asserts the invariants.

    .venv/bin/python -m bench.bench_soak [--minutes 10] [--swap-period 2] [--large-images-profile]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from adaspring_ros.demo import domains

ROOT = Path(__file__).resolve().parent.parent

# Unless ROS_DOMAIN_ID is set (the test suite sets its module's), a domain on loopback that no
# other run on this machine uses, set before rclpy loads (inherited by the node processes) and
# held while this process runs.
if "ROS_DOMAIN_ID" not in os.environ:
    _CLAIM = domains.claim_domain(*domains.BENCHMARKS)
    os.environ["ROS_DOMAIN_ID"] = str(_CLAIM.domain_id)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

from adaspring_ros import msg_convert
from adaspring_ros.core import paths
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.serving.replay import parse_labelled_frame_id
from adaspring_ros.demo.graph import ChildProcess as NodeProcess
from adaspring_ros.demo.graph import spin_until

CAMERA = "adaspring_ros.nodes.camera_replay_node"
PERCEPTION = "adaspring_ros.nodes.perception_node"
LIMIT = 50  # the camera loops over the first LIMIT test images: frame seq n shows image n % LIMIT
CONFIGS = (
    CompressionConfig.full(),
    CompressionConfig.smallest(),
    CompressionConfig.from_id("r24-w50d2sk50f-w75d2ck100f-w50d1sk50q"),
    CompressionConfig.from_id("r20-w75d3ck50q-w50d2sk100f-w100d1ck25f"),
)
# Private names, so a soak never talks to another pipeline in the same domain.
TOPICS = {"image": "/soak/image", "result": "/soak/result", "metrics": "/soak/metrics",
          "reconfigure": "/soak/reconfigure"}
SCORE_TOLERANCE = 1e-4  # float32 softmax in the message vs float32 offline
PROFILE = paths.config_dir() / "fastdds_large_images.xml"


def prepare_backbone(workdir: Path) -> tuple[Path, str]:
    """A private copy of the shipped backbone (training may rewrite models/ meanwhile), or a
    randomly initialised one of the same architecture when it is missing or does not verify."""
    from adaspring_ros.core.model.checkpoint import CheckpointError, load_backbone, save_backbone
    from adaspring_ros.core.model.supernet import build_backbone

    path = workdir / "backbone.pt"
    try:
        shutil.copy(paths.default_backbone(), path)
        shutil.copy(f"{paths.default_backbone()}.sha256", f"{path}.sha256")
        load_backbone(path)
        return path, "shipped models/backbone.pt"
    except (CheckpointError, OSError):
        import torch

        torch.manual_seed(0)
        path = workdir / "random_backbone.pt"
        save_backbone(build_backbone(), path)
        return path, "randomly initialised backbone of the shipped architecture"


class Reference:
    """(class, score) of replayed frame ``seq`` computed offline by materialise(config)."""

    def __init__(self, backbone: Path, table: Path | None = None, limit: int = LIMIT) -> None:
        import torch

        from adaspring_ros.core.data import datasets as data
        from adaspring_ros.core.model.checkpoint import load_backbone
        from adaspring_ros.core.model.engine import DEFAULT_ENGINE, make_engine
        from adaspring_ros.core.model.profile_table import load_profile_table
        from adaspring_ros.core.serving.server import VariantBuilder

        torch.set_num_threads(1)  # as the node: the same kernels, the same float results
        self.model = load_backbone(backbone)
        # The node's defaults: the default engine, with the (shipped) table's int8 ranges.
        self.build = VariantBuilder(self.model.materialise, make_engine(DEFAULT_ENGINE),
                                    load_profile_table(table))
        self.limit = limit  # the camera's loop: frame seq n shows image n % limit
        self.images = data.load_fashion_mnist("test").images[:limit]
        self.nets: dict = {}
        self.cache: dict[tuple[str, int], tuple[int, float]] = {}

    def __call__(self, config_id: str, seq: int) -> tuple[int, float]:
        key = (config_id, seq % self.limit)
        if key not in self.cache:
            pixels = msg_convert.image_to_numpy(self.frame(key[1]))
            self.cache[key] = self.classify(config_id, pixels)
        return self.cache[key]

    def frame(self, seq: int):
        """Replayed frame ``seq`` as the camera publishes it (640x480 rgb8 Image)."""
        from sensor_msgs.msg import Image

        from adaspring_ros.core.serving.replay import fit_frame

        frame = fit_frame(self.images[seq % self.limit], 640, 480, "nearest")
        return msg_convert.numpy_to_image(frame, "rgb8", Image)

    def classify(self, config_id: str, pixels) -> tuple[int, float]:
        """(class, score) of decoded ``pixels`` by the variant the node would build."""
        from adaspring_ros.core.data.transforms import preprocess_frame
        from adaspring_ros.core.model.engine import classify_logits

        if config_id not in self.nets:
            config = CompressionConfig.from_id(config_id, self.model.space)
            self.nets[config_id] = self.build(config)
        runner = self.nets[config_id]
        return classify_logits(runner(preprocess_frame(pixels, runner.config.resolution,
                                                       self.model.card)))


@dataclass
class Request:
    sent_ns: int
    config_id: str
    replied_ns: int = 0
    success: bool = False
    active_id: str = ""
    swap_ms: float = float("nan")


@dataclass
class SoakRun:
    """Everything the soak observed; ``summary()`` reduces it to the reported numbers."""

    duration_s: float
    backbone_note: str
    results: list = field(default_factory=list)  # (received ns, InferenceResult)
    requests: list[Request] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (s since start, MB)
    rss_start_mb: float = float("nan")
    # RSS minus pages shared with other processes: Fast DDS shared-memory segments are counted
    # in RSS as their pages are first touched, which is not the node's own growth.
    private: list[tuple[float, float]] = field(default_factory=list)
    private_start_mb: float = float("nan")
    final_metrics: object = None
    published: int = 0
    wire_seen: int = 0
    wire_missed: int = 0
    hog_s: float = 0.0
    inconsistent: list[str] = field(default_factory=list)
    checked: int = 0
    distinguishing: int = 0

    def summary(self) -> dict:
        m = self.final_metrics
        confirmed = sum(r.success and r.active_id == r.config_id for r in self.requests)
        node_swaps = m.swaps
        seqs = [parse_labelled_frame_id(r.header.frame_id)[1]
                for _, r in self.results]
        seqs = [s for s in seqs if s is not None]
        span = (max(seqs) - min(seqs) + 1) if seqs else 0
        rss_end = self.rss[-1][1] if self.rss else float("nan")
        private_end = self.private[-1][1] if self.private else float("nan")
        return {
            "duration_s": self.duration_s,
            "rss_start_mb": self.rss_start_mb,
            "rss_end_mb": rss_end,
            "rss_max_mb": max((mb for _, mb in self.rss), default=float("nan")),
            "rss_growth_percent": 100.0 * (rss_end - self.rss_start_mb) / self.rss_start_mb,
            "private_start_mb": self.private_start_mb,
            "private_end_mb": private_end,
            "private_growth_percent": 100.0 * (private_end - self.private_start_mb)
            / self.private_start_mb,
            "published": self.published,
            "received": m.frames_received,
            "processed": m.frames_processed,
            "dropped": m.frames_dropped,
            "rejected": m.frames_rejected,
            "results_here": len(self.results),
            "wire_missed_percent": 100.0 * self.wire_missed / max(1, self.wire_seen
                                                                   + self.wire_missed),
            # publications between the first and last frame received, minus received + dropped
            "unaccounted": span - (m.frames_received + m.frames_dropped),
            "before_first": min(seqs) if seqs else 0,
            "after_last": self.published - 1 - max(seqs) if seqs else 0,
            "swaps_requested": len(self.requests),
            "swaps_confirmed": confirmed,
            "swaps_counted": node_swaps,
            "lost_swaps": (len(self.requests) - confirmed) + abs(node_swaps - confirmed),
            "results_checked": self.checked,
            "inconsistent": len(self.inconsistent),
            "distinguishing": self.distinguishing,
            "hog_s": self.hog_s,
        }


class Soak:
    """The camera + perception processes, the CPU hog and this process's ROS endpoints."""

    def __init__(self, node, workdir: Path, backbone: Path, rate_hz: float = 30.0) -> None:
        from adaspring_ros.msg import InferenceResult, PerformanceMetrics
        from adaspring_ros.srv import Reconfigure
        from sensor_msgs.msg import Image

        from adaspring_ros.nodes.qos import METRICS_QOS, RESULT_QOS, SENSOR_QOS

        self.node, self.workdir, self.backbone, self.rate_hz = node, workdir, backbone, rate_hz
        self.results: list = []
        self.metrics: list = []
        self.max_image_seq = 0
        # This process's own image subscriber never falls behind (raw, trivial callback), so the
        # publications it misses are lost on the wire, not overwritten in a queue.
        self.seen_here = self.missed_here = 0
        self.perception = NodeProcess.module(PERCEPTION, workdir, "soak_perception", ros_args=[
            "-r", "__node:=soak_perception",
            "-r", f"/adaspring/result:={TOPICS['result']}",
            "-r", f"/adaspring/metrics:={TOPICS['metrics']}",
            "-r", f"/adaspring/perception/reconfigure:={TOPICS['reconfigure']}",
            "-p", f"image_topic:={TOPICS['image']}", "-p", f"backbone_path:={backbone}",
            "-p", "metrics_period_s:=0.5"])
        self.camera: NodeProcess | None = None
        self.subs = [
            node.create_subscription(InferenceResult, TOPICS["result"], self._result, RESULT_QOS),
            node.create_subscription(PerformanceMetrics, TOPICS["metrics"], self.metrics.append,
                                     METRICS_QOS),
            # Raw (never deserialised): only the publication sequence numbers are wanted, to
            # know how many frames the camera published.
            node.create_subscription(Image, TOPICS["image"], self._image, SENSOR_QOS, raw=True),
        ]
        self.client = node.create_client(Reconfigure, TOPICS["reconfigure"])

    @property
    def procs(self) -> list[NodeProcess]:
        return [p for p in (self.camera, self.perception) if p is not None]

    def _result(self, msg) -> None:
        self.results.append((self.node.get_clock().now().nanoseconds, msg))

    def _image(self, _raw: bytes, info) -> None:
        seq = info.get("publication_sequence_number") if isinstance(info, dict) else None
        if isinstance(seq, int) and seq < 2**63:
            if self.max_image_seq and seq > self.max_image_seq + 1:
                self.missed_here += seq - self.max_image_seq - 1
            self.max_image_seq = max(self.max_image_seq, seq)
            self.seen_here += 1

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        spin_until(self.node, predicate, timeout, what, self.procs)

    def start_camera(self) -> None:
        self.wait(self.client.service_is_ready, "the perception node's Reconfigure service")
        self.camera = NodeProcess.module(CAMERA, self.workdir, "soak_camera", ros_args=[
            "-r", "__node:=soak_camera", "-p", f"image_topic:={TOPICS['image']}",
            "-p", f"rate_hz:={self.rate_hz}", "-p", "width:=640", "-p", "height:=480",
            "-p", "encoding:=rgb8", "-p", f"limit:={LIMIT}"])
        count = len(self.results)
        self.wait(lambda: len(self.results) >= count + 10, "the first results")

    def send(self, config: CompressionConfig, requests: list[Request]):
        """Send a Reconfigure; returns its future (the reply is recorded when it arrives)."""
        from adaspring_ros.msg import CompressionConfig as ConfigMsg
        from adaspring_ros.srv import Reconfigure

        request = Request(self.node.get_clock().now().nanoseconds, config.id)
        requests.append(request)
        future = self.client.call_async(
            Reconfigure.Request(config=msg_convert.config_to_msg(config, ConfigMsg)))

        def done(fut) -> None:
            request.replied_ns = self.node.get_clock().now().nanoseconds
            reply = fut.result()
            request.success, request.swap_ms = reply.success, reply.swap_ms
            request.active_id = reply.active.config_id

        future.add_done_callback(done)
        return future

    def fresh_metrics(self):
        start = len(self.metrics)
        self.wait(lambda: len(self.metrics) > start, "a PerformanceMetrics message")
        return self.metrics[-1]

    def memory_mb(self) -> tuple[float, float]:
        """(RSS, RSS minus shared pages) of the perception node, MB."""
        import psutil

        info = psutil.Process(self.perception.proc.pid).memory_info()
        return info.rss / 2**20, (info.rss - info.shared) / 2**20

    def stop_camera_and_drain(self) -> object:
        """Stop the camera, then wait until the node's counters stop moving; final metrics."""
        if self.camera is not None:
            self.camera.stop()
            self.camera = None
        last = self.fresh_metrics()
        while True:
            m = self.fresh_metrics()
            if (m.frames_received, m.frames_processed) == (last.frames_received,
                                                           last.frames_processed):
                return m
            last = m

    def close(self) -> int | None:
        for sub in self.subs:
            self.node.destroy_subscription(sub)
        self.node.destroy_client(self.client)
        self.subs = []
        code = None
        for proc in self.procs:
            code = proc.stop()
        return code  # the perception node's (stopped last)


def check_results(run: SoakRun, reference: Reference) -> None:
    """Every result against the variants that could serve it and against offline materialise."""
    # Variant i may serve from the moment request i is sent until the reply to request i + 1.
    windows = []
    for i, req in enumerate(run.requests):
        end = run.requests[i + 1].replied_ns if i + 1 < len(run.requests) else float("inf")
        if i + 1 < len(run.requests) and not end:
            end = float("inf")  # no reply (a lost swap, counted elsewhere): open-ended
        windows.append((req.sent_ns, end, req.config_id))
    start_id = CONFIGS[0].id  # what the node serves before the first request (initial_config)
    for received_ns, r in run.results:
        stamp = r.header.stamp.sec * 10**9 + r.header.stamp.nanosec
        allowed = {cid for begin, end, cid in windows if begin <= received_ns and end >= stamp}
        if not run.requests or stamp <= run.requests[0].replied_ns:
            allowed.add(start_id)
        _, seq = parse_labelled_frame_id(r.header.frame_id)
        run.checked += 1
        if r.config_id not in allowed:
            run.inconsistent.append(f"frame {seq}: {r.config_id} was not active "
                                    f"(allowed {sorted(allowed)})")
            continue
        cls, score = reference(r.config_id, seq)
        if cls != r.class_id or abs(score - r.score) > SCORE_TOLERANCE:
            run.inconsistent.append(f"frame {seq}: {r.config_id} gives class {cls} p={score:.5f}"
                                    f", the node said {r.class_id} p={r.score:.5f}")
            continue
        others = [reference(c.id, seq)[1] for c in CONFIGS if c.id != r.config_id]
        run.distinguishing += all(abs(o - r.score) > 1e-3 for o in others)


def run_soak(node, workdir: Path, duration_s: float, swap_period_s: float = 2.0,
             hog_window: tuple[float, float] = (1 / 3, 2 / 3),
             log: Callable[[str], None] = print) -> SoakRun:
    """Run the soak with ``node`` (this process's rclpy node) and return what it observed.

    Counters, swaps and results are taken from the node's start (warm-up included), so every
    frame and every swap is accounted for; RSS growth is measured from the end of the warm-up.
    """
    import rclpy

    from adaspring_ros.demo.graph import CpuHog

    backbone, note = prepare_backbone(workdir)
    run = SoakRun(duration_s, note)
    soak = Soak(node, workdir, backbone)
    hog = CpuHog(processes=1)
    try:
        soak.start_camera()
        # Warm-up: build every variant once (the node caches them), back to the first one.
        for config in CONFIGS[1:] + CONFIGS[:1]:
            future = soak.send(config, run.requests)
            soak.wait(future.done, f"the warm-up swap to {config.id}")
        count = len(soak.results)
        soak.wait(lambda: len(soak.results) >= count + 30, "results after warm-up")
        run.rss_start_mb, run.private_start_mb = soak.memory_mb()
        log(f"soak: {duration_s:.0f} s, swap every {swap_period_s:g} s over {len(CONFIGS)} "
            f"variants, perception RSS after warm-up {run.rss_start_mb:.1f} MB")

        start = time.monotonic()
        next_swap, next_rss, next_log, i = start + swap_period_s, start, start + 30, 1
        hog_since = None
        while (now := time.monotonic()) < start + duration_s:
            hog_wanted = hog_window[0] <= (now - start) / duration_s < hog_window[1]
            if hog_wanted and hog_since is None:
                hog.start()
                hog_since = now
            elif not hog_wanted and hog_since is not None:
                hog.stop()
                run.hog_s += now - hog_since
                hog_since = None
            if now >= next_swap and run.requests[-1].replied_ns:  # never two swaps in flight
                soak.send(CONFIGS[i % len(CONFIGS)], run.requests)
                i += 1
                next_swap += swap_period_s
            if now >= next_rss:
                rss, private = soak.memory_mb()
                run.rss.append((now - start, rss))
                run.private.append((now - start, private))
                next_rss += 5.0
            if now >= next_log and soak.metrics:
                m = soak.metrics[-1]
                log(f"  {now - start:5.0f} s: received {m.frames_received}, processed "
                    f"{m.frames_processed}, dropped {m.frames_dropped}, swaps {m.swaps}, "
                    f"RSS {run.rss[-1][1]:.1f} MB, hog {'on' if hog_since else 'off'}")
                next_log += 30
            for p in soak.procs:
                if not p.alive():
                    raise RuntimeError(f"{p.name} died: {p.output()[-2000:]}")
            rclpy.spin_once(node, timeout_sec=0.01)
        if hog_since is not None:
            hog.stop()
            run.hog_s += time.monotonic() - hog_since
        soak.wait(lambda: bool(run.requests[-1].replied_ns), "the last Reconfigure reply")
        rss, private = soak.memory_mb()
        run.rss.append((time.monotonic() - start, rss))
        run.private.append((time.monotonic() - start, private))
        run.final_metrics = soak.stop_camera_and_drain()
        # Results published in the node's last window may still be on their way here.
        deadline = time.monotonic() + 5
        while (len(soak.results) < run.final_metrics.frames_processed
               and time.monotonic() < deadline):
            rclpy.spin_once(node, timeout_sec=0.05)
        run.published = soak.max_image_seq
        run.wire_seen, run.wire_missed = soak.seen_here, soak.missed_here
        run.results = soak.results
    finally:
        hog.stop()
        code = soak.close()
    if code not in (0, None):
        raise RuntimeError(f"perception node exited with {code}")
    log(f"checking {len(run.results)} results against offline materialise ...")
    check_results(run, Reference(backbone))
    return run


def report(run: SoakRun) -> str:
    """The docs/benchmarks.md section body."""
    from bench.report import markdown_table

    s = run.summary()
    goal_rss = "met" if s["rss_growth_percent"] <= 5.0 else "MISSED"
    rows = [
        ["perception RSS after warm-up -> end (max)",
         f"{s['rss_start_mb']:.1f} -> {s['rss_end_mb']:.1f} MB ({s['rss_max_mb']:.1f})",
         f"growth {s['rss_growth_percent']:+.2f} % (goal <= 5 %: {goal_rss})"],
        ["perception RSS minus shared pages, after warm-up -> end",
         f"{s['private_start_mb']:.1f} -> {s['private_end_mb']:.1f} MB",
         f"growth {s['private_growth_percent']:+.2f} % (shared: DDS segments, libraries)"],
        ["frames published by the camera", s["published"],
         f"{s['before_first']} before the node's first frame (start-up), "
         f"{s['after_last']} after its last"],
        ["frames received / processed / dropped / rejected",
         f"{s['received']} / {s['processed']} / {s['dropped']} / {s['rejected']}",
         f"unaccounted (publications in the received span - received - dropped): "
         f"{s['unaccounted']}"],
        ["results received by this process", s["results_here"], ""],
        ["frames a second, never-busy subscriber (this process) missed",
         f"{s['wire_missed_percent']:.1f} %",
         "lost on the best-effort wire, not in a queue: part of the node's dropped count"],
        ["swaps requested / confirmed by reply / counted by the node",
         f"{s['swaps_requested']} / {s['swaps_confirmed']} / {s['swaps_counted']}",
         f"lost swaps: {s['lost_swaps']} (goal 0)"],
        ["results checked (window + offline materialise)", s["results_checked"],
         f"inconsistent: {s['inconsistent']} (goal 0); the variants disagree on "
         f"{100.0 * s['distinguishing'] / max(1, s['results_checked']):.0f} % of them, so the "
         "check discriminates"],
        ["CPU hog (1 busy process) on", f"{s['hog_s']:.0f} s of {s['duration_s']:.0f} s", ""],
    ]
    growth = ", ".join(f"{t:.0f} s: {mb:.1f}" for t, mb in run.rss[::max(1, len(run.rss) // 12)])
    examples = "".join(f"\n- {line}" for line in run.inconsistent[:5])
    return "\n\n".join([
        f"Backbone: {run.backbone_note}. camera_replay_node at 30 Hz, 640x480 rgb8 (first {LIMIT}"
        f" Fashion-MNIST test images, looping) into a real perception_node (defaults: 1 torch "
        f"thread, cache of 8); a Reconfigure every 2 s cycling through {len(CONFIGS)} variants "
        f"({', '.join(c.id for c in CONFIGS)}); one busy-loop process during the middle third. "
        "Separate processes on a 2-core machine shared with other work, Fast DDS on loopback "
        + (f"with {PROFILE.name} for every process (32 MB shared-memory segment)."
           if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") == str(PROFILE) else
           "with its defaults (not config/fastdds_large_images.xml: the 512 KB shared-memory "
           "segment is smaller than a frame, which the wire-loss row shows)."),
        markdown_table(["what", "value", "note"], rows),
        f"Perception RSS (MB) over the run: {growth}.",
        "Dropped frames are counted exactly from DDS publication sequence numbers: frames the "
        "keep-last-1 queue overwrote while one was classified, plus frames lost on the "
        "best-effort wire (the row above estimates that share); a result is inconsistent when "
        "its config_id could not have been serving between its image stamp and its arrival, or "
        "when its class/score differ from materialise(config_id) run offline on the same frame."
        + (f"\n\nFirst inconsistencies:{examples}" if examples else ""),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    parser.add_argument("--swap-period", type=float, default=2.0, help="seconds between swaps")
    parser.add_argument("--large-images-profile", action="store_true",
                        help=f"run every process with config/{PROFILE.name} (its own section)")
    args = parser.parse_args(argv)
    if args.large_images_profile:  # before rclpy starts; the node processes inherit it
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    import rclpy

    workdir = Path(tempfile.mkdtemp(prefix="adaspring-soak-"))
    os.environ.setdefault("ROS_LOG_DIR", str(workdir / "ros"))   # this process's own ROS logs
    rclpy.init()
    node = rclpy.create_node("bench_soak")
    try:
        run = run_soak(node, workdir, args.minutes * 60.0, args.swap_period,
                       log=lambda line: print(line, flush=True))
    except BaseException:
        print(f"the nodes' logs of this soak: {workdir}", flush=True)
        raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    shutil.rmtree(workdir, ignore_errors=True)
    from bench.report import write_section

    command = "python -m bench.bench_soak" + (f" --minutes {args.minutes:g}"
                                              if args.minutes != 10.0 else "")
    name, title = "soak", f"Soak: {args.minutes:g} minutes of frames, swaps and CPU contention"
    if args.large_images_profile:
        command += " --large-images-profile"
        name, title = "soak_large_images", title + f", with {PROFILE.name}"
    write_section(name, title, command, report(run))
    print("summary:", run.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
