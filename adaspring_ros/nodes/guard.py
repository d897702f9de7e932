"""CallbackGuard: no exception escapes a node's callbacks; each is counted and logged (throttled).

An exception that leaves a callback leaves ``executor.spin()`` too and ends the node: one hostile
frame that raises MemoryError would stop the perception node. Every callback a node registers
(subscriptions, services, timers, parameter and future callbacks) goes through ``guard(...)``;
the node reports ``guard.total`` as ``callback_errors`` on /diagnostics.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import SetParametersResult

__all__ = ["CallbackGuard"]


class CallbackGuard:
    """Wraps callbacks so that any exception is caught, counted per callback and logged at most
    once per ``log_period_s`` per callback (with the number seen since the last line)."""

    def __init__(self, node: Any, log_period_s: float = 5.0) -> None:
        self.node = node
        self.log_period_s = log_period_s
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()  # callbacks run on several executor threads
        self._logged: dict[str, tuple[float, int]] = {}  # name -> (monotonic time, count)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def __call__(self, callback: Callable[..., Any], on_error: Callable[..., Any] | None = None,
                 ) -> Callable[..., Any]:
        """``callback`` guarded; on an exception the wrapper returns ``on_error(*args)`` (None
        without it). functools.wraps keeps the signature visible: rclpy inspects it to decide
        whether a subscription callback gets MessageInfo."""
        name = getattr(callback, "__name__", repr(callback))

        @functools.wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except Exception as exc:  # MemoryError included; KeyboardInterrupt/SystemExit not
                self.record(name, exc)
                return on_error(*args) if on_error is not None else None

        return guarded

    def service(self, callback: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """A service callback: on an exception the (partly filled) response is still sent, so
        the client gets a reply rather than a timeout."""
        return self(callback, on_error=lambda _request, response: response)

    def parameters(self, callback: Callable[[list], SetParametersResult],
                   ) -> Callable[[list], SetParametersResult]:
        """An on-set parameters callback: an exception rejects the change, naming it."""
        def refuse(_params: list) -> SetParametersResult:
            return SetParametersResult(successful=False, reason="validation failed; see the "
                                                                "node's log")
        return self(callback, on_error=refuse)

    def record(self, name: str, exc: BaseException) -> None:
        """Count ``exc`` against callback ``name`` and log it unless logged recently."""
        now = time.monotonic()
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1
            count = self.counts[name]
            last_time, last_count = self._logged.get(name, (-float("inf"), 0))
            if now - last_time < self.log_period_s:
                return
            self._logged[name] = (now, count)
        try:
            context_ok = self.node.context.ok()
        except Exception:  # a node half torn down at shutdown
            context_ok = False
        if not context_ok:
            return  # shutting down: publishers and the logger's sinks may be gone
        since = count - last_count
        self.node.get_logger().error(
            f"{name} failed ({since} time(s) since the last report, {count} in all): {exc!r}")
