"""Budgets: what the context allows a variant to cost (latency, memory, storage, energy).

:func:`compute_budgets` turns a :class:`~adaspring_ros.core.policy.context.Context` and the
:class:`BudgetParams` of the application into the :class:`Budgets` the runtime search must meet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.validation import require_number, setting

__all__ = ["BudgetParams", "Budgets", "compute_budgets", "contention_from_load",
           "energy_share_for"]


@dataclass(frozen=True)
class BudgetParams:
    """How budgets follow from the context: each field is an evolution_node parameter of the
    same name, described on the field.

    ``latency_margin`` budgets the forward pass only until the rest of a frame (transport,
    decoding, preprocessing, publishing) has been measured; from then on the forward gets the
    budget minus that measured part. ``min_accuracy`` keeps a high λ2 from choosing a variant
    too poor for the application. None (parameter value 0) means "no limit" for the mission,
    memory and storage caps; without a mission there is no energy budget (the battery still
    moves λ2).
    """

    fps: float = setting(10.0, "frame rate perception must sustain (energy budget)",
                         range=(0.01, 1000.0))
    battery_capacity_wh: float = setting(20.0, "battery capacity, Wh", range=(0.01, 1e6))
    perception_energy_share: float = setting(
        0.05, "fraction of the battery perception may spend", range=(0.001, 1.0))
    mission_duration_s: float | None = setting(
        None, "mission length for the energy budget, s (0 = no mission: no energy budget)",
        range=(0.0, 1e7), none=0.0)
    latency_margin: float = setting(
        0.9, "fraction of the application's latency budget the forward pass may take until "
        "the rest of a frame is measured", range=(0.01, 1.0))
    drift_tolerance: float = setting(
        0.1, "measured/predicted latency ratio tolerated before the budget is tightened",
        range=(0.0, 10.0))
    min_latency_factor: float = setting(0.5, "the tightening never goes below this fraction",
                                        range=(0.01, 1.0))
    memory_reserve_mb: float = setting(256.0, "memory left to the rest of the system, MB",
                                       range=(0.0, 1e6))
    memory_limit_mb: float | None = setting(
        None, "hard cap on the variant's peak memory, MB (0 = none)", range=(0.0, 1e6),
        none=0.0)
    storage_limit_bytes: int | None = setting(
        None, "storage the variant may occupy, bytes (0 = no limit)", range=(0, 2**40), none=0)
    min_accuracy: float = setting(0.0, "least accuracy a variant must have, fraction (0 = none)",
                                  range=(0.0, 1.0))

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
    max_rate_hz: float = 0.0,
) -> Budgets:
    """The search's budgets for ``context``.

    latency_ms = forward x tighten, the forward pass's share of the frame budget:
        forward = latency_budget_ms - non_model_ms, the measured median of everything in a
        frame but the forward pass (camera publish -> transport -> callback -> preprocessing ->
        publishing); latency_budget_ms x latency_margin while that is not measured (None).
        The median, not the p95: the tail of that part comes from transport and scheduling,
        which no choice of variant removes, and a short window makes its p95 the window's
        maximum (docs/benchmarks.md, design measurements). The forward's own tail is in the
        prediction (p50 x tail x contention);
        tighten = clip((1 + drift_tolerance) / latency_drift, min_latency_factor, 1)
        and latency_drift = measured p95 / predicted p95 of the running variant (> 1 when the
        model runs slower than the contention-corrected prediction says; 1 = no feedback).
    memory_mb  = min(memory_available_mb - memory_reserve_mb, memory_limit_mb), floored at 0;
        unknown available memory leaves only the configured limit.
    storage_bytes = storage_limit_bytes (the context carries no storage reading).
    min_accuracy  = min_accuracy (an application requirement, not a context reading).
    energy_mj  = E / (remaining_s x rate) x 1000 with rate = min(fps, max_rate_hz), the frames
        perception really classifies per second (``max_rate_hz``: the perception node's cap,
        0 = none, then fps), and
        E = battery_percent / 100 x battery_capacity_wh x 3600 x perception_energy_share  [J]:
        the energy per frame that keeps perception alive until the mission ends.
        ``mission_remaining_s`` defaults to mission_duration_s (the mission is just starting).
        No energy budget (inf) when charging, when the battery is unknown or when there is no
        mission; a mission already over leaves inf as well (nothing left to save for).
    """
    params = params or BudgetParams()
    require_number("max_rate_hz", max_rate_hz, 0.0, math.inf)
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
        rate = min(params.fps, max_rate_hz) if max_rate_hz > 0 else params.fps
        energy = joules / (remaining * rate) * 1000.0
        capped = " (perception's max_rate_hz)" if rate < params.fps else ""
        notes.append(f"{joules:.0f} J for {remaining:.0f} s of mission at {rate:g} fps{capped}")
    return Budgets(latency_ms=latency, memory_mb=memory, storage_bytes=storage,
                   energy_mj=energy, min_accuracy=params.min_accuracy, notes=tuple(notes))


def contention_from_load(cpu_load_other_percent: float) -> float:
    """Predicted slowdown of a single-threaded forward pass when other processes keep
    ``cpu_load_other_percent`` of every core busy: a fair scheduler gives it 1 / (1 + u) of a
    core, so latency x (1 + u). An estimate for planning (``adaspring search --cpu-load``); the
    evolution policy measures the real factor from the running variant."""
    require_number("cpu_load_other_percent", cpu_load_other_percent, 0.0, 100.0)
    return 1.0 + cpu_load_other_percent / 100.0


def energy_share_for(params: BudgetParams, battery_percent: float, energy_mj: float,
                     mission_remaining_s: float | None = None) -> float:
    """The ``perception_energy_share`` that makes the energy budget per frame ``energy_mj`` at
    ``battery_percent`` with ``mission_remaining_s`` of the mission left (default: all of it):
    :func:`compute_budgets`' energy formula solved for the share, clipped to its range. For a
    budget stated against a frame cost measured on the host (``adaspring demo``), not guessed
    for one."""
    require_number("battery_percent", battery_percent, 0.0, 100.0, low_open=True)
    require_number("energy_mj", energy_mj, 0.0, math.inf, low_open=True)
    remaining = params.mission_duration_s if mission_remaining_s is None else \
        mission_remaining_s
    if remaining is None or not remaining > 0:
        raise ValueError("an energy budget needs a mission: mission_duration_s is not set")
    joules = energy_mj / 1000.0 * remaining * params.fps
    share = joules / (battery_percent / 100.0 * params.battery_capacity_wh * 3600.0)
    return min(max(share, 0.001), 1.0)
