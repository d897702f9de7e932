"""The context block: what the device and the application allow right now.

A :class:`Context` is one snapshot (battery, CPU load, memory, latency budget, ...). It comes from
one of three sources:

* :class:`PsutilSource` - the machine this runs on (battery, CPU frequency and temperature only
  when the OS exposes them; a missing sensor stays ``None``, it is never invented);
* :func:`battery_from_state` - the fields of a ``sensor_msgs/BatteryState`` as plain numbers, so
  the context node can overlay a robot's battery driver on the psutil snapshot;
* :class:`ScenarioTrace` - a timed YAML trace under ``config/scenarios/`` for demos and benchmarks.

From a context, :func:`compute_budgets` derives the latency / memory / storage / energy budgets of
the runtime search and :func:`adapt_lambdas` the weights λ1 (accuracy) and λ2 (energy efficiency).
Nothing here imports rclpy or torch.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = [
    "CONTEXT_LIMITS",
    "Context",
    "BatteryReading",
    "battery_from_state",
    "PsutilSource",
    "ScenarioError",
    "ScenarioStep",
    "ScenarioTrace",
    "shipped_scenarios",
    "BudgetParams",
    "Budgets",
    "compute_budgets",
    "LambdaParams",
    "Lambdas",
    "adapt_lambdas",
    "contention_from_load",
]


def _optional(value: Any) -> float | None:
    """None for a missing reading (None or NaN, as ROS messages carry it), else a float."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def require_number(name: str, value: Any, low: float, high: float,
                    low_open: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number in [low, high] (or (low, high])."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and low <= value <= high and not (low_open and value == low))
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a finite number in {bracket}{low}, {high}], "
                         f"got {value!r}")


# What a reading may be: (lowest, highest), both inclusive, for every number of a Context (and a
# scenario step). Infinity is never a reading: "+inf MB available" would lift the memory budget
# (issue 18). The upper bounds are far beyond any device and only stop absurd values (1e30 MB)
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


def _check_range(name: str, value: float | None) -> None:
    """ValueError unless ``value`` is None or a finite number within CONTEXT_LIMITS[name]."""
    if value is None:
        return
    low, high = CONTEXT_LIMITS[name]
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value}")


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
            object.__setattr__(self, name, _optional(getattr(self, name)))
        for name in ("cpu_load_percent", "cpu_load_other_percent", "latency_budget_ms",
                     "timestamp"):
            value = float(getattr(self, name))
            if math.isnan(value):
                raise ValueError(f"{name} must be a number, got NaN")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "charging", bool(self.charging))
        for name in CONTEXT_LIMITS:
            _check_range(name, getattr(self, name))

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


# sensor_msgs/BatteryState.power_supply_status values.
POWER_SUPPLY_STATUS_UNKNOWN = 0
POWER_SUPPLY_STATUS_CHARGING = 1
POWER_SUPPLY_STATUS_DISCHARGING = 2
POWER_SUPPLY_STATUS_NOT_CHARGING = 3
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
    fraction = _optional(percentage)
    charge_ah, capacity_ah, current_a = _optional(charge), _optional(capacity), _optional(current)
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


# --------------------------------------------------------------------------------------------
# psutil
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Scenario traces
# --------------------------------------------------------------------------------------------
class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file, step, line and field."""


# Field -> (lowest, highest, may be null). Values hold until the next step sets them, except
# battery_percent, which is interpolated linearly between steps because a battery drains
# continuously.
_STEP_FIELDS: dict[str, tuple[float, float, bool]] = {
    **{name: (*CONTEXT_LIMITS[name], name not in ("cpu_load_percent", "cpu_load_other_percent",
                                                  "latency_budget_ms"))
       for name in CONTEXT_LIMITS},
    "cpu_hog": (0, 64, False),
}
_STEP_DEFAULTS: dict[str, Any] = {
    "battery_percent": None, "charging": False, "battery_seconds_left": None,
    "cpu_load_percent": 5.0, "cpu_load_other_percent": 0.0, "memory_available_mb": None,
    "cpu_frequency_mhz": None, "cpu_temperature_c": None, "latency_budget_ms": 100.0,
    "cpu_hog": 0,
}
_TOP_KEYS = {"name", "description", "duration_s", "budgets", "steps"}


@dataclass(frozen=True)
class ScenarioStep:
    """One step of a trace, every field resolved (carried over from earlier steps).

    ``cpu_hog`` is the number of real competing busy processes the demo should run from this
    step on (0 = none); the simulated contention of the benchmark is ``cpu_load_other_percent``.
    """

    t: float
    battery_percent: float | None
    charging: bool
    battery_seconds_left: float | None
    cpu_load_percent: float
    cpu_load_other_percent: float
    memory_available_mb: float | None
    cpu_frequency_mhz: float | None
    cpu_temperature_c: float | None
    latency_budget_ms: float
    cpu_hog: int
    line: int = 0


def _yaml_lines(text: str) -> tuple[dict[str, int], list[tuple[int, dict[str, int]]]]:
    """Line numbers (1-based) of the top-level keys and of each step and its keys."""
    import yaml

    top: dict[str, int] = {}
    steps: list[tuple[int, dict[str, int]]] = []
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return top, steps  # safe_load reports the syntax error with its position
    if not isinstance(root, yaml.MappingNode):
        return top, steps
    for key, value in root.value:
        top[str(key.value)] = key.start_mark.line + 1
        if key.value == "steps" and isinstance(value, yaml.SequenceNode):
            for item in value.value:
                keys = {}
                if isinstance(item, yaml.MappingNode):
                    keys = {str(k.value): k.start_mark.line + 1 for k, _ in item.value}
                steps.append((item.start_mark.line + 1, keys))
    return top, steps


def _number(raw: Any, where: str, name: str, low: float, high: float, nullable: bool) -> Any:
    if raw is None:
        if nullable:
            return None
        raise ScenarioError(f"{where}: field '{name}' may not be null")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ScenarioError(f"{where}: field '{name}' must be a number, got {raw!r}")
    value = float(raw)
    if math.isnan(value):
        raise ScenarioError(f"{where}: field '{name}' is NaN")
    if not low <= value <= high or value == math.inf:
        raise ScenarioError(f"{where}: field '{name}' = {raw!r} is out of range [{low}, {high}]")
    return value


@dataclass(frozen=True)
class ScenarioTrace:
    """A timed context trace: ``context_at(t)`` gives the context ``t`` seconds into it.

    File format (YAML)::

        name: mixed                      # optional, defaults to the file name
        description: ...                 # optional
        duration_s: 60                   # optional, defaults to the last step's t
        budgets: {fps: 10, mission_duration_s: 600}   # optional BudgetParams overrides
        steps:
          - {t: 0, battery_percent: 80, cpu_load_other_percent: 5, latency_budget_ms: 40}
          - {t: 20, cpu_load_other_percent: 90, cpu_hog: 1}

    Steps are in strictly increasing ``t``, the first at ``t: 0``. A field a step omits keeps its
    previous value; ``battery_percent`` is interpolated linearly between steps, everything else
    holds until the next step. Unknown keys, NaN, negative or out-of-range values fail with a
    :class:`ScenarioError` naming the file, step index, line and field.
    """

    name: str
    steps: tuple[ScenarioStep, ...]
    duration_s: float
    description: str = ""
    budgets: Mapping[str, Any] = field(default_factory=dict)
    path: str = ""

    @classmethod
    def load(cls, path: str | Path) -> ScenarioTrace:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read scenario: {exc}") from exc
        return cls.from_yaml(text, source=str(path), default_name=path.stem)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>",
                  default_name: str = "scenario") -> ScenarioTrace:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{source}: not valid YAML: {exc}") from exc
        top_lines, step_lines = _yaml_lines(text)
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{source}: a scenario is a mapping with a 'steps' list")
        unknown = sorted(set(map(str, data)) - _TOP_KEYS)
        if unknown:
            line = top_lines.get(unknown[0], 0)
            raise ScenarioError(f"{source}: line {line}: unknown key(s) {unknown}; "
                                f"allowed: {sorted(_TOP_KEYS)}")
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            raise ScenarioError(f"{source}: 'steps' must be a non-empty list")
        steps = cls._parse_steps(raw_steps, source, step_lines)
        duration = steps[-1].t
        if data.get("duration_s") is not None:
            where = f"{source}: line {top_lines.get('duration_s', 0)}"
            duration = _number(data["duration_s"], where, "duration_s", steps[-1].t, math.inf,
                               False)
        budgets = data.get("budgets") or {}
        if not isinstance(budgets, Mapping):
            raise ScenarioError(f"{source}: 'budgets' must be a mapping of BudgetParams fields")
        try:
            BudgetParams(**budgets)
        except (TypeError, ValueError) as exc:
            line = top_lines.get("budgets", 0)
            raise ScenarioError(f"{source}: line {line}: budgets: {exc}") from exc
        return cls(name=str(data.get("name") or default_name), steps=steps,
                   duration_s=duration, description=str(data.get("description") or ""),
                   budgets=dict(budgets), path=source)

    @staticmethod
    def _parse_steps(raw_steps: list[Any], source: str,
                     step_lines: list[tuple[int, dict[str, int]]]) -> tuple[ScenarioStep, ...]:
        current = dict(_STEP_DEFAULTS)
        steps: list[ScenarioStep] = []
        allowed = set(_STEP_FIELDS) | {"t", "charging"}
        for i, raw in enumerate(raw_steps):
            line, key_lines = step_lines[i] if i < len(step_lines) else (0, {})
            where = f"{source}: step {i} (line {line})"
            if not isinstance(raw, Mapping):
                raise ScenarioError(f"{where}: a step is a mapping, got {raw!r}")
            unknown = sorted(set(map(str, raw)) - allowed)
            if unknown:
                raise ScenarioError(f"{where}: unknown field(s) {unknown}; "
                                    f"allowed: {sorted(allowed)}")
            if "t" not in raw:
                raise ScenarioError(f"{where}: field 't' (seconds) is missing")
            t = _number(raw["t"], where, "t", 0.0, math.inf, False)
            if i == 0 and t != 0.0:
                raise ScenarioError(f"{where}: field 't': the first step must be at t: 0")
            if steps and t <= steps[-1].t:
                raise ScenarioError(f"{where}: field 't' = {raw['t']!r} is not after the "
                                    f"previous step's t = {steps[-1].t:g} (times must increase)")
            for name, value in raw.items():
                name = str(name)
                if name == "t":
                    continue
                field_where = f"{source}: step {i} (line {key_lines.get(name, line)})"
                if name == "charging":
                    if not isinstance(value, bool):
                        raise ScenarioError(f"{field_where}: field 'charging' must be true or "
                                            f"false, got {value!r}")
                    current[name] = value
                    continue
                low, high, nullable = _STEP_FIELDS[name]
                if name == "cpu_hog" and isinstance(value, bool):
                    value = int(value)
                number = _number(value, field_where, name, low, high, nullable)
                current[name] = int(number) if name == "cpu_hog" else number
            steps.append(ScenarioStep(t=t, line=line, **current))
        return tuple(steps)

    # -- queries ------------------------------------------------------------------------------
    def _index(self, t: float) -> int:
        if not t >= 0.0:
            raise ValueError(f"scenario time must be >= 0, got {t}")
        index = 0
        for i, step in enumerate(self.steps):
            if step.t <= t:
                index = i
        return index

    def step_at(self, t: float) -> ScenarioStep:
        """The step in force at ``t`` (the last one after the end), battery interpolated."""
        i = self._index(t)
        step = self.steps[i]
        if i + 1 < len(self.steps):
            nxt = self.steps[i + 1]
            if step.battery_percent is not None and nxt.battery_percent is not None:
                frac = (t - step.t) / (nxt.t - step.t)
                drop = nxt.battery_percent - step.battery_percent
                step = replace(step, battery_percent=step.battery_percent + frac * drop)
        return step

    def context_at(self, t: float, timestamp: float | None = None) -> Context:
        """The context ``t`` seconds into the trace; ``timestamp`` defaults to ``t``."""
        step = self.step_at(t)
        return Context(
            battery_percent=step.battery_percent, charging=step.charging,
            battery_seconds_left=step.battery_seconds_left,
            cpu_load_percent=max(step.cpu_load_percent, step.cpu_load_other_percent),
            cpu_load_other_percent=step.cpu_load_other_percent,
            memory_available_mb=step.memory_available_mb,
            cpu_frequency_mhz=step.cpu_frequency_mhz,
            cpu_temperature_c=step.cpu_temperature_c,
            latency_budget_ms=step.latency_budget_ms, source=f"scenario:{self.name}",
            timestamp=t if timestamp is None else timestamp,
        )

    def budget_params(self, base: BudgetParams | None = None) -> BudgetParams:
        """``base`` (default BudgetParams()) with this scenario's ``budgets`` overrides."""
        return replace(base or BudgetParams(), **self.budgets)


def shipped_scenarios() -> list[Path]:
    """The scenario files shipped under config/scenarios/, sorted by name."""
    from ..paths import config_dir

    return sorted((config_dir() / "scenarios").glob("*.yaml"))


# --------------------------------------------------------------------------------------------
# Budgets
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BudgetParams:
    """How budgets follow from the context; every field can be a ROS parameter.

    fps:                      frames per second the perception must sustain.
    battery_capacity_wh:      battery capacity, watt-hours.
    perception_energy_share:  fraction of the battery energy perception may spend (the rest of
                              the robot needs the remainder), 0 < share <= 1.
    mission_duration_s:       how long perception must stay alive from the start; None = no
                              mission, hence no energy budget (battery still moves λ2).
    latency_margin:           fraction of the application's per-frame budget the model's
                              forward pass may take until the rest of a frame (transport,
                              decoding, preprocessing, publishing) has been measured; from then
                              on the forward gets the budget minus that measured part.
    drift_tolerance:          measured/predicted latency ratio tolerated before tightening.
    min_latency_factor:       the tightening never goes below this fraction of the budget.
    memory_reserve_mb:        memory left for the rest of the system.
    memory_limit_mb:          hard cap on the variant's peak memory; None = none.
    storage_limit_bytes:      storage the variant may occupy; None = unlimited.
    min_accuracy:             least acceptable accuracy (fraction); 0 = none. Keeps a high λ2
                              from choosing a variant too poor for the application.
    """

    fps: float = 10.0
    battery_capacity_wh: float = 20.0
    perception_energy_share: float = 0.05
    mission_duration_s: float | None = None
    latency_margin: float = 0.9
    drift_tolerance: float = 0.1
    min_latency_factor: float = 0.5
    memory_reserve_mb: float = 256.0
    memory_limit_mb: float | None = None
    storage_limit_bytes: int | None = None
    min_accuracy: float = 0.0

    def __post_init__(self) -> None:
        require_number("fps", self.fps, 0.0, math.inf, low_open=True)
        require_number("battery_capacity_wh", self.battery_capacity_wh, 0.0, math.inf,
                        low_open=True)
        for name in ("perception_energy_share", "latency_margin", "min_latency_factor"):
            require_number(name, getattr(self, name), 0.0, 1.0, low_open=True)
        require_number("min_accuracy", self.min_accuracy, 0.0, 1.0)
        for name in ("drift_tolerance", "memory_reserve_mb"):
            require_number(name, getattr(self, name), 0.0, math.inf)
        for name in ("mission_duration_s", "memory_limit_mb", "storage_limit_bytes"):
            if getattr(self, name) is not None:
                require_number(name, getattr(self, name), 0.0, math.inf, low_open=True)


@dataclass(frozen=True)
class Budgets:
    """Bounds a variant must meet: upper bounds (``math.inf`` = unconstrained) and a least
    accuracy (0 = none). ``notes`` say why."""

    latency_ms: float = math.inf
    memory_mb: float = math.inf
    storage_bytes: float = math.inf
    energy_mj: float = math.inf
    min_accuracy: float = 0.0
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        def v(x: float, fmt: str) -> str:
            return "inf" if x == math.inf else format(x, fmt)

        return (f"latency <= {v(self.latency_ms, '.2f')} ms, memory <= "
                f"{v(self.memory_mb, '.0f')} MB, storage <= {v(self.storage_bytes, '.0f')} B, "
                f"energy <= {v(self.energy_mj, '.3g')} mJ/frame"
                + (f", accuracy >= {self.min_accuracy:.1%}" if self.min_accuracy > 0 else ""))


def compute_budgets(
    context: Context,
    params: BudgetParams | None = None,
    *,
    latency_drift: float = 1.0,
    mission_remaining_s: float | None = None,
    non_model_ms: float | None = None,
) -> Budgets:
    """The search's budgets for ``context``.

    latency_ms = forward x tighten, the forward pass's share of the frame budget:
        forward = latency_budget_ms - non_model_ms, the measured median of everything in a
        frame but the forward pass (camera publish -> transport -> callback -> preprocessing ->
        publishing); latency_budget_ms x latency_margin while that is not measured (None).
        The median, not the p95: the tail of that part (12-18 ms p95 against 3-5 ms p50 for a
        640x480 frame here, docs/benchmarks.md) comes from transport and scheduling, which no
        choice of variant removes, and a 1 s window of 10 frames makes its p95 the window's
        maximum: budgeting for it gave the forward pass 0 ms under a 20 ms budget. The
        forward's own tail is in the prediction (p50 x tail x contention);
        tighten = clip((1 + drift_tolerance) / latency_drift, min_latency_factor, 1)
        tighten = clip((1 + drift_tolerance) / latency_drift, min_latency_factor, 1)
        and latency_drift = measured p95 / predicted p95 of the running variant (> 1 when the
        model runs slower than the contention-corrected prediction says; 1 = no feedback).
    memory_mb  = min(memory_available_mb - memory_reserve_mb, memory_limit_mb), floored at 0;
        unknown available memory leaves only the configured limit.
    storage_bytes = storage_limit_bytes (the context carries no storage reading).
    min_accuracy  = min_accuracy (an application requirement, not a context reading).
    energy_mj  = E / (remaining_s x fps) x 1000 with
        E = battery_percent / 100 x battery_capacity_wh x 3600 x perception_energy_share  [J]:
        the energy per frame that keeps perception alive until the mission ends.
        ``mission_remaining_s`` defaults to mission_duration_s (the mission is just starting).
        No energy budget (inf) when charging, when the battery is unknown or when there is no
        mission; a mission already over leaves inf as well (nothing left to save for).
    """
    params = params or BudgetParams()
    notes = []
    tighten = 1.0
    if latency_drift > 1.0 + params.drift_tolerance:
        tighten = max((1.0 + params.drift_tolerance) / latency_drift, params.min_latency_factor)
        notes.append(f"latency {latency_drift:.2f}x above prediction: budget tightened "
                     f"to {tighten:.0%}")
    if non_model_ms is None:
        forward = context.latency_budget_ms * params.latency_margin
    else:
        require_number("non_model_ms", non_model_ms, 0.0, math.inf)
        forward = max(context.latency_budget_ms - non_model_ms, 0.0)
        notes.append(f"{non_model_ms:.2f} ms of the frame measured outside the model")
    latency = forward * tighten

    memory = math.inf if params.memory_limit_mb is None else params.memory_limit_mb
    if context.memory_available_mb is not None:
        memory = min(memory, max(context.memory_available_mb - params.memory_reserve_mb, 0.0))

    storage = math.inf if params.storage_limit_bytes is None else float(params.storage_limit_bytes)

    energy = math.inf
    remaining = mission_remaining_s if mission_remaining_s is not None \
        else params.mission_duration_s
    if context.charging:
        notes.append("charging: no energy budget")
    elif context.battery_percent is None:
        notes.append("no battery reading: no energy budget")
    elif remaining is None:
        notes.append("no mission duration: no energy budget")
    elif remaining > 0:
        joules = (context.battery_percent / 100.0 * params.battery_capacity_wh * 3600.0
                  * params.perception_energy_share)
        energy = joules / (remaining * params.fps) * 1000.0
        notes.append(f"{joules:.0f} J for {remaining:.0f} s of mission at {params.fps:g} fps")
    return Budgets(latency_ms=latency, memory_mb=memory, storage_bytes=storage,
                   energy_mj=energy, min_accuracy=params.min_accuracy, notes=tuple(notes))


# --------------------------------------------------------------------------------------------
# λ1 / λ2
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lambdas:
    """Weights of the search objective λ1·accuracy + λ2·energy efficiency; ``rule`` says why."""

    lambda1: float
    lambda2: float
    rule: str = ""

    def __post_init__(self) -> None:
        for name in ("lambda1", "lambda2"):
            require_number(name, getattr(self, name), 0.0, 1.0)
        if self.lambda1 + self.lambda2 <= 0:
            raise ValueError("lambda1 and lambda2 may not both be 0")


@dataclass(frozen=True)
class LambdaParams:
    """Rules that move λ2 (energy) with the context; λ1 = 1 - λ2.

    λ2 = lambda2_external when charging or without a battery (mains power: energy is free, so
    by default the most accurate variant the budgets allow runs);
    otherwise it rises linearly from lambda2_min at battery >= battery_high_percent to
    lambda2_max at battery <= battery_low_percent. When the CPU is at or above
    hot_temperature_c, λ2 is at least lambda2_hot (less energy = less heat). Bounded by
    construction: λ2 <= max(lambda2_max, lambda2_hot) <= 1.

    With the default exchange rate (ObjectiveParams.energy_pct_per_point = 10 % per point):
    λ2 = 0.2 on a full battery trades a point only for >= 40 % of the frame energy saved,
    λ2 = 0.6 at 15 % battery already for >= 6.7 %.
    """

    lambda2_external: float = 0.0
    lambda2_min: float = 0.2
    lambda2_max: float = 0.6
    battery_high_percent: float = 50.0
    battery_low_percent: float = 15.0
    hot_temperature_c: float = 85.0
    lambda2_hot: float = 0.5

    def __post_init__(self) -> None:
        for name in ("lambda2_external", "lambda2_min", "lambda2_max", "lambda2_hot"):
            require_number(name, getattr(self, name), 0.0, 1.0)
        for name in ("battery_low_percent", "battery_high_percent"):
            require_number(name, getattr(self, name), 0.0, 100.0)
        if self.lambda2_min > self.lambda2_max:
            raise ValueError(f"lambda2_min ({self.lambda2_min}) must be <= lambda2_max "
                             f"({self.lambda2_max})")
        if not self.battery_low_percent < self.battery_high_percent:
            raise ValueError(f"battery_low_percent ({self.battery_low_percent}) must be below "
                             f"battery_high_percent ({self.battery_high_percent})")
        require_number("hot_temperature_c", self.hot_temperature_c, -273.15, 200.0)


def adapt_lambdas(context: Context, params: LambdaParams | None = None) -> Lambdas:
    """λ1, λ2 for ``context`` by the rules of :class:`LambdaParams`."""
    p = params or LambdaParams()
    if context.charging:
        lambda2, rule = p.lambda2_external, "charging"
    elif context.battery_percent is None:
        lambda2, rule = p.lambda2_external, "no battery"
    else:
        span = p.battery_high_percent - p.battery_low_percent
        drained = min(max((p.battery_high_percent - context.battery_percent) / span, 0.0), 1.0)
        lambda2 = p.lambda2_min + drained * (p.lambda2_max - p.lambda2_min)
        rule = f"battery {context.battery_percent:.0f}%"
    temperature = context.cpu_temperature_c
    if temperature is not None and temperature >= p.hot_temperature_c and lambda2 < p.lambda2_hot:
        lambda2, rule = p.lambda2_hot, f"{rule}, CPU hot ({temperature:.0f} C)"
    return Lambdas(lambda1=1.0 - lambda2, lambda2=lambda2, rule=rule)


def contention_from_load(cpu_load_other_percent: float) -> float:
    """Predicted slowdown of a single-threaded forward pass when other processes keep
    ``cpu_load_other_percent`` of every core busy: a fair scheduler gives it 1 / (1 + u) of a
    core, so latency x (1 + u). An estimate for planning (``adaspring search --cpu-load``); the
    evolution policy measures the real factor from the running variant."""
    require_number("cpu_load_other_percent", cpu_load_other_percent, 0.0, 100.0)
    return 1.0 + cpu_load_other_percent / 100.0
