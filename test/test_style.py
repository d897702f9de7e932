"""Keeps the code honest: ruff over everything, and core/ never imports rclpy."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed in this environment (make setup installs it)")
    paths = [p for p in ("adaspring_ros", "bench", "test", "tools", "launch", "setup.py")
             if (REPO / p).exists()]
    result = subprocess.run([ruff, "check", *paths], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_is_ros_free():
    offenders = []
    for path in (REPO / "adaspring_ros" / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in
                          ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs")]
    assert not offenders, offenders


def test_weights_load_safely():
    unsafe = []
    for path in (REPO / "adaspring_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if (isinstance(node, ast.Call) and isinstance(func, ast.Attribute)
                    and func.attr == "load" and getattr(func.value, "id", "") == "torch"):
                kw = {k.arg: k.value for k in node.keywords}
                flag = kw.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unsafe.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"
