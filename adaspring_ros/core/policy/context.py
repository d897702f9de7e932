"""The context block's snapshot: what the device and the application allow right now.

A :class:`Context` is one snapshot (battery, CPU load, memory, latency budget, ...), checked
against :data:`CONTEXT_LIMITS`. It comes from psutil (psutil_source.py), a scenario trace
(scenario.py) or a ContextState message; :func:`battery_from_state` reads the fields of a
``sensor_msgs/BatteryState`` as plain numbers so that a robot's battery driver can overlay the
psutil snapshot. What follows from a context: budgets (core/policy/budgets.py), λ1 and λ2
(core/policy/lambdas.py). Nothing here imports rclpy or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from adaspring_ros.core.validation import optional_reading, require_optional

__all__ = ["CONTEXT_LIMITS", "Context", "BatteryReading", "battery_from_state"]


# What a reading may be: (lowest, highest), both inclusive, for every number of a Context (and a
# scenario step). Infinity is never a reading: "+inf MB available" would lift the memory budget.
# The upper bounds are far beyond any device and only stop absurd values (1e30 MB)
# doing the same; an unknown optional reading is None (NaN in a ROS message), never a huge one.
CONTEXT_LIMITS: dict[str, tuple[float, float]] = {
    "battery_percent": (0.0, 100.0),
    "battery_seconds_left": (0.0, 1e9),  # ~31 years
    "cpu_load_percent": (0.0, 100.0),
    "cpu_load_other_percent": (0.0, 100.0),
    "memory_available_mb": (0.0, 1e9),  # 1 PB
    "cpu_frequency_mhz": (0.0, 1e5),  # 100 GHz
    "cpu_temperature_c": (-273.15, 200.0),
    "latency_budget_ms": (1e-3, 1e7),  # 1 us .. ~2.8 h
}


# --------------------------------------------------------------------------------------------
# The snapshot
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """One snapshot of the device and application context (mirrors adaspring_ros/ContextState).

    Optional readings are ``None`` when the sensor does not exist; NaN passed in (as a ROS message
    carries an unknown value) is turned into ``None``. Loads are percent of the whole machine.
    ``timestamp`` is seconds on whatever clock the producer uses; the evolution policy measures
    staleness on its own clock, from when it received the context.
    """

    battery_percent: float | None = None
    charging: bool = False
    battery_seconds_left: float | None = None
    cpu_load_percent: float = 0.0
    cpu_load_other_percent: float = 0.0
    memory_available_mb: float | None = None
    cpu_frequency_mhz: float | None = None
    cpu_temperature_c: float | None = None
    latency_budget_ms: float = 100.0
    source: str = "default"
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        for name in ("battery_percent", "battery_seconds_left", "memory_available_mb",
                     "cpu_frequency_mhz", "cpu_temperature_c"):
            object.__setattr__(self, name, optional_reading(getattr(self, name)))
        for name in ("cpu_load_percent", "cpu_load_other_percent", "latency_budget_ms",
                     "timestamp"):
            value = float(getattr(self, name))
            if math.isnan(value):
                raise ValueError(f"{name} must be a number, got NaN")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "charging", bool(self.charging))
        for name, (low, high) in CONTEXT_LIMITS.items():
            require_optional(name, getattr(self, name), low, high)

    def with_battery(self, reading: BatteryReading, source: str | None = None) -> Context:
        """This context with its battery fields taken from ``reading`` (e.g. a BatteryState)."""
        return replace(
            self, battery_percent=reading.percent, charging=reading.charging,
            battery_seconds_left=reading.seconds_left,
            source=source if source is not None else self.source,
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def describe(self) -> str:
        """A short line for logs and reasons."""
        def opt(v: float | None, fmt: str) -> str:
            return "n/a" if v is None else format(v, fmt)

        battery = "none" if self.battery_percent is None else f"{self.battery_percent:.0f}%"
        if self.charging:
            battery += " charging"
        return (f"battery {battery}, cpu {self.cpu_load_percent:.0f}% "
                f"(others {self.cpu_load_other_percent:.0f}%), "
                f"mem {opt(self.memory_available_mb, '.0f')} MB, "
                f"budget {self.latency_budget_ms:g} ms [{self.source}]")


# --------------------------------------------------------------------------------------------
# Battery from a sensor_msgs/BatteryState
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatteryReading:
    """The battery part of a context: percent 0..100 (None = unknown), charging, seconds left."""

    percent: float | None
    charging: bool
    seconds_left: float | None = None


# The sensor_msgs/BatteryState.power_supply_status values that mean "on external power".
POWER_SUPPLY_STATUS_CHARGING = 1
POWER_SUPPLY_STATUS_FULL = 4


def battery_from_state(
    percentage: float,
    power_supply_status: int,
    *,
    charge: float = math.nan,
    capacity: float = math.nan,
    current: float = math.nan,
    present: bool = True,
) -> BatteryReading:
    """A BatteryReading from the fields of a ``sensor_msgs/BatteryState``, passed as numbers.

    ``percentage`` is ROS's 0..1 fraction (NaN when unknown); when it is unknown but ``charge``
    and ``capacity`` (Ah) are, the percent is charge / capacity. "Charging" means on external
    power: status CHARGING or FULL. Seconds left = charge / |current| x 3600, only while
    discharging (current < 0 by the message's convention) and when both are known. Nothing is
    guessed: what cannot be derived stays None. A battery that is not ``present`` reads as none.
    """
    if not present:
        return BatteryReading(percent=None, charging=False, seconds_left=None)
    status = int(power_supply_status)
    if status not in range(5):
        raise ValueError(f"power_supply_status must be 0..4, got {status}")
    fraction = optional_reading(percentage)
    charge_ah = optional_reading(charge)
    capacity_ah, current_a = optional_reading(capacity), optional_reading(current)
    if fraction is None and charge_ah is not None and capacity_ah:
        fraction = charge_ah / capacity_ah
    if fraction is not None:
        if not -1e-6 <= fraction <= 1.0 + 1e-6:
            raise ValueError(f"BatteryState.percentage is a fraction 0..1, got {fraction}")
        fraction = min(max(fraction, 0.0), 1.0)
    charging = status in (POWER_SUPPLY_STATUS_CHARGING, POWER_SUPPLY_STATUS_FULL)
    seconds_left = None
    if not charging and charge_ah is not None and current_a is not None and current_a < 0:
        seconds_left = max(charge_ah, 0.0) / -current_a * 3600.0
    return BatteryReading(
        percent=None if fraction is None else 100.0 * fraction,
        charging=charging, seconds_left=seconds_left,
    )
