"""What every adaspring node does the same way: its ``main()`` and its /diagnostics messages."""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

__all__ = ["run", "diagnostic_status", "diagnostic_array"]

# A node that cannot start (bad parameters, data or weights) exits 2 with one fatal log line.
START_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ParameterException)


def run(factory: Callable[[], Node], name: str, args: list[str] | None = None,
        start_errors: tuple[type[BaseException], ...] = ()) -> None:
    """Initialise rclpy, build the node and spin it (one thread, every callback in turn) until
    Ctrl-C or an external shutdown. ``start_errors`` are added to :data:`START_ERRORS`: any of
    them at construction is logged as fatal and exits with 2.
    """
    interrupted = False

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    # rclpy's own handler (installed by init) passes the signal on to this one
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with rclpy.init(args=args):
            try:
                node = factory()
            except START_ERRORS + start_errors as exc:
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
