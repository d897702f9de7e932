"""Child processes of a ROS graph, shared by the demo, the tests and the benchmarks.

* :func:`ros_environment` / :func:`use_environment`: a ROS domain on loopback that no other run on
  this machine uses (domains.py), the source tree first on PYTHONPATH, logs in one directory;
* :class:`ChildProcess`: one node (or any Python module) in its own session, its output in a log
  file; it dies with the process that started it (child_process.py), stops with SIGINT (a clean
  rclpy shutdown), then SIGKILL; :class:`ChildProcesses`: the named children of one run;
* :class:`CpuHog`: real competing CPU load, one busy-loop process per unit;
* :func:`spin_until`: spin a node until a condition holds, failing early when a child died.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from adaspring_ros.core import paths
from adaspring_ros.demo.child_process import dies_with_parent
from adaspring_ros.demo.domains import DomainClaim, claim_domain

__all__ = ["SOURCE_ROOT", "GraphError", "source_env", "ros_environment", "use_environment",
           "ChildProcess", "ChildProcesses", "CpuHog", "spin_until"]

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout: adaspring_ros/demo/..


class GraphError(RuntimeError):
    """The graph could not be brought up or a node died; the message names it."""


def source_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the source tree first on PYTHONPATH (children run the same code as
    their parent; a colcon-installed copy only adds the generated msg/srv), unbuffered output,
    and ``extra`` on top."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SOURCE_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


_CLAIMS: list[DomainClaim] = []  # held until this process ends, as long as its children


def ros_environment(log_dir: Path, domain_id: int | None = None) -> dict[str, str]:
    """Environment for node processes: ``domain_id`` or a domain claimed for this process
    (domains.py: no other run on this machine gets it), loopback discovery, this tree."""
    env = source_env()
    if domain_id is None:
        _CLAIMS.append(claim_domain())
        domain_id = _CLAIMS[-1].domain_id
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_LOG_DIR"] = str(Path(log_dir) / "ros")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    # Camera-sized frames need a larger shared-memory segment than Fast DDS's default, or most
    # best-effort 640x480 frames are lost (see config/fastdds_large_images.xml).
    profile = paths.config_dir() / "fastdds_large_images.xml"
    if profile.is_file():
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    # One inference thread per node: on a small CPU, more threads only fight each other.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def use_environment(env: dict[str, str]) -> None:
    """Put this process on the children's ROS domain and middleware settings (before rclpy)."""
    os.environ.update({k: v for k, v in env.items() if k.startswith(("ROS_", "RMW_", "FASTDDS_"))})


def ros_arg_value(value: object) -> str:
    """A parameter value as ``-p name:=value`` wants it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ChildProcess:
    """A node (or any Python module) started as a child process; its output goes to a log file."""

    death_signal = signal.SIGTERM  # what the child gets when this process dies

    def __init__(self, args: list[str], log_dir: Path, name: str,
                 env: dict[str, str] | None = None, address_space_bytes: int = 0,
                 log_mode: str = "wb") -> None:
        """``env`` is added to this environment; ``address_space_bytes`` > 0 caps the child's
        address space (RLIMIT_AS), as on a robot with little memory: an allocation past it
        raises MemoryError in the node."""
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, log_mode)
        self.proc = subprocess.Popen(
            dies_with_parent(args, self.death_signal, address_space_bytes), cwd=SOURCE_ROOT,
            env=source_env(env), stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @classmethod
    def module(cls, module: str, log_dir: Path, name: str | None = None,
               ros_args: list[str] | None = None, env: dict[str, str] | None = None,
               address_space_bytes: int = 0, **kwargs: Any) -> ChildProcess:
        args = ["-m", module]
        if ros_args:
            args += ["--ros-args", *ros_args]
        return cls(args, log_dir, name or module.rsplit(".", 1)[-1], env, address_space_bytes,
                   **kwargs)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def interrupt(self) -> None:
        """SIGINT (rclpy shuts down cleanly on it) if still running; does not wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT, then SIGKILL to its process group if it does not exit in time."""
        self.interrupt()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_group()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self._kill_group()


class ChildProcesses:
    """The node processes of one run, by name; each child's output goes to <log_dir>/<name>.log
    (appended). ``stop_all`` is safe to call twice."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, ChildProcess] = {}

    def start_node(self, node: str, params_file: Path, overrides: dict[str, object] | None = None,
                   name: str | None = None, extra_ros_args: list[str] | None = None,
                   ) -> ChildProcess:
        ros_args = ["--params-file", str(params_file)]
        for key, value in (overrides or {}).items():
            ros_args += ["-p", f"{key}:={ros_arg_value(value)}"]
        ros_args += extra_ros_args or []
        return self.start(name or node, ["-m", f"adaspring_ros.nodes.{node}", "--ros-args",
                                         *ros_args])

    def start(self, name: str, python_args: list[str]) -> ChildProcess:
        if name in self.procs and self.procs[name].alive():
            raise RuntimeError(f"{name} is already running")
        child = ChildProcess(python_args, self.log_dir, name, self.env, log_mode="ab")
        self.procs[name] = child
        return child

    def dead(self) -> list[str]:
        """Names of children that exited on their own."""
        return [n for n, p in self.procs.items() if not p.alive()]

    def check(self, doing: str = "running") -> None:
        """Raise GraphError with the log tail of the first child that exited on its own."""
        dead = self.dead()
        if dead:
            raise GraphError(f"{dead[0]} exited while {doing}:\n{self.log_tail(dead[0])}")

    def log_tail(self, name: str, chars: int = 2000) -> str:
        child = self.procs.get(name)
        return child.output()[-chars:] if child is not None else ""

    def stop(self, name: str, timeout: float = 8.0) -> int | None:
        child = self.procs.pop(name, None)
        return child.stop(timeout) if child is not None else None

    def stop_all(self, timeout: float = 8.0) -> None:
        # Signal every child first, then wait: shutting down in parallel keeps Ctrl-C snappy.
        for child in self.procs.values():
            child.interrupt()
        deadline = time.monotonic() + timeout
        for name in list(self.procs):
            self.stop(name, max(0.1, deadline - time.monotonic()))


class CpuHog:
    """Real competing CPU load: one busy-loop process per core, started and stopped on demand."""

    def __init__(self, processes: int | None = None) -> None:
        self.processes = processes or (os.cpu_count() or 1)
        self._procs: list[subprocess.Popen] = []

    @property
    def count(self) -> int:
        """Busy processes running now."""
        return len(self._procs)

    def start(self) -> None:
        if self._procs:
            return
        # -S: no site hooks, so the busy loop starts in milliseconds and holds no ROS libraries.
        self._procs = [
            subprocess.Popen(dies_with_parent(["-S", "-c", "while True: pass"]),
                             stdin=subprocess.DEVNULL, start_new_session=True)
            for _ in range(self.processes)
        ]

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._procs = []

    def __enter__(self) -> CpuHog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spin_until(node: Any, predicate: Callable[[], bool], timeout: float, what: str,
               procs: Iterable[ChildProcess] = (), error: type[Exception] = AssertionError,
               ) -> None:
    """Spin ``node`` until ``predicate()`` holds. Raises ``error`` with the child logs when one
    of ``procs`` exits first or after ``timeout`` seconds (``math.inf``: never)."""
    import rclpy

    procs = list(procs)
    deadline = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            if not p.alive():
                raise error(f"{p.name} exited early ({p.proc.returncode}) while waiting for "
                            f"{what}:\n{p.output()[-3000:]}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name} ---\n{p.output()[-3000:]}" for p in procs)
            raise error(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        rclpy.spin_once(node, timeout_sec=0.05)
