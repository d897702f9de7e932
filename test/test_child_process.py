"""dies_with_parent: a guarded child goes when its parent is SIGKILLed; an unguarded one stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

# The parent starts one child, prints its pid and waits to be killed.
PARENT = (
    "import subprocess, sys, time\n"
    "from adaspring_ros.demo.child_process import dies_with_parent\n"
    "args = ['-c', 'import time; time.sleep(60)']\n"
    "cmd = dies_with_parent(args) if sys.argv[1] == 'guarded' else [sys.executable, *args]\n"
    "print(subprocess.Popen(cmd, start_new_session=True).pid, flush=True)\n"
    "time.sleep(60)\n"
)


def child_after_parent_killed(mode: str) -> bool:
    """Whether the child still runs 3 s after its parent got SIGKILL (the child is killed)."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE,
                              text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        deadline = time.monotonic() + 10  # the guard execs the real command
        while "time.sleep(60)" not in " ".join(child.cmdline()) and time.monotonic() < deadline:
            time.sleep(0.05)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        try:
            child.wait(3)
            return False
        except psutil.TimeoutExpired:
            return True
    finally:
        if child.is_running():
            child.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_guarded_child_dies_with_its_parent():
    assert not child_after_parent_killed("guarded")
    assert child_after_parent_killed("plain")  # so the check above can fail
