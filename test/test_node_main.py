"""nodes.common.run, the main() of every node, in a child process of its own (it owns rclpy's
init and the SIGINT handler): Ctrl-C ends it quietly even when the interrupt surfaces from
rclpy's C++ side as a RuntimeError or, while the node starts, as a start error (an import it
broke); a RuntimeError or a start error without a Ctrl-C still fails loudly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from rclpy.node import Node
    from adaspring_ros.nodes.common import run

    INTERRUPT = sys.argv[1] in ("interrupt", "start-interrupt")
    AT_START = sys.argv[1].startswith("start")

    class Node1(Node):
        def __init__(self):
            super().__init__("main_probe")
            self.create_timer(0.05, self.tick)
            if AT_START:
                self.load_engine()

        def load_engine(self):
            try:
                if INTERRUPT:  # a launch stopping every node while this one is configuring
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1.0)
            except KeyboardInterrupt as exc:
                # what an extension module's import does with it (numpy's import_array)
                raise ImportError("numpy.core.multiarray failed to import") from exc
            raise ValueError("engine 'onnxruntime' is not installed")

        def tick(self):
            try:
                if INTERRUPT:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1.0)
            except KeyboardInterrupt:
                pass
            # what pybind11 raises when a KeyboardInterrupt hits it mid-conversion
            raise RuntimeError("Unable to convert call argument '0' to Python object")

    run(Node1, "main_probe", start_errors=(ImportError,))
    print("returned", flush=True)
""")


ROOT = Path(__file__).resolve().parent.parent


def child(mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)


def test_ctrl_c_that_surfaces_as_a_runtime_error_ends_the_node_quietly():
    done = child("interrupt")
    assert done.returncode == 0, done.stderr
    assert "returned" in done.stdout and "Traceback" not in done.stderr


def test_a_runtime_error_without_ctrl_c_still_ends_the_node_with_its_traceback():
    done = child("error")
    assert done.returncode != 0
    assert "RuntimeError: Unable to convert call argument" in done.stderr


def test_ctrl_c_while_the_node_starts_ends_it_quietly_even_as_a_start_error():
    done = child("start-interrupt")
    assert done.returncode == 0, done.stderr
    assert "returned" in done.stdout
    assert "cannot start" not in done.stderr and "failed to import" not in done.stderr


def test_a_start_error_without_ctrl_c_still_ends_the_node_with_2_and_one_fatal_line():
    done = child("start-error")
    assert done.returncode == 2, done.stderr
    assert "cannot start: engine 'onnxruntime' is not installed" in done.stderr
    assert "Traceback" not in done.stderr
