"""The demo's record and report: what one pass recorded, its per-phase summary next to the static
full model, the verdict, the timeline PNG and the raw events (``adaspring demo`` writes them under
runs/<time>/). Reads records only; demo.py runs the passes that fill them.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from adaspring_ros.core.policy.budgets import compute_budgets
from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.scenario import ScenarioTrace
from adaspring_ros.core.serving.frame_stats import percentile

__all__ = ["Phase", "scenario_phases", "Frame", "RunRecord", "phase_stats", "summarise",
           "format_table", "swap_label", "describe_calibration", "verdict",
           "energy_budget_line", "plot_timeline", "write_outputs"]


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
    calibration: dict[str, float] = field(default_factory=dict)  # see run.calibrate_energy

    def scenario_time(self, wall: float) -> float:
        return (wall - self.t0) * self.time_scale


# -- summary ---------------------------------------------------------------------------------
def phase_stats(record: RunRecord, start: float, end: float, budget_ms: float,
                table_accuracy: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Accuracy, latency, deadline hit rate and energy of the frames stamped in [start, end).

    Frames the camera sent that never produced a result (dropped in the keep-last-1 queue or
    lost) are found from gaps in the camera's sequence numbers and count as missed deadlines.
    Live accuracy on a few hundred frames is a coarse estimate (its 95 % half-width is
    ``accuracy_ci95``); ``table_accuracy`` (config id -> top-1 %, the profile table's, measured
    on the 10 000 test images) gives the accuracy of the variants served, frame-weighted.
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
    correct = sum(f.class_id == f.label for f in labelled)
    accuracy = correct / len(labelled) if labelled else math.nan
    served = [table_accuracy.get(f.config_id, math.nan) for f in inside] if table_accuracy else []
    return {
        "frames": len(inside), "dropped": dropped,
        "accuracy_percent": 100.0 * correct / len(labelled) if labelled else math.nan,
        "accuracy_ci95": (196.0 * math.sqrt(accuracy * (1.0 - accuracy) / len(labelled))
                          if labelled else math.nan),
        "table_accuracy_percent": sum(served) / len(served) if served else math.nan,
        "latency_ms_p50": percentile(latencies, 50), "latency_ms_p95": percentile(latencies, 95),
        "deadline_hit_percent": (100.0 * sum(v <= budget_ms for v in latencies) / sent
                                 if sent else math.nan),
        "energy_mj_per_frame": energy / weighted if weighted else math.nan,
        "variants": dict(sorted(variants.items(), key=lambda kv: -kv[1])),
    }


def summarise(records: list[RunRecord], trace: ScenarioTrace,
              table_accuracy: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    rows = []
    phases = scenario_phases(trace)
    for phase in phases:
        for record in records:
            rows.append({"phase": phase.label, "run": record.name,
                         **phase_stats(record, phase.start, phase.end, phase.budget_ms,
                                       table_accuracy)})
    for record in records:  # the whole run; deadlines against each frame's own phase budget
        whole = [phase_stats(record, p.start, p.end, p.budget_ms) for p in phases]
        sent = sum(w["frames"] + w["dropped"] for w in whole)
        hits = sum(w["deadline_hit_percent"] * (w["frames"] + w["dropped"]) / 100
                   for w in whole if w["frames"] + w["dropped"])
        all_stats = phase_stats(record, 0.0, math.inf, math.inf, table_accuracy)
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
    """A short label of one swap for the timeline: the variant and why (the decision's kind,
    which starts its reason), e.g. ``r24-w50d2… 91.7% 4.1 mJ (budget)``."""
    reason = event["reason"]
    kind = reason.split(":", 1)[0]
    why = "re-applied" if reason.startswith("re-applied") else \
        {"violation": "budget"}.get(kind, kind)
    return (f"{event['config_id'][:9]}… {event['predicted_accuracy_percent']:.1f}% "
            f"{event['predicted_energy_mj']:.3g} mJ ({why})")


def describe_calibration(calibration: Mapping[str, float]) -> str:
    """One line: the energy budget of the scenario as measured on this host."""
    c = calibration
    return (f"energy budget: {c['energy_budget_at_start']:g} x {c['frame_energy_mj']:.2f} mJ "
            f"(a frame of the full model here, median of {c['windows']:g} metrics windows "
            f"before the scenario) = {c['budget_mj']:.2f} mJ per frame at t = 0, "
            f"perception_energy_share {c['perception_energy_share']:.4f} of a "
            f"{c['battery_capacity_wh']:g} Wh battery at {c['battery_percent']:g} % for a "
            f"{c['mission_duration_s']:g} s mission; it falls with the battery")


def verdict(rows: list[dict[str, Any]]) -> str:
    """One line: adaptive against static full over the whole scenario, and whether adaptive is
    at least as good on deadline hits and energy with at most 2 points less accuracy.

    Accuracy is judged on the test-split accuracy of the variants served, frame-weighted, when
    the rows have it: the two runs classify a few hundred different frames, so their live
    accuracies differ by 1-2 points by chance alone (both are shown, with their 95 % spread).
    Deadline hits likewise count as level when they differ by less than one frame of the
    shorter run (when the rows give their frame counts): the static run is half as long, so one
    frame missed of 600 against none of 300 says nothing either way."""
    whole = {r["run"]: r for r in rows if r["phase"] == "whole scenario"}
    if "adaptive" not in whole or "static full" not in whole:
        return "adaptive vs static full: no static run to compare with"
    a, f = whole["adaptive"], whole["static full"]
    shorter = min(r.get("frames", 0) + r.get("dropped", 0) for r in (a, f))    # frames sent
    one_frame = 100.0 / shorter if shorter > 0 else 0.0
    behind = f["deadline_hit_percent"] - a["deadline_hit_percent"]
    hits_ok = behind <= 0 or behind < one_frame - 1e-9
    energy_ok = a["energy_mj_per_frame"] <= f["energy_mj_per_frame"]
    served = (a.get("table_accuracy_percent", math.nan), f.get("table_accuracy_percent", math.nan))
    by_table = all(math.isfinite(v) for v in served)
    judged = served if by_table else (a["accuracy_percent"], f["accuracy_percent"])
    acc_ok = judged[0] >= judged[1] - 2.0
    ok = hits_ok and energy_ok and acc_ok
    spread = (f" (±{_fmt(a['accuracy_ci95'])} / ±{_fmt(f['accuracy_ci95'])})"
              if "accuracy_ci95" in a and "accuracy_ci95" in f else "")
    of_served = (f", of the variants served (test split) {served[0]:.2f} vs {served[1]:.2f} %"
                 if by_table else "")
    return (f"adaptive vs static full, whole scenario: deadline hits "
            f"{_fmt(a['deadline_hit_percent'])} vs {_fmt(f['deadline_hit_percent'])} %, "
            f"energy {_fmt(a['energy_mj_per_frame'], 2)} vs {_fmt(f['energy_mj_per_frame'], 2)} "
            f"mJ/frame, live accuracy {_fmt(a['accuracy_percent'])} vs "
            f"{_fmt(f['accuracy_percent'])} %{spread}{of_served}: "
            + ("adaptive is at least as good on deadlines and energy, within 2 points of "
               "accuracy" if ok else "NOT better: " + ", ".join(
                   what for what, good in (("deadline hits", hits_ok), ("energy", energy_ok),
                                           ("accuracy (> 2 points lower)", acc_ok))
                   if not good)))


# -- timeline --------------------------------------------------------------------------------
def energy_budget_line(record: RunRecord, trace: ScenarioTrace) -> list[tuple[float, float]]:
    """(scenario time, energy budget per frame) at each context of a calibrated run: what the
    evolution node was given to meet (the mission counted from t = 0)."""
    if not record.calibration:
        return []
    params = replace(trace.budget_params(),
                     perception_energy_share=record.calibration["perception_energy_share"])
    line = []
    for c in record.contexts:
        t = record.scenario_time(c["time"])
        if t < 0 or not math.isfinite(c["battery_percent"]):
            continue
        context = Context(battery_percent=c["battery_percent"])
        budgets = compute_budgets(context, params, mission_remaining_s=max(
            params.mission_duration_s - t / record.time_scale, 0.0))
        if math.isfinite(budgets.energy_mj):
            line.append((t, budgets.energy_mj))
    return line


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
        budget = energy_budget_line(record, trace)
        if budget:
            twin.plot(*zip(*budget, strict=True), color="black", linestyle="--", linewidth=1,
                      label="energy budget per frame")
            twin.legend(loc="lower right", fontsize=8)
    ax.set_ylabel("accuracy %")
    ax.set_xlabel("scenario time, s")
    ax.legend(loc="lower left", fontsize=8)
    for ax in axes:
        ax.set_xlim(0, trace.duration_s)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(records: list[RunRecord], rows: list[dict[str, Any]], table: str,
                  trace: ScenarioTrace, out: Path, model: dict[str, Any] | None = None) -> None:
    """events.json (the scenario, ``model``: which backbone, table and images with the model
    card, the summary rows, every run's raw record), summary.txt (``table``) and the timeline."""
    def clean(value: Any) -> Any:  # JSON has no NaN
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    data = {"scenario": trace.name, "scenario_path": trace.path, "model": model or {},
            "summary": rows, "runs": [asdict(r) for r in records]}
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
