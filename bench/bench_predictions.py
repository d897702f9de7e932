"""Benchmark: does the evolution policy predict the forward time the perception node will see?

The real perception node (ONNX Runtime, the shipped backbone and table) is fed by the replay
camera (640x480 rgb8) at 10 Hz and at 30 Hz; this process pins variants across the table with
the Reconfigure service (full, the fastest within 1.5 points of it, the smallest config and two
between) and records the node's PerformanceMetrics windows. The
prediction for each variant is the one the policy makes when it considers swapping to it: an
:class:`~adaspring_ros.core.policy.evolution.Evolver` (the evolution node's policy object) fed
the windows of the variant served before it, as the evolution node feeds it, then asked for its
prediction (``Evolver.predicted_forward_ms``). Goal: live forward p50 / predicted within
0.75..1.25 for every variant at both rates. Also printed: the same ratio for every pair (each
variant predicted from each other one's windows) and the load of the machine during the run.

Measures and prints; writes the ``predictions`` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_predictions [--seconds 8] [--rates 10 30]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from adaspring_ros import msg_convert
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.profile_table import (
    ProfileEntry,
    ProfileTable,
    fastest_within,
    load_profile_table,
    pareto_front,
)
from adaspring_ros.core.policy.evolution import Evolver
from adaspring_ros.core.policy.psutil_source import PsutilSource
from adaspring_ros.demo import graph as processes
from adaspring_ros.demo import run as demo
from bench.report import markdown_table, write_section

SETTLE_S = 1.5  # windows that may mix two variants (or a cold first build) are left out


def pick_variants(table: ProfileTable) -> list[tuple[str, ProfileEntry]]:
    """Full, the fastest within 1.5 points of it, two front variants between the two (equal
    steps in log latency) and the smallest config, in the order they are pinned: slowest,
    fastest, second slowest, second fastest..., so that each is predicted from the windows of
    a variant of very different size."""
    full = table.get(CompressionConfig.full().id)
    fast = fastest_within(table.entries, full.id, 1.5)
    front = [e for e in pareto_front(table.entries)
             if fast.latency_ms_p50 < e.latency_ms_p50 < full.latency_ms_p50]
    picked = [("full", full), ("fastest within 1.5 pt", fast)]
    for k in (1, 2):
        target = fast.latency_ms_p50 * (full.latency_ms_p50 / fast.latency_ms_p50) ** (k / 3)
        between = min(front, key=lambda e: abs(math.log(e.latency_ms_p50 / target)))
        if all(between.id != e.id for _, e in picked):
            picked.append((f"between {k}", between))
    smallest = table.get(CompressionConfig.smallest().id)
    if smallest is not None:
        picked.append(("smallest", smallest))
    slow_first = sorted(picked, key=lambda p: -p[1].latency_ms_p50)
    return [slow_first[k // 2] if k % 2 == 0 else slow_first[-1 - k // 2]
            for k in range(len(slow_first))]


class Pinning:
    """This process's node: pins variants with Reconfigure, records every PerformanceMetrics
    window with the context the context node's psutil source would report beside it."""

    def __init__(self, children: processes.ChildProcesses) -> None:
        from adaspring_ros.msg import PerformanceMetrics
        from adaspring_ros.srv import Reconfigure
        from rclpy.node import Node

        from adaspring_ros.nodes import qos

        self.children = children
        self.node = Node("bench_predictions")
        self.events: list[dict] = []  # windows and pins, in time order
        self.psutil: PsutilSource | None = None
        self.subscription = self.node.create_subscription(
            PerformanceMetrics, qos.METRICS_TOPIC, self.metrics_callback, qos.METRICS_QOS)
        self.client = self.node.create_client(Reconfigure, qos.RECONFIGURE_SERVICE)

    def watch_load(self) -> None:
        """From now, "others" is the machine less this benchmark and its nodes."""
        pids = [os.getpid()] + [c.proc.pid for c in self.children.procs.values()]
        self.psutil = PsutilSource(own_pids=pids)

    def metrics_callback(self, msg) -> None:
        load = self.psutil.sample(100.0).cpu_load_other_percent if self.psutil else math.nan
        self.events.append({
            "kind": "window", "time": time.monotonic(), "config_id": msg.config_id,
            "p50": float(msg.model_latency_ms_p50), "p95": float(msg.model_latency_ms_p95),
            "non_model_ms": float(msg.non_model_latency_ms_p50),
            "energy_mj": float(msg.energy_per_frame_mj), "fps": float(msg.fps),
            "max_rate_hz": float(msg.max_rate_hz), "load": load})

    def windows(self) -> list[dict]:
        return [e for e in self.events if e["kind"] == "window"]

    def wait(self, predicate, what: str, timeout: float = 60.0) -> None:
        processes.spin_until(self.node, predicate, timeout, what,
                             self.children.procs.values(), processes.GraphError)

    def pin(self, config: CompressionConfig, rate_hz: float, label: str) -> float:
        """Swap the perception node to ``config``; the time the reply came."""
        from adaspring_ros.msg import CompressionConfig as ConfigMsg
        from adaspring_ros.srv import Reconfigure

        self.wait(self.client.service_is_ready, "the Reconfigure service")
        future = self.client.call_async(Reconfigure.Request(
            config=msg_convert.config_to_msg(config, ConfigMsg)))
        self.wait(future.done, f"the reply to {config.id}")
        if not future.result().success:
            raise processes.GraphError(future.result().message)
        now = time.monotonic()
        self.events.append({"kind": "pin", "time": now, "config_id": config.id,
                            "rate_hz": rate_hz, "label": label})
        return now

    def hold(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.wait(lambda: time.monotonic() >= end, "time to pass", seconds + 30)


def measure(rate_hz: float, variants: list[tuple[str, ProfileEntry]], seconds: float,
            children: processes.ChildProcesses, pinning: Pinning) -> None:
    """Each variant pinned for ``seconds`` with the camera at ``rate_hz``."""
    camera = children.start_node("camera_replay_node", demo.default_params_file(),
                                 {"rate_hz": rate_hz}, name=f"camera_{rate_hz:g}hz")
    try:
        pinning.watch_load()
        start = len(pinning.windows())
        pinning.wait(lambda: len(pinning.windows()) >= start + 3, "metrics at the new rate", 90)
        for label, entry in variants:
            pinning.pin(entry.config, rate_hz, label)
            pinning.hold(seconds)
            print(f"  {rate_hz:g} Hz: {label}", flush=True)
    finally:
        children.stop(camera.name)


def live_p50(events: list[dict], pin: dict, settle_s: float = SETTLE_S) -> tuple[float, int]:
    """Median of the windows' forward p50 of the variant ``pin`` put in (from ``settle_s`` after
    it to the next pin), and how many windows."""
    later = [e["time"] for e in events if e["kind"] == "pin" and e["time"] > pin["time"]]
    end = min(later, default=math.inf)
    p50s = [e["p50"] for e in events
            if e["kind"] == "window" and e["config_id"] == pin["config_id"]
            and pin["time"] + settle_s <= e["time"] < end and math.isfinite(e["p50"])]
    return (statistics.median(p50s) if p50s else math.nan), len(p50s)


def feed(evolver: Evolver, event: dict) -> None:
    """One recorded event, as the evolution node hands it to its policy."""
    from adaspring_ros.core.policy.context import Context

    now = event["time"]
    if event["kind"] == "pin":
        evolver.swap_done(event["config_id"], now)  # a swap the node reports as done
        return
    if math.isfinite(event["load"]):
        evolver.observe_context(Context(cpu_load_other_percent=event["load"],
                                        latency_budget_ms=100.0, source="psutil"), now)
    evolver.observe_metrics(event["config_id"], event["p50"], event["p95"], now,
                            non_model_ms=event["non_model_ms"],
                            energy_per_frame_mj=event["energy_mj"],
                            max_rate_hz=event["max_rate_hz"])


def in_sequence(table: ProfileTable, events: list[dict]) -> list[dict]:
    """The policy as the evolution node runs it through the whole recording: before each pin,
    what it predicts for the variant pinned (from the windows of those served before)."""
    evolver = Evolver(table)
    rows = []
    for event in events:
        if event["kind"] == "pin":
            live, windows = live_p50(events, event)
            rows.append({**event, "predicted": evolver.predict(event["config_id"]).latency_ms_p50,
                         "live": live, "windows": windows,
                         "cold_ms": evolver.estimator.cold_ms,
                         "contention": evolver.estimator.contention})
        feed(evolver, event)
    return rows


def from_each_other(table: ProfileTable, events: list[dict], pins: list[dict]) -> list[float]:
    """live / predicted for every variant from the windows of each other one alone (a fresh
    policy that has seen only that one): the cold-start term of the table, no refit."""
    ratios = []
    for seen in pins:
        later = [e["time"] for e in pins if e["time"] > seen["time"]]
        end = min(later, default=math.inf)
        evolver = Evolver(table)
        feed(evolver, seen)
        for event in events:
            if event["kind"] == "window" and seen["time"] <= event["time"] < end:
                feed(evolver, event)
        for other in pins:
            if other is not seen:
                live, _ = live_p50(events, other)
                ratios.append(live / evolver.predict(other["config_id"]).latency_ms_p50)
    return ratios


def report(table: ProfileTable, events: list[dict], rates: list[float], args,
           load: tuple[tuple[float, ...], tuple[float, ...]]) -> bool:
    ratio_only = replace(table, cold_start_ms=None)
    rows = in_sequence(table, events)
    body, ok = [], True
    lines = []
    for rate in rates:
        pins = [e for e in events if e["kind"] == "pin" and e["rate_hz"] == rate]
        mine = [r for r in rows if r["rate_hz"] == rate]
        for r in mine:
            r["ratio"] = r["live"] / r["predicted"]
            ok &= 0.75 <= r["ratio"] <= 1.25
        cross = from_each_other(table, events, pins)
        old = from_each_other(ratio_only, events, pins)
        lines.append(f"- {rate:g} Hz: every variant predicted from each other one's windows "
                     f"alone ({len(cross)} pairs): live / predicted {min(cross):.2f}-"
                     f"{max(cross):.2f} with the table's cold-start term, "
                     f"{min(old):.2f}-{max(old):.2f} with the ratio alone.")
        body += [[f"{rate:g} Hz", r["label"], f"`{r['config_id']}`",
                  table.get(r["config_id"]).latency_ms_p50, r["live"], r["windows"],
                  r["predicted"], r["cold_ms"], r["contention"], f"{r['ratio']:.2f}"]
                 for r in mine]
    loads = [e["load"] for e in events if e["kind"] == "window" and math.isfinite(e["load"])]
    text = [
        "Perception node (ONNX Runtime, shipped backbone and table, cold_start_ms "
        + (f"{table.cold_start_ms:.3f}" if table.cold_start_ms is not None else "not measured")
        + ") fed by "
        f"the replay camera (640x480 rgb8); each variant pinned {args.seconds:g} s per rate "
        f"with Reconfigure, windows from {SETTLE_S:g} s after the swap. \"predicted\" is "
        "`Evolver.predict(variant).latency_ms_p50` of a policy fed every window and swap "
        "recorded before the pin, as the evolution node feeds it (context: the machine's "
        "load as the context node's psutil source reports it): contention x (table p50 + "
        "cold-start term). \"cold ms\" and \"contention\" are its estimate at that moment.",
        "",
        markdown_table(["rate", "variant", "config", "table p50 ms", "live p50 ms", "windows",
                        "predicted p50 ms", "cold ms", "contention", "live / predicted"],
                       body),
        "",
        *lines,
        "",
        f"Load: the other processes' CPU during the windows {statistics.median(loads):.0f} % "
        f"median ({min(loads):.0f}-{max(loads):.0f} %) of {os.cpu_count()} cores; load "
        f"average {load[0][0]:.2f} before, {load[1][0]:.2f} after (other engineers' work).",
        "",
        f"Goal: live / predicted within 0.75-1.25 for every variant at every rate: "
        f"{'met' if ok else 'NOT met'}.",
    ]
    write_section("predictions", "Predicted vs live forward time (bench_predictions)",
                  "python -m bench.bench_predictions " + " ".join(sys.argv[1:]),
                  "\n".join(text))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="seconds each variant is pinned at each rate (8)")
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--dump", type=Path, help="also write the recording as JSON here")
    parser.add_argument("--from-dump", type=Path,
                        help="report a recording written by --dump instead of measuring")
    args = parser.parse_args()
    table = load_profile_table()
    if args.from_dump:
        data = json.loads(args.from_dump.read_text())
        report(table, data["events"], data["rates"], args, data["load"])
        return 0
    import psutil
    import rclpy

    variants = pick_variants(table)
    workdir = Path(tempfile.mkdtemp(prefix="adaspring-bench-predictions-"))
    env = processes.ros_environment(workdir)
    processes.use_environment(env)
    rclpy.init()
    children = processes.ChildProcesses(env, workdir / "logs")
    load0 = psutil.getloadavg()
    try:
        pinning = Pinning(children)
        children.start_node("perception_node", demo.default_params_file(),
                            {"initial_config": "full"})
        for rate in args.rates:
            measure(rate, variants, args.seconds, children, pinning)
    finally:
        children.stop_all()
        rclpy.try_shutdown()
    load = (load0, psutil.getloadavg())
    if args.dump:
        args.dump.write_text(json.dumps({"events": pinning.events, "rates": args.rates,
                                         "load": load}, indent=1))
    report(table, pinning.events, args.rates, args, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
