"""`adaspring demo` end to end (short form): four real node processes, a scenario with a real
competing CPU load, the summary table, the timeline PNG, the raw events, and no orphan process
after a normal exit or a Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parent.parent


def demo(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "adaspring_ros.cli", "demo", "--out", str(out), *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def leftovers(out: Path) -> list[str]:
    """Processes still running with this demo's ROS log dir in their environment."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if str(out) in proc.environ().get("ROS_LOG_DIR", ""):
                found.append(" ".join(proc.info["cmdline"] or []))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_gone(out: Path, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := leftovers(out)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_short_demo_prints_summary_and_writes_timeline(tmp_path):
    out = tmp_path / "run"
    proc = demo(out, "--duration", "12", "--no-baseline")
    try:
        stdout, _ = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout
    assert "=== summary" in stdout and "deadline hit %" in stdout, stdout
    assert "why:" in stdout, stdout  # at least one evolution event printed live
    for phase in ("0-20 s: budget 20 ms", "CPU hog", "40-60 s: budget 8 ms", "battery 45->35%",
                  "whole scenario"):
        assert phase in stdout, stdout
    assert (out / "timeline.png").stat().st_size > 10_000
    data = json.loads((out / "events.json").read_text())
    run = data["runs"][0]
    assert run["name"] == "adaptive" and len(run["events"]) >= 1
    assert run["events"][0]["reason"]
    assert len(run["frames"]) > 40 and any(h[1] > 0 for h in run["hog"])
    whole = [r for r in data["summary"] if r["phase"] == "whole scenario"][0]
    assert whole["accuracy_percent"] > 30 and whole["frames"] > 40
    assert not wait_gone(out), "orphan processes after the demo"


def test_ctrl_c_stops_every_child(tmp_path):
    out = tmp_path / "run"
    proc = demo(out, "--duration", "60", "--no-baseline")
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "running (" in line:  # the scenario (and its nodes) are up
                break
        assert leftovers(out), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted" in rest
    assert not wait_gone(out), "orphan processes after Ctrl-C"


def test_phase_stats_counts_dropped_frames_as_missed_deadlines():
    from adaspring_ros.core.context import ScenarioTrace
    from adaspring_ros.demo import Frame, RunRecord, phase_stats, scenario_phases

    trace = ScenarioTrace.from_yaml(
        "duration_s: 10\nsteps:\n  - {t: 0, latency_budget_ms: 20}\n"
        "  - {t: 4, latency_budget_ms: 5, cpu_hog: 1}\n")
    phases = scenario_phases(trace)
    assert [(p.start, p.end, p.budget_ms, p.hog) for p in phases] == [(0, 4, 20, 0),
                                                                     (4, 10, 5, 1)]
    record = RunRecord("x", True, t0=1000.0, time_scale=2.0)  # scenario runs twice as fast
    # Frames every 0.5 wall s (1 scenario s); seq 3 and 6 never came back; 3 ms then 8 ms.
    for seq in (0, 1, 2, 4, 5, 7, 8, 9):
        stamp = 1000.0 + seq * 0.5
        latency = 0.003 if seq < 4 else 0.008
        record.frames.append(Frame(seq, seq % 2, 0, "c", stamp, stamp + latency, 1.0))
    early = phase_stats(record, 0, 4, 20)  # seq 0..3: 3 received in time, seq 3 dropped
    assert (early["frames"], early["dropped"]) == (3, 1)
    assert early["deadline_hit_percent"] == 75.0 and early["accuracy_percent"] == 100 * 2 / 3
    late = phase_stats(record, 4, 10, 5)  # seq 4..9: 5 received (8 ms > 5 ms), seq 6 dropped
    assert (late["frames"], late["dropped"]) == (5, 1)
    assert late["deadline_hit_percent"] == 0.0
    assert late["latency_ms_p50"] == pytest.approx(8.0)


def test_summary_verdict_and_swap_labels():
    from adaspring_ros.demo import swap_label, verdict

    def whole(run, hits, energy, acc):
        return {"phase": "whole scenario", "run": run, "deadline_hit_percent": hits,
                "energy_mj_per_frame": energy, "accuracy_percent": acc}

    good = verdict([whole("adaptive", 80.0, 20.0, 93.5), whole("static full", 60.0, 30.0, 95.0)])
    assert "80.0 vs 60.0 %" in good and "at least as good" in good
    bad = verdict([whole("adaptive", 80.0, 20.0, 92.5), whole("static full", 60.0, 30.0, 95.0)])
    assert "NOT better" in bad and "accuracy" in bad and "energy" not in bad.split("NOT")[1]
    slow = verdict([whole("adaptive", 50.0, 31.0, 95.0), whole("static full", 60.0, 30.0, 95.0)])
    assert "deadline hits, energy" in slow
    event = {"config_id": "r24-w50d2ck100f-w50d2ck100f-w50d2ck100f", "reason":
             "r28-x violates energy 37 mJ > 27 mJ (contention 1.2x): swap to ...",
             "predicted_accuracy_percent": 91.67, "predicted_energy_mj": 21.1}
    assert swap_label(event) == "r24-w50d2… 91.7% 21.1 mJ (budget)"
    assert swap_label({**event, "reason": "objective gain +1.34 >= 0.15 (battery 29%)"}) \
        .endswith("(gain)")
    assert swap_label({**event, "reason": "initial choice: best of 4"}).endswith("(initial)")
