"""`adaspring demo`: the whole ROS pipeline on replayed labelled images under a context scenario.

Starts the four nodes as separate processes (the same config/adaspring.yaml the launch files use)
on a private ROS domain on loopback, plays a context scenario (battery drain, a CPU-contention
burst produced by real competing busy-loop processes, a latency-budget change), prints every
evolution event as it happens and ends with a per-phase summary next to the static full model
in the same scenario (a second, shorter, time-scaled pass with the evolution node off and the
perception node pinned to the full variant), a timeline PNG and a JSON of the raw events under
runs/<time>/ (demo_report.py). Every child process is stopped on exit or Ctrl-C, and dies with
the demo even if the demo itself is killed (processes.py).

By default the shipped Fashion-MNIST backbone classifies the Fashion-MNIST test split; --model
NAME (models/NAME/), or --backbone, --table and --dataset-dir, run a user's model on the test
split of its own image folder, replayed as 640x480 colour frames (demo/model.py). The report
names the model's task from its model card.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from adaspring_ros.core import paths
from adaspring_ros.core.policy.budgets import energy_share_for
from adaspring_ros.core.policy.scenario import ScenarioTrace, resolve_scenario
from adaspring_ros.core.serving.replay import parse_labelled_frame_id
from adaspring_ros.demo.domains import DomainError
from adaspring_ros.demo.graph import (
    ChildProcesses,
    CpuHog,
    GraphError,
    ros_environment,
    spin_until,
    use_environment,
)
from adaspring_ros.demo.model import DemoModel, describe_task, resolve_model
from adaspring_ros.demo.report import (
    Frame,
    RunRecord,
    describe_calibration,
    format_table,
    scenario_phases,
    summarise,
    verdict,
    write_outputs,
)

__all__ = ["cli_main", "run_pass", "Recorder", "evolution_overrides", "calibrate_energy"]

# Metrics windows of the full model the energy calibration takes the median of, after the first
# (which holds the model's start-up).
CALIBRATION_WINDOWS = 5


# -- recording ----------------------------------------------------------------------------------
def default_params_file() -> Path:
    return paths.config_dir() / "adaspring.yaml"


def default_out_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = Path.cwd() / "runs"
    if not os.access(Path.cwd(), os.W_OK):
        base = Path(tempfile.gettempdir()) / "adaspring-runs"
    return base / stamp


def _stamp(header: Any) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class Recorder:
    """The demo's node: records results, metrics, contexts and configs; prints swaps live."""

    def __init__(self, record: RunRecord, quiet: bool = False) -> None:
        from rclpy.node import Node

        from adaspring_ros.msg import (
            CompressionConfig,
            ContextState,
            InferenceResult,
            PerformanceMetrics,
        )
        from adaspring_ros.nodes import qos

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
        label, seq = parse_labelled_frame_id(msg.header.frame_id)
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
        ctx = msg.context
        event = {
            "time": now, "config_id": msg.config_id, "reason": msg.reason,
            "swap_ms": float(msg.swap_ms),
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
    reason = event["reason"]
    swap = event["swap_ms"]
    return (f"[{t:6.1f} s] {situation} -> {event['config_id']} "
            f"(predicted {event['predicted_accuracy_percent']:.1f}% acc, "
            f"{event['predicted_latency_ms']:.2f} ms, {event['predicted_energy_mj']:.3g} mJ; "
            f"swap {'?' if math.isnan(swap) else f'{swap:.1f}'} ms)\n"
            f"           why: {reason}")


def evolution_overrides(trace: ScenarioTrace) -> dict[str, object]:
    """The scenario's budget settings as evolution_node parameters, typed as it declares them
    (a YAML ``fps: 10`` is an integer, the parameter a double)."""
    from adaspring_ros.nodes.evolution_node import PARAMETERS

    defaults = {name: default for name, default, _d in PARAMETERS}
    out = {}
    for name, value in trace.budgets.items():
        if value is None or name not in defaults:
            continue
        out[name] = float(value) if isinstance(defaults[name], float) else int(value)
    return out


def calibrate_energy(record: RunRecord, trace: ScenarioTrace, wait: Callable[..., None]
                     ) -> dict[str, float] | None:
    """The scenario's ``energy_budget_at_start`` made concrete on this host: the median frame
    energy of the full model over :data:`CALIBRATION_WINDOWS` metrics windows (the perception
    node serves it from the start), and the ``perception_energy_share`` that makes the budget
    per frame at t = 0 that many times it. None when the scenario states no such budget (or no
    battery at t = 0). ``wait(predicate, timeout, what)`` spins until ``predicate()``."""
    ratio = trace.energy_budget_at_start
    battery = trace.step_at(0.0).battery_percent
    if ratio is None or not battery:
        return None
    def windows() -> list[float]:
        # The perception node serves its space's full variant until the evolution node starts.
        full = record.metrics[0]["config_id"] if record.metrics else None
        values = [m["energy_per_frame_mj"] for m in record.metrics
                  if m["config_id"] == full and math.isfinite(m["energy_per_frame_mj"])]
        return values[1:]

    wait(lambda: len(windows()) >= CALIBRATION_WINDOWS, 60,
         "the perception node's frame energy of the full model")
    frame_mj = statistics.median(windows()[:CALIBRATION_WINDOWS])
    params = trace.budget_params()
    share = energy_share_for(params, battery, ratio * frame_mj)
    return {"frame_energy_mj": frame_mj, "windows": CALIBRATION_WINDOWS,
            "energy_budget_at_start": ratio, "budget_mj": ratio * frame_mj,
            "battery_percent": battery, "battery_capacity_wh": params.battery_capacity_wh,
            "mission_duration_s": params.mission_duration_s,
            "perception_energy_share": share}


def served_accuracy(path: str = "") -> dict[str, float]:
    """Config id -> top-1 % of the profile table at ``path`` ('' = the shipped one; its test
    split), for the summary's accuracy of the variants served; empty when the table is missing
    or unreadable."""
    from adaspring_ros.core.model.profile_table import ProfileTable

    try:
        table = ProfileTable.load(path or paths.default_profile_table())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"(no accuracy of the variants served: {exc})", file=sys.stderr)
        return {}
    return {e.id: 100.0 * e.accuracy for e in table.entries}


def run_pass(name: str, evolution: bool, duration: float, trace: ScenarioTrace,
             scenario_path: Path, out: Path, env: dict[str, str], hog_per_unit: int = 1,
             quiet: bool = False, start_margin: float = 4.0,
             evolution_params: dict[str, object] | None = None,
             model: DemoModel | None = None) -> RunRecord:
    """Run the pipeline once through the scenario squeezed into ``duration`` seconds, on
    ``model`` (default: the shipped one on Fashion-MNIST).

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
        model = model or resolve_model()
        camera = {"rate_hz": float(trace.budgets.get("fps", 10.0)), **model.camera_params()}
        children.start_node("perception_node", params_file,
                            {"initial_config": "full", **model.perception_params()})
        children.start_node("camera_replay_node", params_file, camera)
        spin_until(recorder.node, _until(lambda: len(record.frames) >= 5), 90,
                   "the perception node to classify frames", children.procs.values(), GraphError)
        overrides = {**evolution_overrides(trace), **model.evolution_params(),
                     **(evolution_params or {})}
        if evolution:
            def wait(done: Callable[[], bool], timeout: float, what: str) -> None:
                spin_until(recorder.node, _until(done), timeout, what, children.procs.values(),
                           GraphError)

            record.calibration = calibrate_energy(record, trace, wait) or {}
            if record.calibration:
                overrides["perception_energy_share"] = \
                    record.calibration["perception_energy_share"]
                print(f"  {describe_calibration(record.calibration)}", flush=True)
        record.t0 = time.time() + start_margin  # scenario t = 0, for the context node and hog
        children.start_node("context_node", params_file, {
            "source": "scenario", "scenario": str(scenario_path), "time_scale": time_scale,
            "start_time_unix": record.t0, "rate_hz": 5.0})
        if evolution:
            children.start_node("evolution_node", params_file, overrides)
            spin_until(recorder.node, _until(lambda: bool(record.events)), 60,
                       "the evolution node to choose a first variant", children.procs.values(),
                       GraphError)
        if time.time() > record.t0:
            print(f"  (the first variant came {time.time() - record.t0:.1f} s after the "
                  f"scenario started)")
        spin_until(recorder.node, _until(lambda: time.time() >= record.t0), math.inf,
                   "t = 0", children.procs.values(), GraphError)
        print(f"  scenario {trace.name!r} running ({duration:g} s, x{time_scale:.2f})",
              flush=True)
        t0 = record.t0
        phases = scenario_phases(trace)
        current = None
        end = t0 + duration
        while time.time() < end:
            if _STOPPING.is_set():
                raise KeyboardInterrupt
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
    p.add_argument("--model", metavar="NAME",
                   help="run models/NAME/ (backbone.pt, profile_table.json; its images in "
                        "models/NAME/data unless --dataset-dir)")
    p.add_argument("--backbone", help="a backbone checkpoint (default: the shipped one)")
    p.add_argument("--table", help="the profile table measured for --backbone")
    p.add_argument("--dataset-dir", help="the model's image folder (one sub-folder per class; "
                                         "its test/ split when it has one), replayed as "
                                         "640x480 colour frames (default: Fashion-MNIST)")
    p.add_argument("--out", type=Path, help="output directory (default runs/<UTC time>)")
    p.add_argument("--quiet", action="store_true", help="no live event lines")
    return p


# Set by Ctrl-C or SIGTERM, and checked by the loops below: the KeyboardInterrupt the handler
# raises can land inside a library call that swallows it (seen once in a fresh-clone test run:
# the demo played on for 30 s after a Ctrl-C), the flag cannot.
_STOPPING = threading.Event()


def _raise_interrupt(signum: int, frame: Any) -> None:
    _STOPPING.set()
    raise KeyboardInterrupt


def _until(predicate: Callable[[], bool]) -> Callable[[], bool]:
    """``predicate`` for spin_until, which also ends the wait on a Ctrl-C or SIGTERM."""
    def check() -> bool:
        if _STOPPING.is_set():
            raise KeyboardInterrupt
        return predicate()
    return check


def cli_main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.duration <= 0 or (args.baseline_duration is not None and args.baseline_duration <= 0):
        print("adaspring demo: durations must be > 0", file=sys.stderr)
        return 2
    scenario_path = resolve_scenario(args.scenario)
    try:
        trace = ScenarioTrace.load(scenario_path)
        model = resolve_model(args.model, args.backbone, args.table, args.dataset_dir)
    except (ValueError, OSError) as exc:
        print(f"adaspring demo: {exc}", file=sys.stderr)
        return 2
    out = (args.out or default_out_dir()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        env = ros_environment(out / "logs")
    except DomainError as exc:
        print(f"adaspring demo: {exc}", file=sys.stderr)
        return 2
    use_environment(env)
    _STOPPING.clear()
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    previous_int = signal.signal(signal.SIGINT, _raise_interrupt)
    runs = [("adaptive", True, args.duration)]
    if not args.no_baseline:
        runs.append(("static full", False, args.baseline_duration or args.duration / 2))
    task = f"task: {describe_task(model.card)}"
    print(f"adaspring demo: scenario {trace.name!r} ({trace.description or scenario_path}), "
          f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, output in {out}\n"
          f"model: {model.backbone or paths.default_backbone()}\n{task}\nimages: "
          + (f"{model.images} of {model.dataset_dir}" if model.dataset_dir
             else "Fashion-MNIST test split"))
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
                                    args.hog_per_unit, args.quiet, model=model))
    except (KeyboardInterrupt, ExternalShutdownException):
        print("\ninterrupted: every node stopped", file=sys.stderr)
        code = 130
    except GraphError as exc:
        print(f"\nadaspring demo: {exc}", file=sys.stderr)
        code = 1
    finally:
        rclpy.try_shutdown()
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
    if not records or not any(r.frames for r in records):
        return code or 1
    rows = summarise(records, trace, served_accuracy(model.table))
    table = task + "\n\n" + format_table(rows) + "\n\n" + verdict(rows)
    if records[0].calibration:
        table += "\n" + describe_calibration(records[0].calibration)
    print(f"\n=== summary (deadline = the phase's latency budget; dropped frames count as "
          f"missed; the static run is a separate, time-scaled pass) ===\n{table}")
    visited = [e["config_id"] for e in records[0].events] if records[0].evolution else []
    if visited:
        print(f"variants visited by the adaptive run ({len(set(visited))} distinct): "
              + " -> ".join(f"{c[:9]}…" for c in visited))
    write_outputs(records, rows, table, trace, out, model.to_dict())
    return code
