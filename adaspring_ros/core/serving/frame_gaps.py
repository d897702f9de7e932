"""FrameGaps: when the camera's next frame is due, so that a variant build runs between frames.

Frames are classified on their own thread, a Reconfigure builds its variant on another, but the
two share the GIL and a build holds it for most of its time: ONNX Runtime's InferenceSession
constructor does not release it (a thread timing 0.2-ms sleeps saw no gap shorter than each
10-ms int8 session creation; docs/benchmarks.md, *Design measurements*). A frame that arrives
during a build waits for it, past an 8 ms deadline when the build is an int8 one. Cameras are
periodic, so the build waits, when the next frame is due sooner than the build takes, until the
frame in progress or that next one has been classified: then the whole gap to the following
frame is the build's. A silent camera, or one not yet seen twice, costs no wait.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FrameGaps", "LONGEST_WAIT_S"]

# The longest a build waits for a gap: a camera slower than this gets its build at once.
LONGEST_WAIT_S = 0.25
# Frame intervals the period is the median of.
HISTORY = 8


class FrameGaps:
    """Frame starts and ends (``with gaps.frame():`` around each frame) and the wait that puts
    a build of a known duration between two frames (:meth:`wait_for_gap`). Thread-safe."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._starts: deque[float] = deque(maxlen=HISTORY + 1)
        self._running = 0
        self._ended = 0

    @contextmanager
    def frame(self) -> Iterator[None]:
        """Around one frame's work, from its arrival to its result."""
        with self._changed:
            self._starts.append(time.perf_counter())
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._ended += 1
                self._changed.notify_all()

    def period_s(self) -> float | None:
        """The median interval between the recent frames' starts; None before two frames."""
        with self._changed:
            return self._period()

    def _period(self) -> float | None:
        starts = list(self._starts)
        if len(starts) < 2:
            return None
        return statistics.median(b - a for a, b in zip(starts, starts[1:], strict=False))

    def wait_for_gap(self, needed_s: float) -> float:
        """Return once a build of ``needed_s`` fits before the next frame is due: at once when
        no frame runs and the next is due in ``needed_s`` or more (or the camera has missed a
        whole period, or the period is unknown or over LONGEST_WAIT_S); else after the next
        frame to end has ended, at most ~2 periods. Returns the seconds waited."""
        start = time.perf_counter()
        with self._changed:
            period = self._period()
            if period is None or period > LONGEST_WAIT_S:
                return 0.0
            if not self._running:
                due = self._starts[-1] + period
                if due - start >= needed_s or start - due > period:
                    return 0.0
            ended, deadline = self._ended, start + min(2 * period + needed_s, LONGEST_WAIT_S)
            while self._ended == ended:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._changed.wait(left)
        return time.perf_counter() - start
