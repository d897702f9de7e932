"""`adaspring demo`: the whole ROS pipeline on replayed labelled images under a context scenario.

Starts the four nodes as separate processes (the same config/adaspring.yaml the launch files use)
on a private ROS domain on loopback, plays a context scenario (battery drain, a CPU-contention
burst produced by real competing busy-loop processes, a latency-budget change), prints every
evolution event as it happens and ends with a per-phase summary next to the static full model
in the same scenario (a second, shorter, time-scaled pass with the evolution node off and the
perception node pinned to the full variant), a timeline PNG and a JSON of the raw events under
runs/<time>/. Every child process is stopped on exit or Ctrl-C, and dies with the demo even if
the demo itself is killed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import msg_convert, paths
from .child_process import dies_with_parent
from .core.context import ScenarioTrace

__all__ = ["cli_main", "ChildProcesses", "CpuHog", "ros_environment", "use_environment", "Phase",
           "scenario_phases"]

SOURCE_ROOT = Path(__file__).resolve().parent.parent
NODES = ("camera_replay_node", "perception_node", "context_node", "evolution_node")


def ros_environment(log_dir: Path, domain_id: int | None = None) -> dict[str, str]:
    """Environment for node processes: a private random domain, loopback discovery, this tree.

    The source tree goes first on PYTHONPATH so that the children run the same code as the demo
    (the colcon-installed copy in the venv only adds the generated msg/srv modules).
    """
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id or random.SystemRandom().randint(1, 101))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_LOG_DIR"] = str(Path(log_dir) / "ros")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SOURCE_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    # Camera-sized frames need a larger shared-memory segment than Fast DDS's default, or most
    # best-effort 640x480 frames are lost (see config/fastdds_large_images.xml).
    profile = paths.config_dir() / "fastdds_large_images.xml"
    if profile.is_file():
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    # One inference thread per node: on a small CPU, more threads only fight each other.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def use_environment(env: dict[str, str]) -> None:
    """Put this process on the children's ROS domain and middleware settings (before rclpy)."""
    os.environ.update({k: v for k, v in env.items() if k.startswith(("ROS_", "RMW_", "FASTDDS_"))})


class DemoError(RuntimeError):
    """The pipeline could not be brought up or a node died; the message names it."""


class ChildProcesses:
    """Node processes of one run: started in their own session, stopped with SIGINT then SIGKILL.

    Each child's output goes to <log_dir>/<name>.log. ``stop_all`` is safe to call twice.
    """

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, object] = {}

    def start_node(self, node: str, params_file: Path, overrides: dict[str, object] | None = None,
                   name: str | None = None, extra_ros_args: list[str] | None = None,
                   ) -> subprocess.Popen:
        ros_args = ["--ros-args", "--params-file", str(params_file)]
        for key, value in (overrides or {}).items():
            ros_args += ["-p", f"{key}:={_ros_arg_value(value)}"]
        ros_args += extra_ros_args or []
        return self.start(name or node, ["-m", f"adaspring_ros.nodes.{node}", *ros_args])

    def start(self, name: str, python_args: list[str]) -> subprocess.Popen:
        if name in self.procs and self.procs[name].poll() is None:
            raise RuntimeError(f"{name} is already running")
        log = open(self.log_dir / f"{name}.log", "ab")
        self._logs[name] = log
        proc = subprocess.Popen(
            dies_with_parent(python_args), cwd=SOURCE_ROOT, env=self.env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def dead(self) -> list[str]:
        """Names of children that exited on their own."""
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def check(self, doing: str = "running") -> None:
        """Raise DemoError with the log tail of the first child that exited on its own."""
        dead = self.dead()
        if dead:
            raise DemoError(f"{dead[0]} exited while {doing}:\n{self.log_tail(dead[0])}")

    def log_tail(self, name: str, chars: int = 2000) -> str:
        try:
            return (self.log_dir / f"{name}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, name: str, timeout: float = 8.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # rclpy shuts down cleanly on SIGINT
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
        log = self._logs.pop(name, None)
        if log is not None:
            log.close()
        return proc.returncode

    def stop_all(self, timeout: float = 8.0) -> None:
        # Signal every child first, then wait: shutting down in parallel keeps Ctrl-C snappy.
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for name in list(self.procs):
            proc = self.procs[name]
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
            self.stop(name)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _ros_arg_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class CpuHog:
    """Real competing CPU load: one busy-loop process per core, started and stopped on demand."""

    def __init__(self, processes: int | None = None) -> None:
        self.processes = processes or (os.cpu_count() or 1)
        self._procs: list[subprocess.Popen] = []

    @property
    def count(self) -> int:
        """Busy processes running now."""
        return len(self._procs)

    def start(self) -> None:
        if self._procs:
            return
        # -S: no site hooks, so the busy loop starts in milliseconds and holds no ROS libraries.
        self._procs = [
            subprocess.Popen(dies_with_parent(["-S", "-c", "while True: pass"]),
                             stdin=subprocess.DEVNULL, start_new_session=True)
            for _ in range(self.processes)
        ]

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._procs = []

    def __enter__(self) -> CpuHog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_params_file() -> Path:
    return paths.config_dir() / "adaspring.yaml"


def default_out_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = Path.cwd() / "runs"
    if not os.access(Path.cwd(), os.W_OK):
        base = Path(tempfile.gettempdir()) / "adaspring-runs"
    return base / stamp


# -- the scenario ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    """A stretch of the scenario between two steps, in scenario seconds."""

    start: float
    end: float
    budget_ms: float
    hog: int
    label: str


def scenario_phases(trace: ScenarioTrace) -> list[Phase]:
    """One phase per scenario step (the last one runs to ``duration_s``); empty ones dropped."""
    phases = []
    for i, step in enumerate(trace.steps):
        end = trace.steps[i + 1].t if i + 1 < len(trace.steps) else trace.duration_s
        if end <= step.t:
            continue
        label = f"{step.t:g}-{end:g} s: budget {step.latency_budget_ms:g} ms"
        first, last = trace.step_at(step.t).battery_percent, trace.step_at(end).battery_percent
        if first is not None and last is not None:
            label += f", battery {first:.0f}->{last:.0f}%"
        if step.cpu_hog:
            label += f", CPU hog x{step.cpu_hog}"
        phases.append(Phase(step.t, end, step.latency_budget_ms, step.cpu_hog, label))
    return phases


def resolve_scenario(text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() or path.exists() else paths.config_dir() / path


# -- what one run records --------------------------------------------------------------------
@dataclass
class Frame:
    seq: int
    label: int | None
    class_id: int
    config_id: str
    stamp: float      # image stamp, wall seconds
    received: float   # result received by the demo, wall seconds
    model_ms: float

    @property
    def e2e_ms(self) -> float:
        return (self.received - self.stamp) * 1e3


@dataclass
class RunRecord:
    name: str
    evolution: bool
    t0: float               # wall time of scenario t = 0
    time_scale: float       # scenario seconds per wall second
    frames: list[Frame] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    contexts: list[dict[str, float]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    hog: list[tuple[float, int]] = field(default_factory=list)
    interrupted: bool = False

    def scenario_time(self, wall: float) -> float:
        return (wall - self.t0) * self.time_scale


SWAP_MS = re.compile(r"\(swap ([0-9.]+) ms\)\s*$")


def _stamp(header: Any) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class Recorder:
    """The demo's node: records results, metrics, contexts and configs; prints swaps live."""

    def __init__(self, record: RunRecord, quiet: bool = False) -> None:
        from rclpy.node import Node

        from .msg import CompressionConfig, ContextState, InferenceResult, PerformanceMetrics
        from .nodes import qos

        self.record, self.quiet = record, quiet
        self.node = Node(f"adaspring_demo_{record.evolution:d}")
        reliable = qos.QoSProfile(depth=200, reliability=qos.ReliabilityPolicy.RELIABLE)
        self.subscriptions = [
            self.node.create_subscription(InferenceResult, qos.RESULT_TOPIC,
                                          self.result_callback, reliable),
            self.node.create_subscription(PerformanceMetrics, qos.METRICS_TOPIC,
                                          self.metrics_callback, qos.METRICS_QOS),
            self.node.create_subscription(ContextState, qos.CONTEXT_TOPIC,
                                          self.context_callback, qos.CONTEXT_QOS),
            self.node.create_subscription(CompressionConfig, qos.CONFIG_TOPIC,
                                          self.config_callback, qos.CONFIG_QOS),
        ]

    def result_callback(self, msg: Any) -> None:
        label, seq = msg_convert.parse_labelled_frame_id(msg.header.frame_id)
        if seq is None:
            return
        self.record.frames.append(Frame(seq, label, int(msg.class_id), msg.config_id,
                                        _stamp(msg.header), time.time(), float(msg.latency_ms)))

    def metrics_callback(self, msg: Any) -> None:
        self.record.metrics.append({
            "time": time.time(), "config_id": msg.config_id,
            "frames_processed": int(msg.frames_processed), "fps": float(msg.fps),
            "energy_per_frame_mj": float(msg.energy_per_frame_mj),
            "energy_method": msg.energy_method,
            "model_latency_ms_p50": float(msg.model_latency_ms_p50),
            "end_to_end_latency_ms_p95": float(msg.end_to_end_latency_ms_p95),
            "frames_dropped": int(msg.frames_dropped), "swaps": int(msg.swaps)})

    def context_callback(self, msg: Any) -> None:
        self.record.contexts.append({
            "time": time.time(), "battery_percent": float(msg.battery_percent),
            "cpu_load_other_percent": float(msg.cpu_load_other_percent),
            "latency_budget_ms": float(msg.latency_budget_ms)})

    def config_callback(self, msg: Any) -> None:
        now = time.time()
        swap = SWAP_MS.search(msg.reason)
        ctx = msg.context
        event = {
            "time": now, "config_id": msg.config_id, "reason": msg.reason,
            "swap_ms": float(swap.group(1)) if swap else math.nan,
            "predicted_accuracy_percent": float(msg.predicted_accuracy_percent),
            "predicted_latency_ms": float(msg.predicted_latency_ms),
            "predicted_energy_mj": float(msg.predicted_energy_mj),
            "context": {"battery_percent": float(ctx.battery_percent),
                        "cpu_load_other_percent": float(ctx.cpu_load_other_percent),
                        "latency_budget_ms": float(ctx.latency_budget_ms),
                        "source": ctx.source},
        }
        self.record.events.append(event)
        if not self.quiet:
            print(format_event(event, self.record.scenario_time(now)), flush=True)

    def destroy(self) -> None:
        self.node.destroy_node()


def format_event(event: dict[str, Any], t: float) -> str:
    ctx = event["context"]
    battery = ctx["battery_percent"]
    battery_text = "n/a" if math.isnan(battery) else f"{battery:.0f}%"
    situation = "no context"
    if ctx["source"]:
        situation = (f"battery {battery_text}, cpu others {ctx['cpu_load_other_percent']:.0f}%, "
                     f"budget {ctx['latency_budget_ms']:g} ms")
    reason = SWAP_MS.sub("", event["reason"]).strip()
    swap = event["swap_ms"]
    return (f"[{t:6.1f} s] {situation} -> {event['config_id']} "
            f"(predicted {event['predicted_accuracy_percent']:.1f}% acc, "
            f"{event['predicted_latency_ms']:.2f} ms, {event['predicted_energy_mj']:.3g} mJ; "
            f"swap {'?' if math.isnan(swap) else f'{swap:.1f}'} ms)\n"
            f"           why: {reason}")


# -- running one pass ------------------------------------------------------------------------
def evolution_overrides(trace: ScenarioTrace) -> dict[str, object]:
    """The scenario's budget settings as evolution_node parameters, typed as it declares them
    (a YAML ``fps: 10`` is an integer, the parameter a double)."""
    from .nodes.evolution_node import PARAMETERS

    defaults = {name: default for name, default, _d, _t in PARAMETERS}
    out = {}
    for name, value in trace.budgets.items():
        if value is None or name not in defaults:
            continue
        out[name] = float(value) if isinstance(defaults[name], float) else int(value)
    return out


# -- running one pass ------------------------------------------------------------------------
def spin_until(node: Any, predicate, deadline: float, children: ChildProcesses,
               what: str) -> None:
    """Spin ``node`` until ``predicate()``; DemoError when a child dies or at ``deadline``."""
    import rclpy

    while not predicate():
        children.check(what)
        if time.time() > deadline:
            raise DemoError(f"timed out waiting for {what}; node logs are in {children.log_dir}")
        rclpy.spin_once(node, timeout_sec=0.05)


def run_pass(name: str, evolution: bool, duration: float, trace: ScenarioTrace,
             scenario_path: Path, out: Path, env: dict[str, str], hog_per_unit: int = 1,
             quiet: bool = False, start_margin: float = 4.0,
             evolution_params: dict[str, object] | None = None) -> RunRecord:
    """Run the pipeline once through the scenario squeezed into ``duration`` seconds.

    The scenario's ``cpu_hog`` x ``hog_per_unit`` busy-loop processes run while a step asks for
    them. Without ``evolution`` the perception node stays on the full model (the static baseline).
    The perception node (the slow one to start) comes up first; the context node then starts
    with scenario t = 0 ``start_margin`` seconds ahead, time for it and the evolution node to
    start and agree on a first variant.
    """
    import rclpy

    time_scale = trace.duration_s / duration
    params_file = default_params_file()
    record = RunRecord(name, evolution, math.inf, time_scale)
    children = ChildProcesses(env, out / "logs" / name.replace(" ", "_"))
    recorder = Recorder(record, quiet)
    hog = CpuHog()
    try:
        # The camera as config/adaspring.yaml has it (640x480 rgb8), at the scenario's rate.
        camera = {"rate_hz": float(trace.budgets.get("fps", 10.0))}
        children.start_node("perception_node", params_file, {"initial_config": "full"})
        children.start_node("camera_replay_node", params_file, camera)
        spin_until(recorder.node, lambda: len(record.frames) >= 5, time.time() + 90, children,
                   "the perception node to classify frames")
        record.t0 = time.time() + start_margin  # scenario t = 0, for the context node and hog
        children.start_node("context_node", params_file, {
            "source": "scenario", "scenario": str(scenario_path), "time_scale": time_scale,
            "start_time_unix": record.t0, "rate_hz": 5.0})
        if evolution:
            children.start_node("evolution_node", params_file,
                                {**evolution_overrides(trace), **(evolution_params or {})})
            spin_until(recorder.node, lambda: bool(record.events), time.time() + 60, children,
                       "the evolution node to choose a first variant")
        if time.time() > record.t0:
            print(f"  (the first variant came {time.time() - record.t0:.1f} s after the "
                  f"scenario started)")
        spin_until(recorder.node, lambda: time.time() >= record.t0, math.inf, children, "t = 0")
        print(f"  scenario {trace.name!r} running ({duration:g} s, x{time_scale:.2f})",
              flush=True)
        t0 = record.t0
        phases = scenario_phases(trace)
        current = None
        end = t0 + duration
        while time.time() < end:
            t = record.scenario_time(time.time())
            phase = next((p for p in phases if p.start <= t < p.end), phases[-1])
            if phase is not current:
                current = phase
                wanted = phase.hog * hog_per_unit
                if wanted != hog.count:
                    hog.stop()
                    if wanted:
                        hog.processes = wanted
                        hog.start()
                    record.hog.append((time.time(), wanted))
                print(f"  --- {phase.label}"
                      + (f" ({wanted} busy-loop process(es) running)" if wanted else ""),
                      flush=True)
            children.check("the scenario played")
            rclpy.spin_once(recorder.node, timeout_sec=0.05)
    except BaseException:  # Ctrl-C, SIGTERM or a dead child: the record is cut short
        record.interrupted = True
        raise
    finally:
        # A second Ctrl-C while the children stop would leave some of them running.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            hog.stop()
            record.hog.append((time.time(), 0))
            children.stop_all()
            recorder.destroy()
        finally:
            signal.signal(signal.SIGINT, previous_int)
    return record


# -- summary ---------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def phase_stats(record: RunRecord, start: float, end: float, budget_ms: float) -> dict[str, Any]:
    """Accuracy, latency, deadline hit rate and energy of the frames stamped in [start, end).

    Frames the camera sent that never produced a result (dropped in the keep-last-1 queue or
    lost) are found from gaps in the camera's sequence numbers and count as missed deadlines.
    """
    frames = sorted((f for f in record.frames if record.scenario_time(f.stamp) >= 0),
                    key=lambda f: f.seq)
    inside = [f for f in frames if start <= record.scenario_time(f.stamp) < end]
    dropped = 0
    for prev, frame in zip(frames, frames[1:], strict=False):
        gap = frame.seq - prev.seq
        for k in range(1, gap):  # a missing frame's stamp, interpolated between its neighbours
            stamp = prev.stamp + k / gap * (frame.stamp - prev.stamp)
            dropped += start <= record.scenario_time(stamp) < end
    latencies = [f.e2e_ms for f in inside]
    labelled = [f for f in inside if f.label is not None]
    energy = weighted = 0.0
    previous = None
    for m in record.metrics:
        count = m["frames_processed"] - previous if previous is not None else 0
        previous = m["frames_processed"]
        if (start <= record.scenario_time(m["time"]) < end and count > 0
                and math.isfinite(m["energy_per_frame_mj"])):
            energy += m["energy_per_frame_mj"] * count
            weighted += count
    variants: dict[str, int] = {}
    for f in inside:
        variants[f.config_id] = variants.get(f.config_id, 0) + 1
    sent = len(inside) + dropped
    return {
        "frames": len(inside), "dropped": dropped,
        "accuracy_percent": (100.0 * sum(f.class_id == f.label for f in labelled) / len(labelled)
                             if labelled else math.nan),
        "latency_ms_p50": _percentile(latencies, 50), "latency_ms_p95": _percentile(latencies, 95),
        "deadline_hit_percent": (100.0 * sum(v <= budget_ms for v in latencies) / sent
                                 if sent else math.nan),
        "energy_mj_per_frame": energy / weighted if weighted else math.nan,
        "variants": dict(sorted(variants.items(), key=lambda kv: -kv[1])),
    }


def summarise(records: list[RunRecord], trace: ScenarioTrace) -> list[dict[str, Any]]:
    rows = []
    phases = scenario_phases(trace)
    for phase in phases:
        for record in records:
            rows.append({"phase": phase.label, "run": record.name,
                         **phase_stats(record, phase.start, phase.end, phase.budget_ms)})
    for record in records:  # the whole run; deadlines against each frame's own phase budget
        whole = [phase_stats(record, p.start, p.end, p.budget_ms) for p in phases]
        sent = sum(w["frames"] + w["dropped"] for w in whole)
        hits = sum(w["deadline_hit_percent"] * (w["frames"] + w["dropped"]) / 100
                   for w in whole if w["frames"] + w["dropped"])
        all_stats = phase_stats(record, 0.0, math.inf, math.inf)
        all_stats["deadline_hit_percent"] = 100.0 * hits / sent if sent else math.nan
        rows.append({"phase": "whole scenario", "run": record.name, **all_stats})
    return rows


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    headers = ["phase", "run", "frames", "acc %", "lat p50 ms", "lat p95 ms", "deadline hit %",
               "mJ/frame", "main variant"]
    body = []
    for r in rows:
        variants = list(r["variants"])
        main = variants[0] if variants else "-"
        if len(variants) > 1:
            main += f" (+{len(variants) - 1})"
        body.append([r["phase"], r["run"], f"{r['frames']}+{r['dropped']} dropped"
                     if r["dropped"] else str(r["frames"]), _fmt(r["accuracy_percent"]),
                     _fmt(r["latency_ms_p50"]), _fmt(r["latency_ms_p95"]),
                     _fmt(r["deadline_hit_percent"]), _fmt(r["energy_mj_per_frame"], 3), main])
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *body, strict=True)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    previous = None
    for row in body:
        shown = list(row)
        if row[0] == previous:
            shown[0] = ""
        previous = row[0]
        lines.append(" | ".join(str(x).ljust(w) for x, w in zip(shown, widths, strict=True)))
    return "\n".join(lines)


def swap_label(event: dict[str, Any]) -> str:
    """A short label of one swap for the timeline: the variant and why, e.g.
    ``r24-w50d2… 91.7% 4.1 mJ (budget)``."""
    reason = event["reason"]
    why = "gain"
    for prefix, word in (("initial", "initial"), ("re-applied", "re-applied"),
                         ("context is", "stale"), ("no context", "stale")):
        if reason.startswith(prefix):
            why = word
            break
    else:
        if " violates " in reason.split(":")[0]:
            why = "budget"
    return (f"{event['config_id'][:9]}… {event['predicted_accuracy_percent']:.1f}% "
            f"{event['predicted_energy_mj']:.3g} mJ ({why})")


def verdict(rows: list[dict[str, Any]]) -> str:
    """One line: adaptive against static full over the whole scenario, and whether adaptive is
    at least as good on deadline hits and energy with at most 2 points less live accuracy."""
    whole = {r["run"]: r for r in rows if r["phase"] == "whole scenario"}
    if "adaptive" not in whole or "static full" not in whole:
        return "adaptive vs static full: no static run to compare with"
    a, f = whole["adaptive"], whole["static full"]
    hits_ok = a["deadline_hit_percent"] >= f["deadline_hit_percent"]
    energy_ok = a["energy_mj_per_frame"] <= f["energy_mj_per_frame"]
    acc_ok = a["accuracy_percent"] >= f["accuracy_percent"] - 2.0
    ok = hits_ok and energy_ok and acc_ok
    return (f"adaptive vs static full, whole scenario: deadline hits "
            f"{_fmt(a['deadline_hit_percent'])} vs {_fmt(f['deadline_hit_percent'])} %, "
            f"energy {_fmt(a['energy_mj_per_frame'], 2)} vs {_fmt(f['energy_mj_per_frame'], 2)} "
            f"mJ/frame, live accuracy {_fmt(a['accuracy_percent'])} vs "
            f"{_fmt(f['accuracy_percent'])} %: "
            + ("adaptive is at least as good on deadlines and energy, within 2 points of "
               "accuracy" if ok else "NOT better: " + ", ".join(
                   what for what, good in (("deadline hits", hits_ok), ("energy", energy_ok),
                                           ("accuracy (> 2 points lower)", acc_ok))
                   if not good)))


# -- timeline --------------------------------------------------------------------------------
def plot_timeline(records: list[RunRecord], trace: ScenarioTrace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(12, 11))
    phases = scenario_phases(trace)
    for ax in axes:
        for phase in phases:
            if phase.hog:
                ax.axvspan(phase.start, phase.end, color="tab:red", alpha=0.08)
    ax = axes[0]
    main = records[0]
    ctx_t = [main.scenario_time(c["time"]) for c in main.contexts]
    ax.plot(ctx_t, [c["battery_percent"] for c in main.contexts], label="battery %")
    ax.plot(ctx_t, [c["cpu_load_other_percent"] for c in main.contexts],
            label="CPU load of others %")
    ax.set_ylabel("%")
    twin = ax.twinx()
    twin.step(ctx_t, [c["latency_budget_ms"] for c in main.contexts], where="post",
              color="black", linestyle="--", label="latency budget ms")
    twin.set_ylabel("budget, ms")
    ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    ax.set_title(f"scenario {trace.name!r} (red: competing CPU load running)")

    colours = ["tab:blue", "tab:orange", "tab:green"]
    ax = axes[1]
    for record, colour in zip(records, colours, strict=False):
        ax.scatter([record.scenario_time(f.stamp) for f in record.frames],
                   [max(f.e2e_ms, 1e-2) for f in record.frames], s=4, color=colour,
                   label=f"{record.name}: end-to-end latency")
    budget_t = [p.start for p in phases] + [phases[-1].end]
    ax.step(budget_t, [p.budget_ms for p in phases] + [phases[-1].budget_ms], where="post",
            color="black", linestyle="--", label="deadline")
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[2]
    for record, colour in zip(records, colours, strict=False):
        if not record.events:
            continue
        times = [record.scenario_time(e["time"]) for e in record.events]
        accs = [e["predicted_accuracy_percent"] for e in record.events]
        ax.step(times + [trace.duration_s], accs + accs[-1:], where="post", color=colour,
                label=f"{record.name}: predicted accuracy of the active variant")
        ax.scatter(times, accs, color=colour, marker="v")
        for k, (t, acc, event) in enumerate(zip(times, accs, record.events, strict=True)):
            ax.annotate(swap_label(event), (max(t, 0.0), acc), textcoords="offset points",
                        xytext=(3, 8 if k % 2 else -14), fontsize=7, color=colour)
    ax.set_ylabel("accuracy %")
    ax.legend(loc="lower left", fontsize=8)

    ax = axes[3]
    for record, colour in zip(records, colours, strict=False):
        frames = sorted((f for f in record.frames if f.label is not None), key=lambda f: f.stamp)
        window = 50
        times, accs = [], []
        for i in range(window, len(frames) + 1, 5):
            chunk = frames[i - window:i]
            times.append(record.scenario_time(chunk[-1].stamp))
            accs.append(100.0 * sum(f.class_id == f.label for f in chunk) / window)
        ax.plot(times, accs, color=colour, label=f"{record.name}: live accuracy (last 50)")
        energy = [(record.scenario_time(m["time"]), m["energy_per_frame_mj"])
                  for m in record.metrics if math.isfinite(m["energy_per_frame_mj"])]
        if energy:
            twin = ax.twinx() if record is records[0] else twin
            twin.plot(*zip(*energy, strict=True), color=colour, linestyle=":",
                      label=f"{record.name}: mJ/frame")
            twin.set_ylabel("mJ / frame (dotted)")
    ax.set_ylabel("accuracy %")
    ax.set_xlabel("scenario time, s")
    ax.legend(loc="lower left", fontsize=8)
    for ax in axes:
        ax.set_xlim(0, trace.duration_s)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the command -----------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adaspring demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=60.0,
                   help="seconds the adaptive run plays the scenario in (default 60; the "
                        "scenario is time-scaled to fit)")
    p.add_argument("--scenario", default="scenarios/mixed.yaml",
                   help="scenario YAML, a path or relative to config/ (default "
                        "scenarios/mixed.yaml)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the second, shorter run of the static full model")
    p.add_argument("--baseline-duration", type=float,
                   help="seconds of the static run (default: half of --duration)")
    p.add_argument("--hog-per-unit", type=int, default=os.cpu_count() or 1,
                   help="busy-loop processes per unit of the scenario's cpu_hog (default: one "
                        "per core, so cpu_hog: 1 loads every core, as the scenarios' 85-95 %% "
                        "load of others says)")
    p.add_argument("--out", type=Path, help="output directory (default runs/<UTC time>)")
    p.add_argument("--quiet", action="store_true", help="no live event lines")
    return p


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cli_main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.duration <= 0 or (args.baseline_duration is not None and args.baseline_duration <= 0):
        print("adaspring demo: durations must be > 0", file=sys.stderr)
        return 2
    scenario_path = resolve_scenario(args.scenario)
    try:
        trace = ScenarioTrace.load(scenario_path)
    except ValueError as exc:
        print(f"adaspring demo: {exc}", file=sys.stderr)
        return 2
    out = (args.out or default_out_dir()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = ros_environment(out / "logs")
    use_environment(env)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    runs = [("adaptive", True, args.duration)]
    if not args.no_baseline:
        runs.append(("static full", False, args.baseline_duration or args.duration / 2))
    print(f"adaspring demo: scenario {trace.name!r} ({trace.description or scenario_path}), "
          f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, output in {out}")
    if not paths.default_profile_table().exists():
        print(f"WARNING: {paths.default_profile_table()} is missing: the evolution node falls "
              f"back to a SYNTHETIC profile table, so its predictions are made up")
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    records: list[RunRecord] = []
    code = 0
    # rclpy's own SIGINT handler shuts the context down, and the next spin_once then raises
    # ExternalShutdownException out of wherever the demo is: Ctrl-C would end in a traceback
    # and exit 1. Python's default handler raises KeyboardInterrupt instead, which the code
    # below turns into a clean stop of every child and exit 130.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    try:
        for name, evolution, duration in runs:
            print(f"\n=== {name} run: {duration:g} s"
                  + ("" if evolution else ", evolution node off, perception pinned to the "
                     "full model") + " ===", flush=True)
            records.append(run_pass(name, evolution, duration, trace, scenario_path, out, env,
                                    args.hog_per_unit, args.quiet))
    except (KeyboardInterrupt, ExternalShutdownException):
        print("\ninterrupted: every node stopped", file=sys.stderr)
        code = 130
    except DemoError as exc:
        print(f"\nadaspring demo: {exc}", file=sys.stderr)
        code = 1
    finally:
        rclpy.try_shutdown()
        signal.signal(signal.SIGTERM, previous_term)
    if not records or not any(r.frames for r in records):
        return code or 1
    rows = summarise(records, trace)
    table = format_table(rows) + "\n\n" + verdict(rows)
    print(f"\n=== summary (deadline = the phase's latency budget; dropped frames count as "
          f"missed; the static run is a separate, time-scaled pass) ===\n{table}")
    visited = [e["config_id"] for e in records[0].events] if records[0].evolution else []
    if visited:
        print(f"variants visited by the adaptive run ({len(set(visited))} distinct): "
              + " -> ".join(f"{c[:9]}…" for c in visited))
    write_outputs(records, rows, table, trace, out)
    return code


def write_outputs(records: list[RunRecord], rows: list[dict[str, Any]], table: str,
                  trace: ScenarioTrace, out: Path) -> None:
    def clean(value: Any) -> Any:  # JSON has no NaN
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    from dataclasses import asdict

    data = {"scenario": trace.name, "scenario_path": trace.path, "summary": rows,
            "runs": [asdict(r) for r in records]}
    (out / "events.json").write_text(json.dumps(clean(data), indent=1))
    (out / "summary.txt").write_text(table + "\n")
    plot_timeline(records, trace, out / "timeline.png")
    energy = {m["energy_method"] for r in records for m in r.metrics if m["energy_method"]}
    print(f"\nenergy: {', '.join(sorted(energy)) or 'n/a'}")
    print(f"timeline: {out / 'timeline.png'}\nraw events: {out / 'events.json'}")
    swap_ms = [e["swap_ms"] for r in records for e in r.events if math.isfinite(e["swap_ms"])]
    median = statistics.median(swap_ms) if swap_ms else math.nan
    print(f"evolution events: {sum(len(r.events) for r in records)}; median swap "
          f"{_fmt(median)} ms")
