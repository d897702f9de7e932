"""Random walks of contexts through the evolution policy, and the invariants it must keep.

A walk is a sequence of phases, each a context held for some steps (0.5 s of a fake clock each)
or a stale gap with no context at all; from one phase to the next one to three things change:
the battery jumps, the charger toggles, the latency budget moves (impossible budgets included),
memory comes and goes (below the reserve included), other processes take the CPU (simulated:
the served variant's metrics run 1 + 2 x load/100 times its table latency) or it gets hot. The
:class:`Evolver` sees a context message and a metrics window of the variant it serves every
step, and every swap it asks for takes effect at once. Invariants, counted per step:

(a) settled: once a context has held for ``SETTLE_S``, the served variant's objective is within
    ``gain_threshold`` of the one-shot choice (``RuntimeSearch.choose`` with the true contention,
    tail and overhead); it fits the budgets whenever that choice does, and is that choice when
    nothing fits;
(b) floor: a variant below the accuracy floor is only chosen by the rule forced-below-floor, and
    is served no longer than ``min_urgent_interval_s`` (+ one step) after the budgets stop
    forcing it;
(c) no flapping: no swap once a context has held for ``SETTLE_S``, and at most
    ``MAX_SWAPS_PER_PHASE`` in any phase;
(d) reasons: every decision's reason starts with its kind, and a swap's names the search rule.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from adaspring_ros.core.policy.budgets import BudgetParams, compute_budgets
from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.evolution import KINDS, EvolutionParams, Evolver
from adaspring_ros.core.policy.lambdas import adapt_lambdas
from adaspring_ros.core.policy.search import RuntimeSearch

__all__ = ["STEP_S", "SETTLE_S", "MAX_SWAPS_PER_PHASE", "INVARIANTS", "Phase", "Walk",
           "WalkResult", "random_walk", "run_walk", "walk_budget_params"]

STEP_S = 0.5
SETTLE_S = 10.0  # scenario time after a context change within which the policy must settle
MAX_SWAPS_PER_PHASE = 4
INVARIANTS = ("a_settled", "b_floor", "c_flapping", "d_reason")
CONTENTION_PER_LOAD = 2.0  # simulated slowdown per unit of other processes' CPU share
MISSION_S = 1e7  # so long that the energy budget hardly moves during a walk
RESERVE_MB = 256.0


@dataclass(frozen=True)
class Phase:
    """A context held for ``steps`` steps; None = a stale gap (no context messages)."""

    context: Context | None
    steps: int
    load_pct: float = 0.0  # the other processes' CPU share, also during a stale gap


@dataclass
class Walk:
    phases: list[Phase]
    non_model_ms: float  # NaN: the perception node does not report it
    overhead_mj: float  # NaN: no frame energy reported
    params: EvolutionParams = field(default_factory=EvolutionParams)

    @property
    def steps(self) -> int:
        return sum(p.steps for p in self.phases)


def walk_budget_params(search: RuntimeSearch) -> BudgetParams:
    """Budgets for walks over ``search``'s table: a full battery allows 1.5x the reference's
    frame energy (with the most overhead a walk draws), so the battery level decides."""
    reference = float(search.energy[search.row(search.reference.id)]) + 2.0
    per_wh_share = 3600.0 * 1000.0 / (MISSION_S * 10.0)  # mJ per frame per (Wh x share)
    return BudgetParams(fps=10.0, battery_capacity_wh=1.5 * reference / per_wh_share,
                        perception_energy_share=1.0, mission_duration_s=MISSION_S,
                        memory_reserve_mb=RESERVE_MB, latency_margin=0.9)


def _changed(rng: np.random.Generator, context: Context, search: RuntimeSearch) -> Context:
    """``context`` with one to three of its readings changed."""
    fields: dict[str, object] = {}
    fast, slow = float(search.latency_p95.min()), float(search.latency_p95.max())
    mem_lo, mem_hi = float(search.memory.min()), float(search.memory.max())
    for what in rng.choice(["battery", "charger", "budget", "memory", "load", "heat"],
                           size=int(rng.integers(1, 4)), replace=False):
        if what == "battery":
            jump = float(rng.choice([5.0, 90.0])) if rng.random() < 0.4 else \
                float(rng.uniform(0, 100))
            fields["battery_percent"] = None if rng.random() < 0.1 else jump
        elif what == "charger":
            fields["charging"] = not context.charging
        elif what == "budget":
            kind = rng.integers(4)
            fields["latency_budget_ms"] = (0.01, 100.0)[kind] if kind < 2 else \
                float(np.exp(rng.uniform(np.log(fast * 0.8), np.log(slow * 3.0)))) + \
                float(rng.choice([0.0, 5.0]))
        elif what == "memory":
            kind = rng.integers(4)
            fields["memory_available_mb"] = (None, 4000.0, RESERVE_MB - 1.0)[kind] if kind < 3 \
                else RESERVE_MB + float(rng.uniform(mem_lo * 0.5, mem_hi * 1.2))
        elif what == "load":
            load = float(rng.choice([0.0, 30.0, 60.0, 95.0]))  # steps > LOAD_RISE_PT
            fields["cpu_load_other_percent"] = load
            fields["cpu_load_percent"] = max(load, context.cpu_load_percent)
        else:
            fields["cpu_temperature_c"] = None if rng.random() < 0.3 else \
                float(rng.choice([50.0, 90.0]))
    return replace(context, **fields)


def random_walk(rng: np.random.Generator, search: RuntimeSearch, min_steps: int = 50,
                params: EvolutionParams | None = None) -> Walk:
    """Phases until at least ``min_steps`` steps, 40 % of them long enough to settle; a third
    of the changes go back to the context before the last one (a recovery)."""
    context = Context(battery_percent=float(rng.uniform(0, 100)),
                      charging=bool(rng.random() < 0.3), memory_available_mb=4000.0,
                      latency_budget_ms=100.0, source="walk")
    settle = int(SETTLE_S / STEP_S)
    phases: list[Phase] = []
    before = context
    while sum(p.steps for p in phases) < min_steps:
        if phases and rng.random() < 0.1:
            phases.append(Phase(None, int(rng.integers(8, 21)), context.cpu_load_other_percent))
            continue
        if phases:
            before, context = context, before if rng.random() < 0.5 else \
                _changed(rng, context, search)
        steps = int(rng.integers(settle + 2, settle + 16)) if rng.random() < 0.4 else \
            int(rng.integers(1, settle))
        phases.append(Phase(context, steps, context.cpu_load_other_percent))
    return Walk(phases, non_model_ms=float(rng.choice([math.nan, 1.0, 4.0])),
                overhead_mj=float(rng.choice([math.nan, 0.5, 2.0])),
                params=params or EvolutionParams())


@dataclass
class WalkResult:
    """Violations per invariant, the first few described, and what the walk exercised:
    decisions by kind, one-shot rules at the settled checks, flaps."""

    violations: dict[str, int]
    notes: list[str]
    seen: Counter

    def merge(self, other: WalkResult) -> None:
        for name, n in other.violations.items():
            self.violations[name] = self.violations.get(name, 0) + n
        self.notes += other.notes[:max(0, 20 - len(self.notes))]
        self.seen.update(other.seen)


def run_walk(walk: Walk, search: RuntimeSearch, budget_params: BudgetParams) -> WalkResult:
    """Drive an Evolver through ``walk`` and check the invariants at every step."""
    p = walk.params
    evolver = Evolver(search, p, budget_params=budget_params, mission_start=0.0)
    counts = dict.fromkeys(INVARIANTS, 0)
    notes: list[str] = []
    seen: Counter = Counter()
    settle = int(SETTLE_S / STEP_S)
    tail = search.tail_ratio
    non_model = None if math.isnan(walk.non_model_ms) else walk.non_model_ms
    overhead = 0.0 if math.isnan(walk.overhead_mj) else walk.overhead_mj
    now, unforced_since = 0.0, None

    def fail(name: str, why: str) -> None:
        counts[name] += 1
        if len(notes) < 20:
            notes.append(f"t={now:.1f} {name}: {why}")

    for index, phase in enumerate(walk.phases):
        contention = 1.0 + CONTENTION_PER_LOAD * phase.load_pct / 100.0
        swaps = 0
        for k in range(phase.steps):
            if phase.context is not None:
                evolver.observe_context(phase.context, now)
            if evolver.active_id is not None:
                row = search.row(evolver.active_id)
                p50 = (float(search.latency_p50[row]) + search.cold_ms) * contention
                evolver.observe_metrics(evolver.active_id, p50, p50 * tail, now,
                                        non_model_ms=walk.non_model_ms,
                                        energy_per_frame_mj=float(search.energy[row]) + overhead
                                        if not math.isnan(walk.overhead_mj) else math.nan)
            decision = evolver.decide(now)
            seen[f"decision {decision.kind}"] += 1
            if decision.kind not in KINDS or not decision.reason.startswith(f"{decision.kind}: ") \
                    or (decision.swap and decision.result is not None
                        and f"{decision.result.rule}: " not in decision.reason):
                fail("d_reason", decision.reason[:120])
            if decision.swap:
                swaps += 1
                if k >= settle and phase.context is not None:
                    fail("c_flapping", f"phase {index} settled, yet {decision.reason[:120]}")
                if decision.result is not None and not search.within_floor(decision.config_id) \
                        and decision.result.rule != "forced-below-floor":
                    fail("b_floor", f"chose {decision.config_id} by {decision.result.rule}")
                evolver.swap_done(decision.config_id, now)
            served = evolver.active_id
            forced = decision.result is None or decision.result.rule == "forced-below-floor"
            if search.within_floor(served) or forced or phase.context is None:
                unforced_since = None
            else:
                unforced_since = now if unforced_since is None else unforced_since
                if now - unforced_since > p.min_urgent_interval_s + STEP_S:
                    fail("b_floor", f"{served} below the floor, not forced, since "
                                    f"t={unforced_since:.1f}")
            if phase.context is not None and k >= settle:
                rule = _check_settled(evolver, search, budget_params, phase.context, now,
                                      contention, non_model, overhead, fail)
                seen[f"settled check, one-shot {rule}"] += 1
            now += STEP_S
        seen[f"phases with {swaps} swap(s)"] += 1
        if swaps > MAX_SWAPS_PER_PHASE:
            fail("c_flapping", f"{swaps} swaps in phase {index}")
    seen["flaps"] += int(evolver.status()["flaps_remembered"])
    return WalkResult(counts, notes, seen)


def _check_settled(evolver: Evolver, search: RuntimeSearch, budget_params: BudgetParams,
                   context: Context, now: float, contention: float, non_model: float | None,
                   overhead: float, fail: Callable[[str, str], None]) -> str:
    """Invariant (a): the served variant against the one-shot choice for the true state;
    returns the one-shot's rule."""
    mission = budget_params.mission_duration_s
    budgets = compute_budgets(context, budget_params,
                              mission_remaining_s=None if mission is None else
                              max(mission - now, 0.0), non_model_ms=non_model)
    lambdas = adapt_lambdas(context)
    best = search.choose(budgets, lambdas, evolver.params.headroom, contention,
                         search.tail_ratio, overhead)
    served = evolver.active_id
    mine = search.predict(served, budgets, lambdas, contention, search.tail_ratio, overhead)
    theirs = search.predict(best.config_id, budgets, lambdas, contention, search.tail_ratio,
                            overhead)
    if not theirs.feasible:
        if served != best.config_id:
            fail("a_settled", f"nothing fits; serves {served}, one-shot {best.config_id}")
    elif not mine.feasible:
        fail("a_settled", f"serves {served} violating {mine.violations}; one-shot "
                          f"{best.config_id} fits")
    elif mine.objective < theirs.objective - evolver.params.gain_threshold - 1e-9:
        fail("a_settled", f"serves {served} J {mine.objective:+.3f}, one-shot "
                          f"{best.config_id} J {theirs.objective:+.3f}")
    return best.rule
