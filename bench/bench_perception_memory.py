"""Benchmark: the perception node with torch (commit e5764e8) and without it, side by side.

Both nodes run from their own source tree (the earlier one extracted with ``git archive`` into a
temporary folder), one at a time and alternating, against the same replay camera (640x480 rgb8
at 30 Hz) on one ROS domain, with the same backbone, profile table and parameters (defaults:
engine onnxruntime, one thread, a cache of 8 variants). Per run:

* start-up: process spawned -> configured and subscribed (the node's log line), and -> its
  first InferenceResult received here; a bare rclpy subscriber started the same way shows how
  much of the latter is DDS discovery (on this machine 0.1 s or ~2 s, by chance);
* swap time: ``--swaps`` Reconfigure calls cycling over 36 variants of the profile table (more
  than the cache holds, so most swaps build a variant and evict another), as the node reports it
  (``swap_ms``) and as this client sees it (call -> reply);
* resident memory after those swaps, at rest (frames flowing, two metrics reports later; RSS,
  with the share that is the DDS shared-memory segment of the Fast DDS profile the nodes run
  with) and its peak (VmHWM).

Prints a table with the median and the spread over the runs and writes the
``perception_memory`` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_perception_memory [--runs 3] [--swaps 300]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import psutil
import rclpy

from adaspring_ros import msg_convert
from adaspring_ros.core import paths
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.profile_table import ProfileTable
from adaspring_ros.demo.child_process import dies_with_parent
from adaspring_ros.demo.graph import ChildProcess, ros_environment, spin_until
from bench.bench_ros_perception import quiet_domain
from bench.report import markdown_table, spread, write_section

ROOT = Path(__file__).resolve().parent.parent

BEFORE = "e5764e8"  # the last tree whose perception node materialised variants with torch
CAMERA = "adaspring_ros.nodes.camera_replay_node"
PERCEPTION = "adaspring_ros.nodes.perception_node"
PERCEPTION_ARGS: list[str] = []  # more parameters for both nodes


def extract_tree(commit: str, into: Path) -> Path:
    """The package source of ``commit``, extracted into ``into`` (git archive)."""
    raw = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "adaspring_ros", "config",
                          "models"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        archive.extractall(into, filter="data")
    return into


class NodeRun:
    """One perception node process from ``tree``, its results and its Reconfigure client."""

    def __init__(self, node, tree: Path, env: dict[str, str], log: Path, tag: str) -> None:
        from adaspring_ros.msg import InferenceResult, PerformanceMetrics
        from adaspring_ros.srv import Reconfigure

        from adaspring_ros.nodes.qos import METRICS_QOS, RESULT_QOS

        self.node, self.tag, self.results, self.reports = node, tag, 0, 0
        self.subs = [node.create_subscription(InferenceResult, "/adaspring/result",
                                              self._result, RESULT_QOS),
                     node.create_subscription(PerformanceMetrics, "/adaspring/metrics",
                                              self._report, METRICS_QOS)]
        self.client = node.create_client(Reconfigure, "/adaspring/perception/reconfigure")
        self.log = open(log, "wb")
        self.started, self.started_wall = time.perf_counter(), time.time()
        # cwd is the tree: ``python -m`` puts it first on sys.path
        args = ["-m", PERCEPTION, "--ros-args",
                "-p", f"backbone_path:={paths.default_backbone()}",
                "-p", f"profile_table:={paths.default_profile_table()}", *PERCEPTION_ARGS]
        self.proc = subprocess.Popen(dies_with_parent(args), cwd=tree,
                                     env={**env, "PYTHONPATH": str(tree)}, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)

    def _result(self, msg) -> None:
        self.results += 1

    def _report(self, msg) -> None:
        self.reports += 1

    def wait(self, predicate, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.tag}: the node exited ({self.proc.returncode}) while "
                                   f"waiting for {what}; log {self.log.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.tag}: no {what} in {timeout:.0f} s")
            rclpy.spin_once(self.node, timeout_sec=0.01)

    def first_result_s(self) -> float:
        self.wait(lambda: self.results > 0, "first result")
        return time.perf_counter() - self.started

    def swap(self, config: CompressionConfig) -> tuple[float, float]:
        """(client call -> reply ms, node swap_ms) of one Reconfigure."""
        from adaspring_ros.msg import CompressionConfig as ConfigMsg
        from adaspring_ros.srv import Reconfigure

        self.wait(self.client.service_is_ready, "Reconfigure service")
        request = Reconfigure.Request(config=msg_convert.config_to_msg(config, ConfigMsg))
        start = time.perf_counter()
        future = self.client.call_async(request)
        self.wait(future.done, f"reply to {config.id}")
        rtt = (time.perf_counter() - start) * 1e3
        reply = future.result()
        if not reply.success:
            raise RuntimeError(f"{self.tag}: {reply.message}")
        return rtt, reply.swap_ms

    def active_s(self) -> float:
        """Spawn -> configured and subscribed, from the node's "serving ..." log line."""
        self.log.flush()
        found = re.search(r"\[INFO\] \[(\d+\.\d+)\] \[perception_node\]: serving",
                          Path(self.log.name).read_text(errors="replace"))
        return float(found.group(1)) - self.started_wall if found else float("nan")

    def memory_mb(self) -> tuple[float, float, float]:
        """(RSS now, its DDS shared-memory part, peak RSS) in MB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        shm, in_shm = 0, False
        for line in Path(f"/proc/{self.proc.pid}/smaps").read_text().splitlines():
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                in_shm = line.split()[-1].startswith("/dev/shm/")
            elif in_shm and line.startswith("Rss:"):
                shm += int(line.split()[1])
        return self.ps.memory_info().rss / 2**20, shm / 2**10, peak / 2**10

    def close(self) -> None:
        for sub in self.subs:
            self.node.destroy_subscription(sub)
        self.node.destroy_client(self.client)
        self.proc.send_signal(2)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def variants(count: int, seed: int) -> list[CompressionConfig]:
    """``count`` profiled variants (what the evolution node can ask for), seeded."""
    table = ProfileTable.load(paths.default_profile_table())
    return [e.config for e in random.Random(seed).sample(table.entries, count)]


def one_run(node, tree: Path, env: dict[str, str], workdir: Path, tag: str,
            configs: list[CompressionConfig], swaps: int) -> dict:
    run = NodeRun(node, tree, env, workdir / f"{tag}.log", tag)
    try:
        start_s = run.first_result_s()
        active_s = run.active_s()
        timed = [run.swap(configs[i % len(configs)]) for i in range(swaps)]
        # at rest: frames flowing, two metrics reports later (the report timer is where the
        # node gives the memory of evicted variants back)
        results, reports = run.results, run.reports
        run.wait(lambda: run.results >= results + 10 and run.reports >= reports + 2,
                 "results and reports after the swaps")
        rss, shm, peak = run.memory_mb()
    finally:
        run.close()
    return {"start_s": start_s, "active_s": active_s, "rtt": [t[0] for t in timed],
            "swap": [t[1] for t in timed], "rss": rss, "shm": shm, "peak": peak}


# A bare rclpy subscriber: how long DDS discovery alone takes to bring the first camera frame.
PROBE = """
import sys, time
import rclpy
from sensor_msgs.msg import Image
from adaspring_ros.nodes.qos import IMAGE_QOS
rclpy.init()
node = rclpy.create_node("discovery_probe")
got = []
node.create_subscription(Image, "/camera/image_raw", lambda m: got.append(time.time()), IMAGE_QOS)
while not got:
    rclpy.spin_once(node, timeout_sec=0.01)
print(got[0] - float(sys.argv[1]))
node.destroy_node()
rclpy.shutdown()
"""


def discovery_s(env: dict[str, str]) -> float:
    """Spawn -> first camera frame of a bare rclpy subscriber process."""
    out = subprocess.run(dies_with_parent(["-c", PROBE, str(time.time())]), cwd=ROOT,
                         env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=60, check=True)
    return float(out.stdout.split()[-1])


def median_spread(values: list[float], fmt: str = ".0f") -> str:
    s = spread(values)
    return f"{s['p50']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="node runs per tree")
    parser.add_argument("--swaps", type=int, default=300, help="Reconfigure calls per run")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="adaspring-bench-memory-"))
    os.environ.setdefault("ROS_LOG_DIR", str(workdir / "ros"))
    trees = {f"with torch ({BEFORE})": extract_tree(BEFORE, workdir / "before"),
             "without torch (this tree)": ROOT}
    load_before = os.getloadavg()
    node = quiet_domain()
    # both trees read the same data files (backbone, table, device profiles: this tree's)
    env = {**ros_environment(workdir, int(os.environ["ROS_DOMAIN_ID"])),
           "ADASPRING_SHARE_DIR": str(paths.share_dir())}
    camera = ChildProcess.module(CAMERA, workdir, "camera", env=env, ros_args=[
        "-p", "width:=640", "-p", "height:=480", "-p", "encoding:=rgb8", "-p", "rate_hz:=30.0"])
    configs = variants(36, seed=1)
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    probes = []
    try:
        spin_until(node, lambda: node.count_publishers("/camera/image_raw") > 0, 60,
                   "the camera", [camera])
        for r in range(args.runs):
            for name, tree in (trees.items() if r % 2 == 0 else reversed(trees.items())):
                print(f"run {r + 1}/{args.runs}: {name} ...", flush=True)
                runs[name].append(one_run(node, tree, env, workdir, f"{r}-{tree.name}",
                                          configs, args.swaps))
            probes.append(discovery_s(env))
    except BaseException:
        print(f"logs of this run: {workdir}", flush=True)
        raise
    finally:
        camera.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    load_after = os.getloadavg()

    memory, timing = [], []
    for name, done in runs.items():
        swap = [v for run in done for v in run["swap"]]
        rtt = [v for run in done for v in run["rtt"]]
        memory.append([name, median_spread([run["rss"] for run in done]),
                       median_spread([run["shm"] for run in done]),
                       median_spread([run["rss"] - run["shm"] for run in done]),
                       median_spread([run["peak"] for run in done])])
        timing.append([name, median_spread([run["active_s"] for run in done], ".2f"),
                       median_spread([run["start_s"] for run in done], ".2f"),
                       f"{spread(swap)['p50']:.1f} / {spread(swap)['p95']:.1f}",
                       f"{spread(rtt)['p50']:.1f} / {spread(rtt)['p95']:.1f}"])
    timing.append(["bare rclpy subscriber (DDS discovery alone)", "",
                   median_spread(probes, ".2f"), "", ""])
    load = ("load average (1, 5, 15 min) " + " / ".join(f"{v:.1f}" for v in load_before)
            + " before, " + " / ".join(f"{v:.1f}" for v in load_after) + " after")
    body = "\n\n".join([
        f"The perception node as it was at {BEFORE} (materialising and preprocessing with "
        "torch) and as it is now (checkpoint read as numpy arrays, variants materialised in "
        "numpy, the same ONNX Runtime engine), run alternately from their own source trees, "
        f"{args.runs} runs each, against one replay camera (640x480 rgb8, 30 Hz) with the "
        "shipped backbone and profile table and the node's defaults (engine onnxruntime, one "
        f"thread, cache of 8). Per run: {args.swaps} Reconfigure calls over 36 profiled "
        "variants (most build a variant and evict one), frames streaming meanwhile; memory "
        "read two metrics reports (~2 s) after the last swap. Machine: "
        f"2 cores shared with other work; {load}.",
        "Goals: RSS <= 200 MB after 300 swaps, start to first result <= 2 s, swaps as fast or "
        "faster. Median (min-max) over the runs; swap times pooled over all runs. Both nodes "
        "run with the Fast DDS profile of config/fastdds_large_images.xml (as the demo and the "
        "tests do), whose 32 MB shared-memory segment counts in each node's RSS.",
        "### Memory (MB)\n\n" + markdown_table(
            ["node", "RSS after the swaps", "of which DDS shared memory", "RSS without it",
             "peak RSS"], memory),
        "### Start-up (s) and swaps (ms)\n\nStart: process spawned -> configured and "
        "subscribed (its log line), and -> its first InferenceResult received by this process. "
        "The difference is DDS discovery (the new participant finding the camera and this "
        "process), which the bare subscriber in the last row pays alone.\n\n"
        + markdown_table(["node", "start -> serving", "start -> first result",
                          "swap_ms p50 / p95", "client call -> reply ms p50 / p95"], timing),
    ])
    write_section("perception_memory", "Perception node without torch: memory, start-up, "
                  "swaps", "python -m bench.bench_perception_memory", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
