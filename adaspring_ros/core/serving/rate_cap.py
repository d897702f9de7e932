"""RateCap: hold an event stream (camera frames, debug images) at or below a rate.

A camera publishes faster than a robot needs its perception: classifying every second frame
halves the energy perception spends. ``RateCap(max_rate_hz).admit(now)`` says whether the frame
arriving at ``now`` is to be processed. Admitted frames follow a schedule one period apart, so
the long-run rate is the cap even when the camera's period does not divide it (30 Hz capped at
4 Hz gives 4 Hz, not the 3.75 Hz that "one period since the last frame" would give); after a
pause longer than a period the schedule restarts at the next frame, so a gap never turns into a
burst.
"""

from __future__ import annotations

import math

from adaspring_ros.core.validation import require_number

__all__ = ["RateCap"]


class RateCap:
    """Admits events at most ``max_rate_hz`` per second on average (0 = every event)."""

    def __init__(self, max_rate_hz: float = 0.0) -> None:
        self.max_rate_hz = max_rate_hz
        self._due = -math.inf  # when the next event may be admitted (seconds, caller's clock)

    @property
    def max_rate_hz(self) -> float:
        return self._rate

    @max_rate_hz.setter
    def max_rate_hz(self, value: float) -> None:
        require_number("max_rate_hz", value, 0.0, math.inf)
        self._rate = float(value)
        self._period = 1.0 / value if value > 0 else 0.0
        self._due = -math.inf  # a new cap starts a new schedule

    def admit(self, now: float) -> bool:
        """True if the event at ``now`` (seconds, monotonic) is to be processed."""
        if self._period == 0.0:
            return True
        if now < self._due:
            return False
        # On schedule (at most a period late): keep it. Later: the stream paused, restart.
        late = now - self._due
        self._due = self._due + self._period if late < self._period else now + self._period
        return True
