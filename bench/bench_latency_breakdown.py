"""Where a 640x480 frame's time goes, from the camera's publish to the result's subscriber.

A camera stand-in in this process publishes 640x480 rgb8 frames at 10 Hz (the stamp is taken just
before ``publish``) and subscribes to the results; the perception node runs as a real process
with its per-frame timing log. Per frame:

    camera publish      the camera's publish() call (serialising 900 KB into shared memory)
    transport + wake-up publish returned -> the node's image callback starts
    decode + preprocess callback start -> forward starts (core/data/datasets.py preprocess)
    forward             the variant's forward pass
    result publish      forward done -> InferenceResult published
    result -> subscriber result published -> this process's callback
    end to end          stamp -> result received

Run calm and with one busy-loop process per core (the demo's CPU hog), each for the perception
node's full model and a small variant. The last row is the node process's CPU per classified
frame (user + system, all its threads, over the timed frames): what the demo's energy meter
counts. ``--model colour`` runs the shipped colour backbone (as ``adaspring demo --model``);
``--source NAME=DIR`` (repeatable) runs the node from another source tree as well, e.g. a
``git worktree`` of an earlier commit, the columns alternated over ``--rounds``, so two versions
of the node are measured side by side. Prints the table and writes the ``latency_breakdown``
section of docs/benchmarks.md (``--no-write`` leaves it).

    .venv/bin/python -m bench.bench_latency_breakdown [--frames 300] [--model colour]
        [--configs full] [--calm-only] [--source old=/tmp/wt --rounds 3 --no-write]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from adaspring_ros import msg_convert
from adaspring_ros.core.serving.replay import labelled_frame_id, parse_labelled_frame_id
from adaspring_ros.demo import graph as processes
from adaspring_ros.demo import run as demo
from adaspring_ros.demo.model import resolve_model
from bench.report import markdown_table, write_section

STAGES = ("camera publish", "transport + wake-up", "decode + preprocess", "forward",
          "result publish", "result -> subscriber", "end to end")


def run(frames: int, hog: bool, config: str, workdir: Path, env: dict[str, str],
        node_params: dict[str, object] | None = None) -> dict:
    """One run: ``frames`` frames through a fresh perception node (``node_params`` on top of
    the demo's); per-stage samples in ms and the node's CPU ms per classified frame."""
    import psutil
    import rclpy
    from adaspring_ros.msg import InferenceResult
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from adaspring_ros.nodes import qos

    timing = workdir / f"timing-{config}-{int(hog)}-{time.monotonic_ns()}.csv"
    children = processes.ChildProcesses(env, workdir / "logs")
    node = Node("latency_breakdown_camera")
    publisher = node.create_publisher(Image, qos.IMAGE_TOPIC, qos.IMAGE_QOS)
    received: dict[int, int] = {}
    publish_ms: dict[int, float] = {}
    stamps: dict[int, int] = {}

    def result_callback(msg) -> None:
        _label, seq = parse_labelled_frame_id(msg.header.frame_id)
        if seq is not None:
            received[seq] = time.time_ns()

    node.create_subscription(InferenceResult, qos.RESULT_TOPIC, result_callback, qos.RESULT_QOS)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    image = msg_convert.numpy_to_image(pixels, "rgb8", Image)
    cpu_hog = processes.CpuHog()
    try:
        perception = children.start_node(
            "perception_node", demo.default_params_file(),
            {**(node_params or {}), "initial_config": config, "timing_log": str(timing)})
        process = psutil.Process(perception.proc.pid)
        deadline = time.time() + 60
        seq = -1
        warm = 20
        next_at = time.time()
        while len(received) < 3 or seq < warm:  # the node is up and has classified frames
            children.check("starting")
            if time.time() > deadline:
                raise RuntimeError("the perception node classified nothing in 60 s")
            if time.time() >= next_at:
                seq += 1
                image.header.frame_id = labelled_frame_id("camera", 0, seq)
                image.header.stamp = node.get_clock().now().to_msg()
                publisher.publish(image)
                next_at += 0.1
            rclpy.spin_once(node, timeout_sec=0.005)
        if hog:
            cpu_hog.start()
        first = seq + 1
        next_at = time.time() + (1.0 if hog else 0.1)  # let the hog get going
        cpu_before, done_before = sum(process.cpu_times()[:2]), len(received)
        while seq < first + frames:
            now = time.time()
            if now >= next_at:
                seq += 1
                image.header.frame_id = labelled_frame_id("camera", 0, seq)
                stamp = node.get_clock().now()
                image.header.stamp = stamp.to_msg()
                t0 = time.perf_counter()
                publisher.publish(image)
                publish_ms[seq] = (time.perf_counter() - t0) * 1e3
                stamps[seq] = stamp.nanoseconds
                next_at += 0.1
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.005, next_at - time.time())))
        end = time.time() + 2.0
        while time.time() < end:
            rclpy.spin_once(node, timeout_sec=0.01)
        cpu_ms = (sum(process.cpu_times()[:2]) - cpu_before) * 1e3 / max(
            len(received) - done_before, 1)
    finally:
        cpu_hog.stop()
        children.stop_all()
        node.destroy_node()
    rows = {}
    with open(timing) as f:
        for row in csv.DictReader(f):
            rows[int(row["stamp_ns"])] = row
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    missing = 0
    for s, stamp_ns in stamps.items():
        row = rows.get(stamp_ns)
        if row is None or s not in received:
            missing += 1
            continue
        start_ns = int(row["received_ns"])
        callback = float(row["callback_ms"])
        forward = float(row["forward_ms"])
        pre = float(row["preprocess_ms"])
        samples["camera publish"].append(publish_ms[s])
        samples["transport + wake-up"].append((start_ns - stamp_ns) / 1e6 - publish_ms[s])
        samples["decode + preprocess"].append(pre)
        samples["forward"].append(forward)
        samples["result publish"].append(callback - pre - forward)
        samples["result -> subscriber"].append((received[s] - start_ns) / 1e6 - callback)
        samples["end to end"].append((received[s] - stamp_ns) / 1e6)
    return {"samples": samples, "missing": missing, "sent": len(stamps), "cpu_ms": [cpu_ms]}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def merge(runs: list[dict]) -> dict:
    """Rounds of one column as one: samples pooled, CPU per frame of each round kept."""
    return {"samples": {s: [v for r in runs for v in r["samples"][s]] for s in STAGES},
            "missing": sum(r["missing"] for r in runs), "sent": sum(r["sent"] for r in runs),
            "cpu_ms": [c for r in runs for c in r["cpu_ms"]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--configs", default="full,smallest")
    p.add_argument("--model", default=None, help="a shipped model by name (colour), as "
                   "adaspring demo --model; default: the grey one")
    p.add_argument("--calm-only", action="store_true", help="leave out the CPU-hog columns")
    p.add_argument("--source", action="append", default=[], metavar="NAME=DIR",
                   help="also run the node from this source tree (repeatable)")
    p.add_argument("--rounds", type=int, default=1, help="runs per column, alternated")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="adaspring-breakdown-"))
    env = processes.ros_environment(workdir / "logs")
    processes.use_environment(env)
    sources = {"": env}
    for item in args.source:
        name, _, where = item.partition("=")
        if not name or not Path(where, "adaspring_ros").is_dir():
            p.error(f"--source {item!r}: NAME=DIR with DIR a source tree (holding adaspring_ros)")
        # first on the path, before the directory the node starts in (this tree)
        sources[name] = {**env, "PYTHONPATH": os.pathsep.join([where, env["PYTHONPATH"]]),
                         "PYTHONSAFEPATH": "1"}
    node_params = resolve_model(args.model).perception_params() if args.model else {}
    import rclpy

    rclpy.init()
    columns: dict[tuple[str, bool, str], list[dict]] = {}
    try:
        for round_ in range(args.rounds):
            for config in args.configs.split(","):
                for hog in (False,) if args.calm_only else (False, True):
                    order = list(sources) if round_ % 2 == 0 else list(sources)[::-1]
                    for source in order:
                        r = run(args.frames, hog, config, workdir, sources[source], node_params)
                        columns.setdefault((config, hog, source), []).append(r)
                        e2e = r["samples"]["end to end"]
                        print(f"{config}{f' [{source}]' if source else ''}, "
                              f"{'CPU hog' if hog else 'calm'}: {len(e2e)}/{r['sent']} frames, "
                              f"end to end p50 {pct(e2e, 50):.2f} ms, p95 {pct(e2e, 95):.2f} ms, "
                              f"node CPU {r['cpu_ms'][0]:.2f} ms/frame", flush=True)
    finally:
        rclpy.try_shutdown()
    results = [(c, h, src, merge(runs)) for (c, h, src), runs in columns.items()]
    headers = ["stage"] + [f"{c}{f' [{src}]' if src else ''}, {'hog' if h else 'calm'} "
                           "p50 / p95" for c, h, src, _ in results]
    rows = []
    for stage in STAGES:
        rows.append([stage] + [f"{pct(r['samples'][stage], 50):.2f} / "
                               f"{pct(r['samples'][stage], 95):.2f}" for *_, r in results])
    rows.append(["non-model (end to end - forward)"] + [
        f"{pct(list(np.subtract(r['samples']['end to end'], r['samples']['forward'])), 50):.2f}"
        f" / {pct(list(np.subtract(r['samples']['end to end'], r['samples']['forward'])), 95):.2f}"
        for *_, r in results])
    rows.append(["frames lost (of sent)"] + [f"{r['missing']} / {r['sent']}"
                                             for *_, r in results])
    rows.append(["node CPU per frame, ms (median, min-max of rounds)"] + [
        f"{np.median(r['cpu_ms']):.2f} ({min(r['cpu_ms']):.2f}-{max(r['cpu_ms']):.2f})"
        for *_, r in results])
    table = markdown_table(headers, rows)
    print(table)
    if not args.no_write:
        body = "\n".join([
            f"{args.frames} frames of 640x480 rgb8 at 10 Hz per column, published by this process "
            "(stamp taken just before publish) to the perception node (real process, the demo's "
            "Fast DDS profile), results received back here; 'hog' = one busy-loop process per "
            "core. Medians / 95th percentiles in ms; see the module docstring for each stage.",
            "",
            table,
        ])
        write_section("latency_breakdown", "Where a 640x480 frame's time goes",
                      "python -m bench.bench_latency_breakdown", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
