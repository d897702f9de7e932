"""`adaspring demo` end to end (short form): four real node processes, a scenario with a real
competing CPU load, the summary table, the timeline PNG, the raw events, and no orphan process
after a normal exit or a Ctrl-C. The report's arithmetic is tested without ROS in
test_demo_report.py."""

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


def test_a_users_colour_model_runs_on_its_own_images_and_the_report_names_its_task(tmp_path):
    from colour_model import write_colour_model, write_image_folder

    backbone, table = write_colour_model(tmp_path / "model")
    images = write_image_folder(tmp_path / "task")
    out = tmp_path / "run"
    proc = demo(out, "--duration", "8", "--no-baseline", "--hog-per-unit", "1",
                "--backbone", str(backbone), "--table", str(table), "--dataset-dir", str(images))
    try:
        stdout, _ = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout
    task = "task: 3 classes (apple, bus, cat); 3 channel(s), colour (RGB); 32/40/48 px"
    assert task in stdout and f"images: 7 of {images}" in stdout, stdout
    assert (out / "summary.txt").read_text().startswith(task)
    data = json.loads((out / "events.json").read_text())
    assert data["model"]["card"]["classes"] == ["apple", "bus", "cat"]
    assert data["model"]["dataset_dir"] == str(images)
    frames = data["runs"][0]["frames"]
    assert len(frames) > 20 and {f["label"] for f in frames} <= {0, 1, 2}
    assert not wait_gone(out), "orphan processes after the demo"


def test_a_model_that_does_not_fit_its_images_stops_the_demo_before_any_node(tmp_path):
    from colour_model import write_colour_model

    backbone, table = write_colour_model(tmp_path / "model")
    proc = demo(tmp_path / "run", "--backbone", str(backbone), "--table", str(table))
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, stdout
    assert "not Fashion-MNIST" in stdout and "--dataset-dir" in stdout
    assert "Traceback" not in stdout and not leftovers(tmp_path / "run")


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
