"""Scenario traces: timed context YAML under ``config/scenarios/`` for demos and benchmarks.

:class:`ScenarioTrace` loads and checks a trace (every error names file, step, line and field) and
answers ``context_at(t)``; :func:`resolve_scenario` is the one place a scenario name becomes a
path (as given if it exists, else relative to the package's config/).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adaspring_ros.core.policy.budgets import BudgetParams
from adaspring_ros.core.policy.context import CONTEXT_LIMITS, Context

__all__ = ["ScenarioError", "ScenarioStep", "ScenarioTrace", "shipped_scenarios",
           "resolve_scenario"]


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
_TOP_KEYS = {"name", "description", "duration_s", "budgets", "energy_budget_at_start", "steps"}


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
        energy_budget_at_start: 1.2      # optional, see below
        steps:
          - {t: 0, battery_percent: 80, cpu_load_other_percent: 5, latency_budget_ms: 40}
          - {t: 20, cpu_load_other_percent: 90, cpu_hog: 1}

    Steps are in strictly increasing ``t``, the first at ``t: 0``. A field a step omits keeps its
    previous value; ``battery_percent`` is interpolated linearly between steps, everything else
    holds until the next step. Unknown keys, NaN, negative or out-of-range values fail with a
    :class:`ScenarioError` naming the file, step index, line and field.

    ``energy_budget_at_start`` states the energy budget against the host instead of in joules:
    the energy budget per frame at t = 0 is this many times what a frame of the full model costs
    on the host running the scenario, measured there (``adaspring demo`` measures it in its
    first seconds and sets ``perception_energy_share`` to match, with
    ``budgets.energy_share_for``). A frame costs 5 mJ on one machine and 20 on another, most of
    it outside the model, so a share in the file alone binds on one and never on the other.
    Tools that measure nothing (``adaspring search --scenario``, the simulation benchmark) use
    ``budgets.perception_energy_share`` as written.
    """

    name: str
    steps: tuple[ScenarioStep, ...]
    duration_s: float
    description: str = ""
    budgets: Mapping[str, Any] = field(default_factory=dict)
    path: str = ""
    energy_budget_at_start: float | None = None

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
        ratio = data.get("energy_budget_at_start")
        if ratio is not None:
            where = f"{source}: line {top_lines.get('energy_budget_at_start', 0)}"
            ratio = _number(ratio, where, "energy_budget_at_start", 0.01, 100.0, False)
            if budgets.get("mission_duration_s") is None:
                raise ScenarioError(f"{where}: energy_budget_at_start needs "
                                    "budgets.mission_duration_s (no mission, no energy budget)")
        return cls(name=str(data.get("name") or default_name), steps=steps,
                   duration_s=duration, description=str(data.get("description") or ""),
                   budgets=dict(budgets), path=source, energy_budget_at_start=ratio)

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
    from adaspring_ros.core.paths import config_dir

    return sorted((config_dir() / "scenarios").glob("*.yaml"))


def resolve_scenario(text: str | Path) -> Path:
    """A scenario path as given if it exists (or is absolute), else relative to config/."""
    from adaspring_ros.core.paths import config_dir

    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return config_dir() / path
