"""The context of the machine this runs on, sampled with psutil.

Battery, CPU frequency and temperature are read only when the OS exposes them; a missing sensor
stays ``None``, it is never invented.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from typing import Any

from adaspring_ros.core.policy.context import BatteryReading, Context

__all__ = ["PsutilSource"]


class PsutilSource:
    """Samples the machine with psutil.

    CPU loads are averages since the previous :meth:`sample` (the first call primes the
    counters, so it reports the load since construction). "Others" is the system load minus the
    load of ``own_pids`` (default: this process; the context node passes the perception node's
    pid when it knows it), as percent of the whole machine.
    """

    def __init__(self, own_pids: Iterable[int] | None = None) -> None:
        import psutil  # imported here so that importing this module stays cheap

        self._psutil = psutil
        self._ncpu = psutil.cpu_count() or 1
        self._own: list[Any] = []
        for pid in (os.getpid(),) if own_pids is None else tuple(own_pids):
            try:
                proc = psutil.Process(int(pid))
                proc.cpu_percent(None)  # prime: the next call measures from here
                self._own.append(proc)
            except psutil.Error:
                pass  # the process went away; it no longer loads the CPU
        psutil.cpu_percent(None)

    def _own_load(self) -> float:
        total = 0.0
        for proc in list(self._own):
            try:
                total += proc.cpu_percent(None) / self._ncpu
            except self._psutil.Error:
                self._own.remove(proc)
        return total

    def battery(self) -> BatteryReading | None:
        """The OS battery, or None when the machine has none (or psutil cannot read it)."""
        reader = getattr(self._psutil, "sensors_battery", None)
        try:
            info = reader() if reader is not None else None
        except (OSError, RuntimeError):
            info = None
        if info is None:
            return None
        secs = info.secsleft
        # psutil reports "unlimited" and "unknown" as negative sentinels.
        seconds_left = float(secs) if isinstance(secs, (int, float)) and secs >= 0 else None
        plugged = bool(info.power_plugged) if info.power_plugged is not None else False
        return BatteryReading(percent=float(info.percent), charging=plugged,
                              seconds_left=None if plugged else seconds_left)

    def _frequency(self) -> float | None:
        try:
            freq = self._psutil.cpu_freq()
        except (OSError, RuntimeError, NotImplementedError):
            return None
        return float(freq.current) if freq is not None and freq.current > 0 else None

    def _temperature(self) -> float | None:
        reader = getattr(self._psutil, "sensors_temperatures", None)
        try:
            sensors = reader() if reader is not None else {}
        except (OSError, RuntimeError):
            return None
        readings = [t.current for entries in (sensors or {}).values() for t in entries
                    if t.current is not None and math.isfinite(t.current) and t.current > 0]
        return max(readings) if readings else None

    def sample(
        self,
        latency_budget_ms: float,
        *,
        battery: BatteryReading | None = None,
        timestamp: float | None = None,
    ) -> Context:
        """A Context of this machine now. ``battery`` (e.g. from a BatteryState) overrides the
        OS battery; ``timestamp`` defaults to ``time.time()``."""
        system = float(self._psutil.cpu_percent(None))
        others = min(max(system - self._own_load(), 0.0), 100.0)
        memory = self._psutil.virtual_memory().available / 2**20
        source = "psutil"
        reading = battery
        if reading is None:
            reading = self.battery()
        else:
            source = "psutil+battery_state"
        reading = reading or BatteryReading(percent=None, charging=False)
        return Context(
            battery_percent=reading.percent, charging=reading.charging,
            battery_seconds_left=reading.seconds_left,
            cpu_load_percent=min(system, 100.0), cpu_load_other_percent=others,
            memory_available_mb=memory, cpu_frequency_mhz=self._frequency(),
            cpu_temperature_c=self._temperature(), latency_budget_ms=latency_budget_ms,
            source=source, timestamp=time.time() if timestamp is None else timestamp,
        )
