"""Benchmark of the perception node as a real process fed by the replay camera over real DDS.

* ROS overhead per frame at 640x480 rgb8 (and 28x28 mono8 for scale): image callback entry ->
  InferenceResult published, minus the model forward, from the node's per-frame timing log
  (``timing_log`` parameter); plus stamp -> result received by this process.
* Reconfigure swap time as seen by the client (call -> reply) and as reported by the node
  (``swap_ms``): first build of a variant vs a cached variant, while frames stream at 30 Hz.
* Resident memory of the perception node after warm-up, after the cached swaps and after many
  swaps that keep building and evicting variants (default cache of 8).

Backbone: the shipped models/backbone.pt when it loads, else a randomly initialised one of the
same architecture (timings do not depend on the weights; the section says which).
Measures and prints; writes the ``ros_perception`` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_ros_perception [--frames 600] [--churn 200]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "test")]
# A private ROS domain on loopback, set before rclpy loads (inherited by the node processes).
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="adaspring-bench-roslog-"))

import psutil  # noqa: E402
import rclpy  # noqa: E402
from ros_harness import NodeProcess, spin_until  # noqa: E402

from adaspring_ros import msg_convert, paths  # noqa: E402
from adaspring_ros.core.config import DEFAULT_SPACE, CompressionConfig  # noqa: E402
from adaspring_ros.core.profiler import stratified_sample  # noqa: E402
from bench.report import markdown_table, spread, write_section  # noqa: E402

CAMERA = "adaspring_ros.nodes.camera_replay_node"
PERCEPTION = "adaspring_ros.nodes.perception_node"


def backbone_path(workdir: Path) -> tuple[Path, str]:
    from adaspring_ros.core.supernet import (
        CheckpointError,
        build_backbone,
        load_backbone,
        save_backbone,
    )

    try:
        load_backbone(paths.default_backbone())
        return paths.default_backbone(), "shipped models/backbone.pt"
    except CheckpointError as exc:
        print(f"shipped backbone not usable ({exc}); using a random one", file=sys.stderr)
        path = workdir / "random_backbone.pt"
        save_backbone(build_backbone(), path)
        return path, "randomly initialised backbone of the shipped architecture"


class Session:
    """A camera + perception node pair and this process's client node."""

    def __init__(self, node, workdir: Path, backbone: Path, width: int, height: int,
                 encoding: str, extra: list[str] = ()) -> None:
        from adaspring_ros.msg import InferenceResult, PerformanceMetrics
        from adaspring_ros.srv import Reconfigure

        from adaspring_ros.nodes.qos import METRICS_QOS, RESULT_QOS

        self.node = node
        self.timing = workdir / f"timing-{width}x{height}-{encoding}.csv"
        self.camera = NodeProcess.module(CAMERA, workdir, f"camera-{encoding}", ros_args=[
            "-p", f"width:={width}", "-p", f"height:={height}", "-p", f"encoding:={encoding}",
            "-p", "rate_hz:=30.0"])
        self.perception = NodeProcess.module(PERCEPTION, workdir, f"perception-{encoding}",
                                             ros_args=["-p", f"backbone_path:={backbone}",
                                                       "-p", f"timing_log:={self.timing}",
                                                       *extra])
        self.results: list[tuple[float, object]] = []
        self.metrics: list = []
        self.subs = [
            node.create_subscription(InferenceResult, "/adaspring/result", self._result,
                                     RESULT_QOS),
            node.create_subscription(PerformanceMetrics, "/adaspring/metrics",
                                     self.metrics.append, METRICS_QOS),
        ]
        self.client = node.create_client(Reconfigure, "/adaspring/perception/reconfigure")
        self.process = psutil.Process(self.perception.proc.pid)

    def _result(self, msg) -> None:
        self.results.append((self.node.get_clock().now().nanoseconds, msg))

    def wait(self, predicate, what: str, timeout: float = 60.0) -> None:
        spin_until(self.node, predicate, timeout, what, [self.camera, self.perception])

    def frames(self, count: int) -> None:
        start = len(self.results)
        self.wait(lambda: len(self.results) >= start + count, f"{count} results",
                  timeout=30 + count / 10)

    def swap(self, config: CompressionConfig) -> tuple[float, float]:
        """(client round trip ms, node-reported swap ms) of one Reconfigure."""
        from adaspring_ros.msg import CompressionConfig as ConfigMsg
        from adaspring_ros.srv import Reconfigure

        self.wait(self.client.service_is_ready, "the Reconfigure service")
        request = Reconfigure.Request(config=msg_convert.config_to_msg(config, ConfigMsg))
        start = time.perf_counter()
        future = self.client.call_async(request)
        self.wait(future.done, f"the reply to {config.id}")
        rtt = (time.perf_counter() - start) * 1e3
        reply = future.result()
        if not reply.success:
            raise RuntimeError(reply.message)
        return rtt, reply.swap_ms

    def fresh_metrics(self):
        """The first PerformanceMetrics published after now."""
        start = len(self.metrics)
        self.wait(lambda: len(self.metrics) > start, "a PerformanceMetrics message")
        return self.metrics[-1]

    def rss_mb(self) -> float:
        return self.process.memory_info().rss / 2**20

    def close(self) -> None:
        if self.client is None:
            return
        for sub in self.subs:
            self.node.destroy_subscription(sub)
        self.node.destroy_client(self.client)
        self.client = None
        self.camera.stop()
        self.perception.stop()


def overhead_rows(session: Session, label: str, frames: int) -> list[list]:
    session.frames(30)  # warm-up, discovery
    start = len(session.results)
    session.frames(frames)
    e2e = [(t - (r.header.stamp.sec * 10**9 + r.header.stamp.nanosec)) / 1e6
           for t, r in session.results[start:]]
    m = session.metrics[-1]
    session.close()  # the node flushes its timing log when it shuts down
    with open(session.timing) as fh:
        rows = list(csv.DictReader(fh))[-frames:]
    table = []
    for name, values in (
        ("ROS overhead (callback - forward)", [float(r["overhead_ms"]) for r in rows]),
        ("model forward", [float(r["forward_ms"]) for r in rows]),
        ("callback total", [float(r["callback_ms"]) for r in rows]),
        ("stamp -> result received", e2e),
    ):
        s = spread(values)
        table.append([label, name, len(values), s["p50"], s["p95"], s["max"]])
    table.append([label, "frames received / processed / dropped",
                  f"{m.frames_received} / {m.frames_processed} / {m.frames_dropped}", "", "", ""])
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=600, help="frames timed per image format")
    parser.add_argument("--cached-rounds", type=int, default=10,
                        help="rounds over the cached variants")
    parser.add_argument("--churn", type=int, default=200,
                        help="swaps over more variants than the cache holds")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="adaspring-bench-ros-"))
    backbone, backbone_note = backbone_path(workdir)
    rclpy.init()
    node = rclpy.create_node("bench_ros_perception")
    overhead, swaps, memory = [], [], []
    try:
        for width, height, encoding in ((640, 480, "rgb8"), (28, 28, "mono8")):
            session = Session(node, workdir, backbone, width, height, encoding)
            try:
                label = f"{width}x{height} {encoding}"
                print(f"timing {args.frames} frames at {label} ...", flush=True)
                overhead += overhead_rows(session, label, args.frames)
            finally:
                session.close()

        session = Session(node, workdir, backbone, 640, 480, "rgb8")
        try:
            session.frames(100)
            memory.append(["after warm-up (100 frames, full variant)", session.rss_mb()])
            # The last 36 of the sample are random variants (the first are full, smallest and
            # the uniform ones); 6 of them + full fit the cache of 8, the other 30 do not.
            configs = stratified_sample(DEFAULT_SPACE, 36, seed=1)[-36:]
            cached_set = configs[:6] + [CompressionConfig.full()]
            before, began = session.fresh_metrics(), time.monotonic()
            print("first builds ...", flush=True)
            first = [session.swap(c) for c in cached_set[:-1]]
            print("cached swaps ...", flush=True)
            cached = [session.swap(c) for _ in range(args.cached_rounds) for c in cached_set]
            session.frames(10)
            memory.append([f"after {len(first) + len(cached)} swaps over "
                           f"{len(cached_set)} cached variants", session.rss_mb()])
            churn_set = configs[6:]
            print(f"{args.churn} swaps over {len(churn_set)} variants (cache 8) ...", flush=True)
            churn = [session.swap(churn_set[i % len(churn_set)]) for i in range(args.churn)]
            session.frames(10)
            memory.append([f"after {args.churn} more swaps over {len(churn_set)} variants "
                           "(build + evict)", session.rss_mb()])
            swapping_s = time.monotonic() - began
            m = session.fresh_metrics()
            for name, values in (("first build", first), ("cached", cached),
                                 ("build after eviction (churn)", churn)):
                for side, index in (("client call -> reply", 0), ("node swap_ms", 1)):
                    s = spread([v[index] for v in values])
                    swaps.append([name, side, len(values), s["p50"], s["p95"], s["max"]])
            frames_note = (
                f"While swapping ({m.swaps - before.swaps} swaps in {swapping_s:.1f} s, with "
                "the camera at 30 Hz) the node received "
                f"{m.frames_received - before.frames_received} frames, processed "
                f"{m.frames_processed - before.frames_processed}, dropped "
                f"{m.frames_dropped - before.frames_dropped}, rejected "
                f"{m.frames_rejected - before.frames_rejected}.")
        finally:
            session.close()
    finally:
        node.destroy_node()
        rclpy.try_shutdown()

    body = "\n\n".join([
        f"Backbone: {backbone_note}. Camera: replay node at 30 Hz; perception node with its "
        "defaults (1 torch thread, cache of 8 variants); both separate processes on one "
        "2-core machine shared with other work, Fast DDS on loopback.",
        "### ROS overhead per frame (ms)\n\nFrom the node's per-frame timing log: callback entry "
        "-> InferenceResult published, minus the forward pass (decode, preprocess, result "
        "message, publish). Goal: p50 <= 2 ms at 640x480 rgb8.\n\n" + markdown_table(
            ["image", "what", "n", "p50", "p95", "max"], overhead),
        "### Reconfigure swap time (ms)\n\nClient round trip includes DDS service transport; "
        "the node's swap_ms is request received -> new variant serving (lookup or build + one "
        "warm-up forward).\n\n" + markdown_table(["swap", "measured by", "n", "p50", "p95", "max"],
                                                swaps) + "\n\n" + frames_note,
        "### Perception node resident memory (goal <= 400 MB)\n\n" + markdown_table(
            ["when", "RSS MB"], memory),
    ])
    write_section("ros_perception", "ROS perception node: overhead, swaps, memory",
                  "python -m bench.bench_ros_perception", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
