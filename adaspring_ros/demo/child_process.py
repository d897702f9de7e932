"""Command lines for child Python processes that die with the process that starts them.

The child asks the kernel for a signal when its parent dies (PR_SET_PDEATHSIG, kept across exec)
in a tiny interpreter that then execs the real command, so a demo or a test run that is itself
killed (SIGKILL, a CI timeout) leaves no node behind to talk into a later run's ROS graph. Doing
this before exec in the forked child instead (``preexec_fn``) is unsafe in a parent that runs
threads, as any rclpy process does.

The same guard can cap the child's address space (RLIMIT_AS, kept across exec), so a test or a
demo can run a node as a robot with little memory would: an allocation past the cap fails with
MemoryError inside the node instead of succeeding on a large development machine.
"""

from __future__ import annotations

import os
import signal
import sys

# argv: parent pid, signal number, address-space cap in bytes (0 = none), then the real
# interpreter arguments. If the parent died before prctl, getppid() already names another process:
# exit rather than run orphaned. Off Linux there is no prctl and the child runs unguarded (the
# callers' explicit shutdown still applies).
_GUARD = (
    "import ctypes, os, sys\n"
    "try: ctypes.CDLL(None).prctl(1, int(sys.argv[2]))\n"
    "except (OSError, AttributeError): pass\n"
    "if int(sys.argv[3]):\n"
    "    import resource\n"
    "    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]), int(sys.argv[3])))\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(70)\n"
    "os.execv(sys.executable, [sys.executable] + sys.argv[4:])\n"
)


def dies_with_parent(python_args: list[str], death_signal: int = signal.SIGTERM,
                     address_space_bytes: int = 0) -> list[str]:
    """``[python, *python_args]``, guarded: the child gets ``death_signal`` when this process
    dies, and its address space is capped at ``address_space_bytes`` (0 = no cap). ``-S`` keeps
    the guard's own start-up to a few milliseconds."""
    if address_space_bytes < 0:
        raise ValueError(f"address_space_bytes must be >= 0, got {address_space_bytes}")
    return [sys.executable, "-S", "-c", _GUARD, str(os.getpid()), str(int(death_signal)),
            str(int(address_space_bytes)), *python_args]
