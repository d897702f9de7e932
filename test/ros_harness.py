"""Helpers for tests that run real rclpy nodes in separate processes over real DDS on loopback.

Each test module gets a ROS_DOMAIN_ID of its own and localhost-only discovery (set by conftest.py
before any rclpy.init), so modules, and parallel runs on one machine, do not see each other. Tests
wait on matched counts, futures and messages with timeouts, never on bare sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from adaspring_ros.child_process import dies_with_parent

REPO = Path(__file__).resolve().parent.parent


def ros_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child node process: this session's domain, the source tree first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class NodeProcess:
    """A node (or any Python module) started as a child process; its output goes to a log file."""

    def __init__(self, args: list[str], log_dir: Path, name: str,
                 env: dict[str, str] | None = None, address_space_bytes: int = 0) -> None:
        """``address_space_bytes`` > 0 caps the child's address space (RLIMIT_AS), as on a
        robot with little memory: an allocation past it raises MemoryError in the node."""
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            # SIGKILL with the test process: a killed run leaves no node in a later run's graph.
            dies_with_parent(args, signal.SIGKILL, address_space_bytes), cwd=REPO,
            env=ros_env(env),
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    @classmethod
    def module(cls, module: str, log_dir: Path, name: str | None = None,
               ros_args: list[str] | None = None, env: dict[str, str] | None = None,
               address_space_bytes: int = 0) -> NodeProcess:
        args = ["-m", module]
        if ros_args:
            args += ["--ros-args", *ros_args]
        return cls(args, log_dir, name or module.rsplit(".", 1)[-1], env, address_space_bytes)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (a clean rclpy shutdown), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def spin_until(node, predicate: Callable[[], bool], timeout: float, what: str,
               procs: list[NodeProcess] = ()) -> None:
    """Spin ``node`` until ``predicate()`` holds; fail with ``what`` and child logs on timeout."""
    import rclpy

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name} ---\n{p.output()[-3000:]}" for p in procs)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        for p in procs:
            if not p.alive():
                raise AssertionError(f"{p.name} exited early ({p.proc.returncode}) while "
                                     f"waiting for {what}:\n{p.output()[-3000:]}")
        rclpy.spin_once(node, timeout_sec=0.05)


def call_service(node, client, request, what: str, procs: list[NodeProcess] = (),
                 attempts: int = 3, timeout: float = 10.0):
    """Call ``client`` and spin until the reply; the response, or fail with child logs.

    On a loaded machine the server can get the request before it has matched this client's
    reply reader, and Fast DDS then drops the reply ("failed to send response (timeout)"). A
    client cannot see that happen, so an unanswered call is sent again, as the evolution node
    does; every request these tests send is idempotent.
    """
    spin_until(node, client.service_is_ready, 60, f"the service for {what}", procs)
    futures = []
    for attempt in range(attempts):
        futures.append(client.call_async(request))
        try:
            spin_until(node, lambda: any(f.done() for f in futures), timeout,
                       f"{what} (try {attempt + 1} of {attempts})", procs)
        except AssertionError:
            if attempt == attempts - 1:
                raise
            continue
        return next(f for f in futures if f.done()).result()
