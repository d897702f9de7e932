"""FrameThread: a camera subscription taken on a thread of its own, outside the executor.

rclpy's executor is written in Python: every wake gathers the node's entities into a new wait
set, wraps the ready callback in a task and runs it as a coroutine. On the 2-core reference host
that costs ~0.45 ms of CPU per message whatever the callback does (~0.06 ms for the same take
from a wait set of two handles; docs/benchmarks.md, *Design measurements*), a tenth of a colour
frame. The camera stream is the one entity that wakes a perception node at frame rate, so it
gets a loop of its own: a wait set of the subscription, a stop guard condition and rclpy's
SIGINT guard condition, the pattern of rclpy's own ``wait_for_message``. The subscription stays
the node's (``ros2 node info`` lists it) but sits in a callback group that no executor may run,
so executors never wait for it. Services, timers, parameters and lifecycle transitions stay on
the executor. The two threads share the GIL, and ONNX Runtime holds it while it creates a
session, so the perception node starts a variant build between two frames
(core/serving/frame_gaps.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.exceptions import InvalidHandle
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.signals import SignalHandlerGuardCondition

__all__ = ["FrameThread"]

# How long stop() waits for a frame in progress to finish.
STOP_TIMEOUT_S = 10.0
# The longest wait between two looks at the context: a context shut down destroys the stop
# guard condition with it (it cannot be triggered then), so the loop notices by looking.
CONTEXT_POLL_NS = 500_000_000
# The pause after a failed wait or take.
ERROR_PAUSE_S = 0.05


class _TakenByFrameThread(CallbackGroup):
    """A callback group no executor waits for or runs: FrameThread takes its entities."""

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:
        pass


class FrameThread:
    """Subscribes ``node`` to ``topic`` and calls ``callback(msg, info)`` (``info``: the take's
    MessageInfo dict) for each message, in order, on a thread of its own until :meth:`stop`,
    SIGINT or the context's shutdown (seen within CONTEXT_POLL_NS). ``callback`` must not raise
    (wrap it in a CallbackGuard); what the wait or the take raise goes to ``on_error(exc)`` and
    the loop goes on."""

    def __init__(self, node: Node, msg_type: type, topic: str,
                 callback: Callable[[Any, dict], None], qos: QoSProfile, *, raw: bool = False,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.node, self.callback, self.on_error = node, callback, on_error
        group = _TakenByFrameThread()
        self.subscription = node.create_subscription(msg_type, topic, callback, qos, raw=raw,
                                                     callback_group=group)
        self._wake = node.create_guard_condition(lambda: None, callback_group=group)
        self._sigint = SignalHandlerGuardCondition(node.context)
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"frames:{self.subscription.topic_name}")
        self._thread.start()

    @property
    def topic_name(self) -> str:
        return self.subscription.topic_name

    def stop(self) -> None:
        """End the loop (after the frame in progress) and destroy the subscription."""
        self._running = False
        try:
            self._wake.trigger()
        except (InvalidHandle, RuntimeError):  # the context is gone: the loop ends by itself
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(STOP_TIMEOUT_S)
        for destroy in (self._sigint.destroy,
                        partial(self.node.destroy_guard_condition, self._wake),
                        partial(self.node.destroy_subscription, self.subscription)):
            try:
                destroy()
            except InvalidHandle:  # gone with the context already
                pass

    def _loop(self) -> None:
        sub, wake, sigint, context = self.subscription, self._wake, self._sigint, self.node.context
        with context.handle:
            wait_set = _rclpy.WaitSet(1, 2, 0, 0, 0, 0, context.handle)
        while self._running and context.ok():
            try:
                taken = self._take(wait_set, sub, wake, sigint)
            except Exception as exc:  # a handle destroyed at shutdown, an rcl error
                if not (self._running and context.ok()):
                    return
                if self.on_error is not None:
                    self.on_error(exc)
                time.sleep(ERROR_PAUSE_S)  # an error that repeats must not spin a core
                continue
            if taken is not None:
                self.callback(*taken)

    def _take(self, wait_set: Any, sub: Any, wake: Any, sigint: Any) -> tuple | None:
        """Wait for a message (or a wake-up) and take it: (msg, info) or None."""
        # The handles are held while waited on, as the executor does: none is destroyed under
        # the wait set.
        with sub.handle, wake.handle, sigint.handle:
            wait_set.clear_entities()
            wait_set.add_subscription(sub.handle)
            wait_set.add_guard_condition(wake.handle)
            wait_set.add_guard_condition(sigint.handle)
            wait_set.wait(CONTEXT_POLL_NS)
            if not self._running or \
                    sub.handle.pointer not in wait_set.get_ready_entities("subscription"):
                return None
            return sub.handle.take_message(sub.msg_type, sub.raw)
