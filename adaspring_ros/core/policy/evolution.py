"""The evolution policy: context + measured latency -> keep the running variant or swap.

Plain logic with injected time: every method takes ``now`` (seconds, any monotonic clock, the same
for all calls) and nothing sleeps or starts threads, so the evolution node only wires messages to
:class:`Evolver` and tests drive it with made-up clocks.

Per decision (``Evolver.decide(now)``):

1. A swap that was asked for and not yet confirmed -> wait (until ``pending_timeout_s``).
2. No context for ``stale_after_s`` -> fall back to the safe variant (configured, default the
   fastest of the table), at once: running blind is worse than a short swap.
3. Budgets and λ from the latest context. The latency prediction of a variant is its profiled
   p50 x tail x contention: the contention factor is measured / profiled p50 of the running
   variant and the tail the measured p95 / p50 (starting from the table's median ratio), both
   smoothed and bounded; the latency budget is tightened while the measured p95 still exceeds
   the smoothed prediction (a sudden slowdown the smoothing has not caught up with).
4. The running variant violates a budget (predicted, or measured deadline misses) -> swap to the
   best variant now, provided ``min_urgent_interval_s`` has passed since the last swap (so the
   new variant's own metrics are seen before judging it).
5. Otherwise swap only when the best variant's objective beats the running one's by
   ``gain_threshold`` (absolute, in the objective's unit: accuracy points, see search.py;
   both judged against the same budgets) and ``min_swap_interval_s`` has passed. An absolute
   threshold cannot trap the policy on a variant whose objective is large, as a relative one
   did (docs/benchmarks.md, design measurements). Candidates are searched
   with ``headroom`` less latency and energy budget than the running variant is judged against:
   a Schmitt trigger, so jitter around a budget does not flip between two variants, and a budget
   that keeps shrinking (a draining battery) does not cause a swap at every step. After a
   budget violation a slower variant is only tried again after ``recovery_s``; a violation that
   follows a swap up to a slower variant is a flap, and every flap remembered
   (``violation_memory_s``) doubles that back-off. Violations while stepping down under one
   sustained load are not flaps, so the policy climbs back soon after the load is gone.

Every :class:`Decision` carries a human-readable reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.profile_table import ProfileEntry, ProfileTable
from adaspring_ros.core.policy.budgets import BudgetParams, Budgets, compute_budgets
from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.lambdas import LambdaParams, Lambdas, adapt_lambdas
from adaspring_ros.core.policy.search import (
    ObjectiveParams,
    Prediction,
    RuntimeSearch,
    SearchResult,
)
from adaspring_ros.core.validation import require_number, setting

__all__ = ["EvolutionParams", "ContentionEstimator", "Decision", "Evolver"]

_MAX_BACKOFF = 6  # the back-off doubles at most 5 times (32 x recovery_s)


@dataclass(frozen=True)
class EvolutionParams:
    """Tuning of the trigger policy; each field with a description is an evolution_node
    parameter of the same name.

    gain_threshold:         objective gain a non-urgent swap needs, in accuracy points
                            (0.15: e.g. 0.15 pt more accuracy at λ1 = 1).
    min_swap_interval_s:    least time between a swap and a non-urgent swap.
    min_urgent_interval_s:  least time between a swap and a budget-violation swap.
    headroom:               fraction of the latency and energy budgets kept free when choosing
                            a variant (the running one is judged against the full budgets).
    stale_after_s:          context older than this (by receive time) is stale.
    safe_config_id:         variant for stale context; None = the fastest of the table.
    recovery_s:             flap damping: after a violation, no gain swap to a slower variant
    violation_memory_s:     for recovery_s x 2^n, n = the flaps (violations following a swap
                            up to a slower variant) remembered for violation_memory_s (n capped
                            at 5), so a variant just left for being too slow is not retried at
                            the first calm reading, and ever more rarely if it keeps failing.
    settle_s:               metrics are ignored this long after a swap (mixed windows).
    pending_timeout_s:      a swap not confirmed by then is considered failed.
    contention_alpha:       smoothing of the contention factor (weight of the newest window).
    contention_min/max:     bounds of the contention factor.
    learn_tail:             learn the p95/p50 tail ratio from the metrics (with the same
                            smoothing; bounds 1 .. tail_max); False keeps the table's.
    tail_max:               upper bound of the learnt tail ratio.
    deadline_miss_trigger:  deadline misses in one metrics window that count as a violation.
    """

    gain_threshold: float = setting(
        0.15, "hysteresis: objective gain a non-urgent swap needs, in accuracy points "
        "(absolute)", range=(0.0, 100.0))
    min_swap_interval_s: float = setting(
        5.0, "least time between a swap and a non-urgent swap, s", range=(0.0, 86400.0))
    min_urgent_interval_s: float = setting(
        1.0, "least time between a swap and a budget-violation swap, s (<= min_swap_interval_s)",
        range=(0.0, 86400.0))
    headroom: float = setting(
        0.15, "fraction of the latency and energy budgets kept free when choosing (Schmitt "
        "trigger)", range=(0.0, 0.9))
    stale_after_s: float = setting(
        3.0, "context older than this is stale: go to safe_config_id, s", range=(0.05, 3600.0))
    safe_config_id: str | None = setting(
        None, "config id used while the context is stale ('' = the fastest variant of the "
        "profile table)", none="")
    recovery_s: float = setting(
        10.0, "back-off before re-trying a variant left for a violation, s",
        range=(0.0, 86400.0))
    violation_memory_s: float = setting(
        600.0, "how long budget violations count for the back-off, s", range=(0.0, 86400.0))
    settle_s: float = setting(1.0, "metrics ignored this long after a swap, s",
                              range=(0.0, 600.0))
    pending_timeout_s: float = setting(
        15.0, "a swap the policy asked for and never saw confirmed is forgotten after this, s",
        range=(0.1, 3600.0))
    contention_alpha: float = setting(
        0.5, "smoothing of the measured contention factor (weight of the newest window)",
        range=(0.01, 1.0))
    contention_min: float = setting(0.5, "lower bound of the contention factor",
                                    range=(0.01, 1.0))
    contention_max: float = setting(10.0, "upper bound of the contention factor",
                                    range=(1.0, 1000.0))
    learn_tail: bool = setting(
        True, "learn the p95/p50 latency tail ratio from the metrics (false = keep the profile "
        "table's)")
    tail_max: float = setting(10.0, "upper bound of the learnt tail ratio", range=(1.0, 1000.0))
    # Not a node parameter: the evolution node reports at most one deadline miss per window.
    deadline_miss_trigger: int = 1

    def __post_init__(self) -> None:
        for name in ("gain_threshold", "min_swap_interval_s", "min_urgent_interval_s",
                     "recovery_s", "violation_memory_s", "settle_s"):
            require_number(name, getattr(self, name), 0.0, math.inf)
        for name in ("stale_after_s", "pending_timeout_s"):
            require_number(name, getattr(self, name), 0.0, math.inf, low_open=True)
        require_number("headroom", self.headroom, 0.0, 0.9)
        require_number("contention_alpha", self.contention_alpha, 0.0, 1.0, low_open=True)
        require_number("contention_min", self.contention_min, 0.0, 1.0, low_open=True)
        require_number("contention_max", self.contention_max, 1.0, 1000.0)
        require_number("tail_max", self.tail_max, 1.0, 1000.0)
        require_number("deadline_miss_trigger", self.deadline_miss_trigger, 1, 10**9)
        if self.min_urgent_interval_s > self.min_swap_interval_s:
            raise ValueError("min_urgent_interval_s must not exceed min_swap_interval_s")


class ContentionEstimator:
    """A smoothed ratio of two latencies: the contention factor (measured / profiled p50 of the
    running variant) or the tail ratio (measured p95 / measured p50).

    Exponentially smoothed (``alpha`` = weight of the newest measurement) and clipped to
    [low, high], so one odd window cannot swing the choice and a broken measurement cannot
    make every variant look infinitely slow. It describes the machine, not the variant, so it
    carries over a swap.
    """

    def __init__(self, alpha: float = 0.5, low: float = 0.5, high: float = 10.0,
                 initial: float = 1.0) -> None:
        if not (0 < alpha <= 1 and 0 < low <= initial <= high):
            raise ValueError(f"need 0 < alpha <= 1 and 0 < low <= initial <= high, got "
                             f"alpha={alpha}, low={low}, initial={initial}, high={high}")
        self.alpha, self.low, self.high = alpha, low, high
        self.factor = float(initial)

    def update(self, measured_ms: float, profiled_ms: float) -> float:
        if not (math.isfinite(measured_ms) and measured_ms > 0 and profiled_ms > 0):
            return self.factor  # no usable measurement: keep the estimate
        ratio = min(max(measured_ms / profiled_ms, self.low), self.high)
        self.factor = (1 - self.alpha) * self.factor + self.alpha * ratio
        return self.factor


@dataclass(frozen=True)
class Decision:
    """The outcome of one :meth:`Evolver.decide`.

    kind: "initial", "violation", "gain", "stale" (these swap) or "keep", "hold", "wait".
    ``config_id`` is the variant to run after this decision ("none" while nothing runs and
    nothing may be chosen); ``entry`` its profile-table row and ``prediction`` what the table
    predicts for it now (budgets of the stale or missing context are unconstrained). ``result``
    is the search behind the decision, when one ran.
    """

    swap: bool
    kind: str
    config_id: str
    previous_id: str | None
    reason: str
    time: float
    entry: ProfileEntry | None = None
    prediction: Prediction | None = None
    result: SearchResult | None = None
    context: Context | None = None

    @property
    def config(self) -> CompressionConfig | None:
        return self.entry.config if self.entry is not None else None


class Evolver:
    """The decision loop of the evolution node, as plain logic.

    The node calls :meth:`observe_context` for every ContextState, :meth:`observe_metrics` for
    every PerformanceMetrics, :meth:`decide` on a timer, and, when a decision says ``swap``,
    calls the Reconfigure service and reports the outcome with :meth:`swap_done`::

        evolver = Evolver(ProfileTable.load(path), EvolutionParams(...),
                          budget_params=BudgetParams(...), lambda_params=LambdaParams(...))
        evolver.observe_context(context, now)                       # context callback
        evolver.observe_metrics(m.config_id, m.model_latency_ms_p50,
                                m.model_latency_ms_p95, now)        # metrics callback
        decision = evolver.decide(now)                              # timer callback
        if decision.swap:
            ...  # Reconfigure(decision.config); log decision.reason
            evolver.swap_done(decision.config_id, now, ok=response_ok)
    """

    def __init__(
        self,
        table: ProfileTable | RuntimeSearch,
        params: EvolutionParams | None = None,
        *,
        budget_params: BudgetParams | None = None,
        lambda_params: LambdaParams | None = None,
        lambdas: Lambdas | None = None,
        active_id: str | None = None,
        mission_start: float | None = None,
        objective: ObjectiveParams | None = None,
    ) -> None:
        """``lambdas`` fixes λ (no adaptation); ``active_id`` is the variant already running;
        ``mission_start`` (same clock as ``now``) defaults to the first call's time."""
        self.search = table if isinstance(table, RuntimeSearch) else RuntimeSearch(table)
        if objective is not None:
            self.search.objective_params = objective
        if active_id is not None and active_id not in self.search:
            raise ValueError(f"active config {active_id!r} is not in the profile table")
        self.active_id = active_id
        self.contention = ContentionEstimator()
        initial_tail = min(self.search.tail_ratio, 1000.0)
        self.tail = ContentionEstimator(low=1.0, high=max(initial_tail, 10.0),
                                        initial=initial_tail)
        self.set_params(params or EvolutionParams(), budget_params or BudgetParams(),
                        lambda_params or LambdaParams(), lambdas)
        self.latency_drift = 1.0
        self.deadline_violated = False
        # The rest of a frame besides the forward pass, measured: its median latency (None until
        # a window reports it; why not its p95: see compute_budgets) and its energy (the table
        # energy of the running variant subtracted from the measured frame energy).
        self.non_model_ms: float | None = None
        self.overhead_mj = 0.0
        self.max_rate_hz = 0.0  # the perception node's frame-rate cap, from its metrics
        self.swaps = 0
        self.mission_start = mission_start
        self._context: Context | None = None
        self._context_at = -math.inf
        self._last_swap_at = -math.inf
        self._violations: list[float] = []  # times of the flaps still remembered
        self._last_upgrade_at = -math.inf  # last gain swap to a slower variant
        self._last_violation_at = -math.inf
        self._pending: tuple[str, float] | None = None

    def set_params(self, params: EvolutionParams, budget_params: BudgetParams,
                   lambda_params: LambdaParams, lambdas: Lambdas | None = None,
                   objective: ObjectiveParams | None = None) -> None:
        """Replace the tuning at run time (e.g. ROS parameters changed). The running variant,
        the contention estimate (clipped to the new bounds) and the swap history are kept.
        ``lambdas`` fixes λ; None lets them adapt. Raises ValueError for an unknown safe id,
        leaving the old tuning in place."""
        safe = params.safe_config_id
        if safe is not None and safe not in self.search:
            raise ValueError(f"safe_config_id {safe!r} is not in the profile table")
        self.params, self.budget_params, self.lambda_params = params, budget_params, lambda_params
        self.fixed_lambdas = lambdas
        if objective is not None:
            self.search.objective_params = objective
        self.safe_id = safe or self.search.fastest.id
        est = self.contention
        est.alpha, est.low, est.high = (params.contention_alpha, params.contention_min,
                                        params.contention_max)
        est.factor = min(max(est.factor, est.low), est.high)
        tail = self.tail
        tail.alpha, tail.high = params.contention_alpha, max(params.tail_max, 1.0)
        if not params.learn_tail:
            tail.factor = self.search.tail_ratio
        tail.factor = min(max(tail.factor, tail.low), tail.high)

    # -- inputs -------------------------------------------------------------------------------
    def _start(self, now: float) -> None:
        if self.mission_start is None:
            self.mission_start = now

    def observe_context(self, context: Context, now: float) -> None:
        """A new context snapshot, received at ``now``."""
        self._start(now)
        self._context, self._context_at = context, now

    def observe_metrics(self, config_id: str, latency_ms_p50: float, latency_ms_p95: float,
                        now: float, deadline_misses: int = 0,
                        non_model_ms: float = math.nan,
                        energy_per_frame_mj: float = math.nan,
                        max_rate_hz: float = math.nan) -> None:
        """Measured forward-pass latency of ``config_id`` over the last window, and optionally
        the median of the rest of a frame (transport, decoding, preprocessing, publishing) and
        the energy of a whole frame: the latency budget of the forward pass is the frame budget
        minus that measured rest, and the energy budget is compared with the forward's table
        energy plus the measured rest. ``max_rate_hz`` is the perception node's frame-rate cap
        (0 = none): the energy budget is spread over min(fps, cap) frames per second.

        Metrics of the variant a pending swap asked for confirm that swap. Metrics of another
        known variant while nothing is pending mean the perception node runs something else
        (e.g. it restarted): that variant becomes the active one. Metrics within ``settle_s``
        of a swap are ignored because the window may mix two variants.
        """
        self._start(now)
        if math.isfinite(max_rate_hz) and max_rate_hz >= 0:  # about the node, whatever variant
            self.max_rate_hz = max_rate_hz
        if self._pending is not None and config_id == self._pending[0]:
            self.swap_done(config_id, now)
        if config_id not in self.search:
            return
        if config_id != self.active_id:
            if self._pending is not None:
                return
            self.active_id = config_id
        if now - self._last_swap_at < self.params.settle_s:
            return
        row = self.search.row(config_id)
        alpha = self.params.contention_alpha
        if math.isfinite(non_model_ms) and non_model_ms >= 0:
            self.non_model_ms = non_model_ms if self.non_model_ms is None else \
                (1 - alpha) * self.non_model_ms + alpha * non_model_ms
        if math.isfinite(energy_per_frame_mj) and energy_per_frame_mj >= 0:
            rest = max(energy_per_frame_mj - float(self.search.energy[row]), 0.0)
            self.overhead_mj = (1 - alpha) * self.overhead_mj + alpha * rest \
                if self.overhead_mj > 0 else rest
        factor = self.contention.update(latency_ms_p50, float(self.search.latency_p50[row]))
        if self.params.learn_tail:
            self.tail.update(latency_ms_p95, latency_ms_p50)
        # What the smoothed model still leaves unexplained: > 1 right after a sudden slowdown.
        predicted_p95 = float(self.search.latency_p50[row]) * factor * self.tail.factor
        if math.isfinite(latency_ms_p95) and latency_ms_p95 > 0 and predicted_p95 > 0:
            self.latency_drift = latency_ms_p95 / predicted_p95
        # A missed deadline is a measured p95 over the application's budget itself; the
        # latency_margin below it is the search's safety buffer, not a deadline.
        deadline = self._context.latency_budget_ms if self._context is not None else math.inf
        self.deadline_violated = (deadline_misses >= self.params.deadline_miss_trigger
                                  or (math.isfinite(latency_ms_p95) and latency_ms_p95 > deadline))

    def swap_done(self, config_id: str, now: float, ok: bool = True) -> None:
        """The perception node reported the outcome of a swap to ``config_id``."""
        if self._pending is None or self._pending[0] != config_id:
            if ok and config_id in self.search:  # a swap we did not ask for: trust the node
                self.active_id = config_id
                self._reset_after_swap(now)
            return
        self._pending = None
        if ok:
            self.active_id = config_id
            self.swaps += 1
            self._reset_after_swap(now)

    def _reset_after_swap(self, now: float) -> None:
        self._last_swap_at = now
        self.latency_drift = 1.0
        self.deadline_violated = False

    # -- the decision -------------------------------------------------------------------------
    def _mission_remaining(self, now: float) -> float | None:
        duration = self.budget_params.mission_duration_s
        if duration is None or self.mission_start is None:
            return None
        return max(duration - (now - self.mission_start), 0.0)

    def budgets(self, now: float) -> tuple[Budgets, Lambdas]:
        """Budgets and λ for the latest context (which must exist)."""
        if self._context is None:
            raise ValueError("no context observed yet")
        budgets = compute_budgets(self._context, self.budget_params,
                                  latency_drift=self.latency_drift,
                                  mission_remaining_s=self._mission_remaining(now),
                                  non_model_ms=self.non_model_ms,
                                  max_rate_hz=self.max_rate_hz)
        lambdas = self.fixed_lambdas or adapt_lambdas(self._context, self.lambda_params)
        return budgets, lambdas

    def _decision(self, swap: bool, kind: str, config_id: str, reason: str, now: float,
                  prediction: Prediction | None = None,
                  result: SearchResult | None = None) -> Decision:
        if swap:
            self._pending = (config_id, now)
        entry = None
        if config_id in self.search:
            entry = self.search.entries[self.search.row(config_id)]
            if prediction is None:
                context = self._context or Context()
                lambdas = self.fixed_lambdas or adapt_lambdas(context, self.lambda_params)
                prediction = self.search.predict(config_id, Budgets(), lambdas,
                                                 self.contention.factor, self.tail.factor,
                                                 self.overhead_mj)
        return Decision(swap=swap, kind=kind, config_id=config_id, previous_id=self.active_id,
                        reason=reason, time=now, entry=entry, prediction=prediction,
                        result=result, context=self._context)

    def status(self) -> dict[str, float | int | str]:
        """Internal state for diagnostics (e.g. a DiagnosticArray of the evolution node)."""
        return {
            "active": self.active_id or "none",
            "pending": self._pending[0] if self._pending else "",
            "contention_factor": round(self.contention.factor, 3),
            "tail_ratio": round(self.tail.factor, 3),
            "latency_drift": round(self.latency_drift, 3),
            "non_model_ms": round(self.non_model_ms, 3) if self.non_model_ms is not None
            else "unmeasured",
            "frame_overhead_mj": round(self.overhead_mj, 3),
            "perception_max_rate_hz": self.max_rate_hz,
            "swaps": self.swaps,
            "violations_remembered": len(self._violations),
            "safe": self.safe_id,
        }

    def decide(self, now: float) -> Decision:
        """Keep the running variant or swap; see the module docstring for the rules."""
        self._start(now)
        p = self.params
        current = self.active_id or "none"
        if self._pending is not None:
            target, asked_at = self._pending
            if now - asked_at < p.pending_timeout_s:
                return self._decision(False, "wait", current,
                                      f"waiting for the swap to {target} to take effect", now)
            self._pending = None  # the swap failed silently; decide afresh

        age = now - self._context_at
        if self._context is None or age > p.stale_after_s:
            what = "no context yet" if self._context is None else \
                f"context is {age:.1f} s old (> {p.stale_after_s:g} s)"
            if self.active_id == self.safe_id:
                return self._decision(False, "hold", self.safe_id,
                                      f"{what}: staying on the safe variant {self.safe_id}", now)
            return self._decision(True, "stale", self.safe_id,
                                  f"{what}: fall back to the safe variant {self.safe_id}", now)

        budgets, lambdas = self.budgets(now)
        contention, tail, overhead = self.contention.factor, self.tail.factor, self.overhead_mj
        # Candidates must fit with headroom (Schmitt trigger); if none does, the plain budget.
        strict = replace(budgets, latency_ms=budgets.latency_ms * (1 - p.headroom),
                         energy_mj=budgets.energy_mj * (1 - p.headroom))
        best = self.search.search(strict, lambdas, contention, tail, overhead)
        if not best.feasible and p.headroom > 0:
            best = self.search.search(budgets, lambdas, contention, tail, overhead)

        if self.active_id is None or self.active_id not in self.search:
            return self._decision(True, "initial", best.config_id,
                                  f"initial choice: {best.reason}", now, best.prediction, best)

        active = self.search.predict(self.active_id, budgets, lambdas, contention, tail,
                                     overhead)
        problems = list(active.violations)
        if self.deadline_violated:
            problems.append("measured latency misses the deadline")
        if best.config_id == self.active_id:
            state = "violates " + "; ".join(problems) if problems else "is within budget"
            return self._decision(False, "keep", self.active_id,
                                  f"{self.active_id} {state} and is still the best choice "
                                  f"(contention {contention:.2f}x, tail {tail:.2f})", now,
                                  active, best)

        since = now - self._last_swap_at
        if problems:
            if since < p.min_urgent_interval_s:
                return self._decision(False, "hold", self.active_id,
                                      f"{self.active_id} violates {'; '.join(problems)}, but "
                                      f"the last swap was {since:.1f} s ago (< "
                                      f"{p.min_urgent_interval_s:g} s): waiting for its "
                                      f"metrics", now, active, best)
            self._last_violation_at = now
            if now - self._last_upgrade_at < p.violation_memory_s:
                self._violations.append(now)  # the last step up did not hold: a flap
            return self._decision(True, "violation", best.config_id,
                                  f"{self.active_id} violates {'; '.join(problems)} "
                                  f"(contention {contention:.2f}x, tail {tail:.2f}): swap to "
                                  f"{best.config_id}, "
                                  f"{best.reason}", now, best.prediction, best)

        # Both objectives against the same (plain) budgets, so they share one anchor.
        rival = self.search.predict(best.config_id, budgets, lambdas, contention, tail, overhead)
        gain = rival.objective - active.objective
        if gain < p.gain_threshold:
            return self._decision(False, "keep", self.active_id,
                                  f"{self.active_id} is within budget; the best alternative "
                                  f"{best.config_id} gains {gain:+.2f} (< "
                                  f"{p.gain_threshold:g} hysteresis)", now, active, best)
        if since < p.min_swap_interval_s:
            return self._decision(False, "hold", self.active_id,
                                  f"{best.config_id} would gain {gain:+.2f}, but the last swap "
                                  f"was {since:.1f} s ago (< {p.min_swap_interval_s:g} s)",
                                  now, active, best)
        self._violations = [t for t in self._violations if now - t < p.violation_memory_s]
        if best.prediction.latency_ms > active.latency_ms:
            calm_for = now - self._last_violation_at
            backoff = p.recovery_s * 2 ** min(len(self._violations), _MAX_BACKOFF - 1)
            if calm_for < backoff:
                return self._decision(False, "hold", self.active_id,
                                      f"{best.config_id} would gain {gain:+.2f}, but it is "
                                      f"slower and the last budget violation was "
                                      f"{calm_for:.1f} s ago (< {backoff:g} s back-off after "
                                      f"{len(self._violations)} flap(s))",
                                      now, active, best)
        if best.prediction.latency_ms > active.latency_ms:
            self._last_upgrade_at = now
        return self._decision(True, "gain", best.config_id,
                              f"objective gain {gain:+.2f} >= {p.gain_threshold:g} "
                              f"({lambdas.rule}): swap {self.active_id} -> {best.config_id}, "
                              f"{best.reason}", now, best.prediction, best)
