"""Command lines for child Python processes that die with the process that starts them.

The child asks the kernel for a signal when its parent dies (PR_SET_PDEATHSIG, kept across exec)
in a tiny interpreter that then execs the real command, so a demo or a test run that is itself
killed (SIGKILL, a CI timeout) leaves no node behind to talk into a later run's ROS graph. Doing
this before exec in the forked child instead (``preexec_fn``) is unsafe in a parent that runs
threads, as any rclpy process does.
"""

from __future__ import annotations

import os
import signal
import sys

# argv: parent pid, signal number, then the real interpreter arguments. If the parent died before
# prctl, getppid() already names another process: exit rather than run orphaned. Off Linux there
# is no prctl and the child runs unguarded (the callers' explicit shutdown still applies).
_GUARD = (
    "import ctypes, os, sys\n"
    "try: ctypes.CDLL(None).prctl(1, int(sys.argv[2]))\n"
    "except (OSError, AttributeError): pass\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(70)\n"
    "os.execv(sys.executable, [sys.executable] + sys.argv[3:])\n"
)


def dies_with_parent(python_args: list[str], death_signal: int = signal.SIGTERM) -> list[str]:
    """``[python, *python_args]``, guarded: the child gets ``death_signal`` when this process
    dies. ``-S`` keeps the guard's own start-up to a few milliseconds."""
    return [sys.executable, "-S", "-c", _GUARD, str(os.getpid()), str(int(death_signal)),
            *python_args]
