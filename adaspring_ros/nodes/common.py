"""What every adaspring node does the same way: its ``main()`` and its /diagnostics messages."""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Callable, Mapping

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

__all__ = ["run", "die_with_launcher", "diagnostic_status", "diagnostic_array"]

# A node that cannot start (bad parameters, data or weights) exits 2 with one fatal log line.
START_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ParameterException)
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2  # linux/prctl.h


def die_with_launcher(signum: int = signal.SIGINT) -> None:
    """Have the kernel send ``signum`` to this process when the one that started it dies
    (Linux PR_SET_PDEATHSIG), unless that one asked for a signal of its own already.

    ``ros2 launch`` ends at once on SIGTERM without stopping its nodes (ros2/launch#666), and
    cannot stop them when it is killed: the nodes would run on, orphaned, in the robot's graph.
    With this they get the Ctrl-C a launch sends and shut down cleanly. Off Linux: nothing.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    current = ctypes.c_int(0)
    if prctl(PR_GET_PDEATHSIG, ctypes.byref(current), 0, 0, 0) == 0 and not current.value:
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)


def run(factory: Callable[[], Node], name: str, args: list[str] | None = None,
        start_errors: tuple[type[BaseException], ...] = ()) -> None:
    """Initialise rclpy, build the node and spin it (one thread, every callback in turn) until
    Ctrl-C, an external shutdown or the end of the process that started it. ``start_errors``
    are added to :data:`START_ERRORS`: any of them at construction is logged as fatal and exits
    with 2.
    """
    interrupted = False

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    # rclpy's own handler (installed by init) passes the signal on to this one
    previous = signal.signal(signal.SIGINT, on_sigint)
    die_with_launcher()
    try:
        with rclpy.init(args=args):
            try:
                node = factory()
            except START_ERRORS + start_errors as exc:
                if interrupted:
                    # A Ctrl-C while the node starts (a launch stopping every node because
                    # another one died) can surface as a start error: an extension module's
                    # import turns a KeyboardInterrupt into ImportError ("engine 'onnxruntime'
                    # is not installed", seen in CI). It is the interrupt: end quietly.
                    return
                # On the way out with 2, a Ctrl-C (a launch stopping the other nodes because of
                # this one) must turn that into neither 0 nor a KeyboardInterrupt.
                previous = signal.SIG_IGN
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
                raise SystemExit(2) from None
            try:
                rclpy.spin(node)
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # A Ctrl-C that lands while rclpy's C++ side converts a message to Python reaches
        # here as pybind11's "Unable to convert call argument" instead of KeyboardInterrupt:
        # after a SIGINT it is the interrupt; without one it is a real error.
        if not interrupted:
            raise
    finally:
        signal.signal(signal.SIGINT, previous)


def diagnostic_status(name: str, level: bytes, message: str, values: Mapping[str, object],
                      hardware_id: str = "cpu") -> DiagnosticStatus:
    """A DiagnosticStatus with ``values`` as strings."""
    return DiagnosticStatus(name=name, hardware_id=hardware_id, level=level, message=message,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def diagnostic_array(node: Node, *statuses: DiagnosticStatus) -> DiagnosticArray:
    """The statuses as one DiagnosticArray stamped with the node's clock now."""
    array = DiagnosticArray(status=list(statuses))
    array.header.stamp = node.get_clock().now().to_msg()
    return array
