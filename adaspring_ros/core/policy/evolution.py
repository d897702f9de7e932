"""The evolution policy: context + the live cost estimate -> keep the running variant or swap.

Plain logic with injected time: every method takes ``now`` (seconds, any monotonic clock, the same
for all calls) and nothing sleeps or starts threads, so the evolution node only wires messages to
:class:`Evolver` and tests drive it with made-up clocks. What the metrics say about the device is
the :class:`~adaspring_ros.core.policy.estimator.CostEstimator`'s; the rules are here.

Per decision (``Evolver.decide(now)``), the first rule that applies; its name starts the
decision's reason:

1. ``wait``: a swap that was asked for and not yet confirmed (until ``pending_timeout_s``).
2. ``stale``: no context for ``stale_after_s`` -> the safe variant (``safe_config_id``, default
   the fastest within the accuracy floor), at once: running blind is worse than a short swap.
   Before the first context, ``stale_after_s`` counts from the policy's start, and until then it
   waits (``wait``): at start-up the context's publisher may simply not be discovered yet.
3. ``initial``: nothing runs yet -> the choice of ``RuntimeSearch.choose``: the search with
   ``headroom`` less latency and energy budget (a Schmitt trigger: the running variant is judged
   against the full budgets, so jitter around a budget does not flip between two variants).
4. ``keep``: the running variant is still the choice.
5. ``violation`` / ``floor``: the running variant violates a budget (predicted, or measured
   deadline misses), or sits below the accuracy floor while the budgets no longer force it ->
   swap to the choice, once ``min_urgent_interval_s`` has passed since the last swap (so the
   new variant's own metrics are seen first; ``hold`` until then).
6. ``gain``: the choice's objective beats the running one's by ``gain_threshold`` (absolute, in
   accuracy points, both judged against the same budgets) and ``min_swap_interval_s`` has
   passed (``keep`` or ``hold`` otherwise).

Back-off, only for real flaps. A swap to a variant that costs more (latency or energy) is a step
up, remembered with the budgets it was chosen for. A violation is a flap when the variant
stepped up to violates those same budgets with today's estimates (or misses the deadline it was
chosen to meet) while the other processes' CPU load has not risen by more than
:data:`LOAD_RISE_PT`: the policy misjudged it. A tighter context (battery, budget, memory, new
load) is no flap. With n flaps remembered (``violation_memory_s``, n capped at 6), a step up
waits ``recovery_s`` x 2^(n-1) after the last flap; with none, the policy climbs back at its
first decision after ``min_swap_interval_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.profile_table import ProfileEntry, ProfileTable
from adaspring_ros.core.policy.budgets import BudgetParams, Budgets, compute_budgets
from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.estimator import LOAD_RISE_PT, CostEstimator
from adaspring_ros.core.policy.lambdas import LambdaParams, Lambdas, adapt_lambdas
from adaspring_ros.core.policy.objective import ObjectiveParams, Prediction
from adaspring_ros.core.policy.search import RuntimeSearch, SearchResult
from adaspring_ros.core.validation import require_number, setting

__all__ = ["EvolutionParams", "Decision", "Evolver", "KINDS", "LOAD_RISE_PT"]

# Decision kinds: the first five swap.
KINDS = ("initial", "violation", "floor", "gain", "stale", "keep", "hold", "wait")
_MAX_FLAPS = 6  # the back-off doubles at most 5 times (32 x recovery_s)


@dataclass(frozen=True)
class EvolutionParams:
    """Tuning of the trigger policy (the rules: see the module docstring). Each field with a
    description is an evolution_node parameter of the same name; the contention and tail fields
    tune the CostEstimator."""

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
        None, "config id used while the context is stale ('' = the fastest variant within "
        "max_accuracy_loss_pt of the table's most accurate)", none="")
    recovery_s: float = setting(
        10.0, "back-off before stepping up again after a flap (a variant stepped up to that "
        "failed its own budgets), doubled per flap remembered, s", range=(0.0, 86400.0))
    violation_memory_s: float = setting(
        600.0, "how long flaps count for the back-off, s", range=(0.0, 86400.0))
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


@dataclass(frozen=True)
class Decision:
    """The outcome of one :meth:`Evolver.decide`.

    ``kind`` is one of :data:`KINDS` and starts ``reason``. ``config_id`` is the variant to run
    after this decision ("none" while nothing runs and nothing may be chosen); ``entry`` its
    profile-table row and ``prediction`` what the table predicts for it now (budgets of the
    stale or missing context are unconstrained). ``result`` is the search behind the decision,
    when one ran.
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


@dataclass(frozen=True)
class _StepUp:
    """A swap to a costlier variant, with what it was chosen under."""

    config_id: str
    budgets: Budgets
    deadline_ms: float
    load_pct: float
    time: float


class Evolver:
    """The decision loop of the evolution node, as plain logic.

    The node calls :meth:`observe_context` for every ContextState, :meth:`observe_metrics` for
    every PerformanceMetrics and :meth:`decide` on a timer; when a decision says ``swap`` it
    calls the Reconfigure service with ``decision.config``, logs ``decision.reason`` and reports
    the outcome with :meth:`swap_done`.
    """

    def __init__(self, table: ProfileTable | RuntimeSearch, params: EvolutionParams | None = None,
                 *, budget_params: BudgetParams | None = None,
                 lambda_params: LambdaParams | None = None, lambdas: Lambdas | None = None,
                 active_id: str | None = None, mission_start: float | None = None,
                 objective: ObjectiveParams | None = None) -> None:
        """``lambdas`` fixes λ (no adaptation); ``active_id`` is the variant already running;
        ``mission_start`` (same clock as ``now``) defaults to the first call's time."""
        self.search = table if isinstance(table, RuntimeSearch) else RuntimeSearch(table)
        if active_id is not None and active_id not in self.search:
            raise ValueError(f"active config {active_id!r} is not in the profile table")
        self.active_id = active_id
        self.estimator = CostEstimator(self.search.tail_ratio, self.search.cold_ms)
        self.set_params(params or EvolutionParams(), budget_params or BudgetParams(),
                        lambda_params or LambdaParams(), lambdas, objective)
        self.swaps = 0
        self.mission_start = mission_start
        self.last_kind = ""
        self._context: Context | None = None
        self._context_at = -math.inf
        self._last_swap_at = -math.inf
        self._flaps: list[float] = []  # times of the flaps still remembered
        self._step_up: _StepUp | None = None
        self._pending: tuple[str, float, _StepUp | None] | None = None

    def set_params(self, params: EvolutionParams, budget_params: BudgetParams,
                   lambda_params: LambdaParams, lambdas: Lambdas | None = None,
                   objective: ObjectiveParams | None = None) -> None:
        """Replace the tuning at run time (e.g. ROS parameters changed). The running variant,
        the cost estimate (clipped to the new bounds) and the swap history are kept.
        ``lambdas`` fixes λ; None lets them adapt. Raises ValueError for an unknown safe id,
        leaving the old tuning in place."""
        safe = params.safe_config_id
        if safe is not None and safe not in self.search:
            raise ValueError(f"safe_config_id {safe!r} is not in the profile table")
        self.params, self.budget_params, self.lambda_params = params, budget_params, lambda_params
        self.fixed_lambdas = lambdas
        if objective is not None:
            self.search.objective_params = objective
        self.safe_id = safe or self.search.fastest_within_floor.id
        self.estimator.configure(alpha=params.contention_alpha,
                                 contention_min=params.contention_min,
                                 contention_max=params.contention_max,
                                 learn_tail=params.learn_tail, tail_max=params.tail_max)

    # -- inputs -------------------------------------------------------------------------------
    def _start(self, now: float) -> None:
        if self.mission_start is None:
            self.mission_start = now

    def observe_context(self, context: Context, now: float) -> None:
        """A new context snapshot, received at ``now``."""
        self._start(now)
        self._context, self._context_at = context, now

    def observe_metrics(self, config_id: str, latency_ms_p50: float, latency_ms_p95: float,
                        now: float, deadline_misses: int = 0, non_model_ms: float = math.nan,
                        energy_per_frame_mj: float = math.nan,
                        max_rate_hz: float = math.nan) -> None:
        """Measured forward-pass latency of ``config_id`` over the last window, and optionally
        the median of the rest of a frame (transport, decoding, preprocessing, publishing), the
        energy of a whole frame and the perception node's frame-rate cap (CostEstimator).

        Metrics of the variant a pending swap asked for confirm that swap. Metrics of another
        known variant while nothing is pending mean the perception node runs something else
        (e.g. it restarted): that variant becomes the active one. Metrics within ``settle_s``
        of a swap are ignored because the window may mix two variants.
        """
        self._start(now)
        self.estimator.observe_rate_cap(max_rate_hz)  # about the node, whatever variant
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
        # A missed deadline is a measured p95 over the application's budget itself; the
        # latency_margin below it is the search's safety buffer, not a deadline.
        load = self._context.cpu_load_other_percent if self._context is not None else math.nan
        self.estimator.observe(
            float(self.search.latency_p50[row]), float(self.search.energy[row]), latency_ms_p50,
            latency_ms_p95, non_model_ms=non_model_ms, energy_per_frame_mj=energy_per_frame_mj,
            deadline_ms=self._deadline(), deadline_misses=deadline_misses,
            miss_trigger=self.params.deadline_miss_trigger, variant=config_id, load_pct=load)

    def swap_done(self, config_id: str, now: float, ok: bool = True) -> None:
        """The perception node reported the outcome of a swap to ``config_id``."""
        if self._pending is None or self._pending[0] != config_id:
            if ok and config_id in self.search:  # a swap we did not ask for: trust the node
                self.active_id, self._step_up = config_id, None
                self._reset_after_swap(now)
            return
        step_up = self._pending[2]
        self._pending = None
        if ok:
            self.active_id = config_id
            self.swaps += 1
            self._step_up = step_up
            self._reset_after_swap(now)

    def _reset_after_swap(self, now: float) -> None:
        self._last_swap_at = now
        self.estimator.reset_after_swap()

    # -- the decision -------------------------------------------------------------------------
    def _deadline(self) -> float:
        return self._context.latency_budget_ms if self._context is not None else math.inf

    def _mission_remaining(self, now: float) -> float | None:
        duration = self.budget_params.mission_duration_s
        if duration is None or self.mission_start is None:
            return None
        return max(duration - (now - self.mission_start), 0.0)

    def budgets(self, now: float) -> tuple[Budgets, Lambdas]:
        """Budgets and λ for the latest context (which must exist)."""
        if self._context is None:
            raise ValueError("no context observed yet")
        est = self.estimator
        budgets = compute_budgets(self._context, self.budget_params,
                                  latency_drift=est.latency_drift,
                                  mission_remaining_s=self._mission_remaining(now),
                                  non_model_ms=est.non_model_ms, max_rate_hz=est.max_rate_hz)
        lambdas = self.fixed_lambdas or adapt_lambdas(self._context, self.lambda_params)
        return budgets, lambdas

    def _predict(self, config_id: str, budgets: Budgets, lambdas: Lambdas) -> Prediction:
        est = self.estimator
        return self.search.predict(config_id, budgets, lambdas, est.contention, est.tail,
                                   est.overhead_mj, est.cold_ms)

    def predict(self, config_id: str, now: float | None = None) -> Prediction:
        """What the policy predicts for ``config_id`` with the live cost estimate (forward
        latency, frame energy, objective): under the latest context's budgets at ``now``, or
        unconstrained without ``now`` or a context."""
        if now is not None and self._context is not None:
            return self._predict(config_id, *self.budgets(now))
        context = self._context or Context()
        lambdas = self.fixed_lambdas or adapt_lambdas(context, self.lambda_params)
        return self._predict(config_id, Budgets(), lambdas)

    def _decision(self, swap: bool, kind: str, config_id: str, reason: str, now: float,
                  prediction: Prediction | None = None, result: SearchResult | None = None,
                  step_up: _StepUp | None = None) -> Decision:
        self.last_kind = kind
        if swap:
            self._pending = (config_id, now, step_up)
        known = config_id in self.search
        entry = self.search.entries[self.search.row(config_id)] if known else None
        prediction = prediction or (self.predict(config_id) if known else None)
        return Decision(swap=swap, kind=kind, config_id=config_id, previous_id=self.active_id,
                        reason=f"{kind}: {reason}", time=now, entry=entry,
                        prediction=prediction, result=result, context=self._context)

    def status(self) -> dict[str, float | int | str]:
        """Internal state for diagnostics (e.g. a DiagnosticArray of the evolution node)."""
        return {
            "active": self.active_id or "none", "last_decision": self.last_kind,
            "pending": self._pending[0] if self._pending else "",
            "context": self._context.describe() if self._context is not None else "none",
            **self.estimator.status(),
            "swaps": self.swaps, "flaps_remembered": len(self._flaps), "safe": self.safe_id,
        }

    def decide(self, now: float) -> Decision:
        """Keep the running variant or swap; see the module docstring for the rules."""
        self._start(now)
        p = self.params
        current = self.active_id or "none"
        if self._pending is not None:
            target, asked_at, _ = self._pending
            if now - asked_at < p.pending_timeout_s:
                return self._decision(False, "wait", current,
                                      f"waiting for the swap to {target} to take effect", now)
            self._pending = None  # the swap failed silently; decide afresh

        age = now - self._context_at
        if self._context is None and now - self.mission_start <= p.stale_after_s:
            return self._decision(False, "wait", current,
                                  f"waiting for the first context ({now - self.mission_start:.1f}"
                                  f" of {p.stale_after_s:g} s)", now)
        if self._context is None or age > p.stale_after_s:
            what = "no context yet" if self._context is None else \
                f"context is {age:.1f} s old (> {p.stale_after_s:g} s)"
            if self.active_id == self.safe_id:
                return self._decision(False, "hold", self.safe_id,
                                      f"{what}: staying on the safe variant {self.safe_id}", now)
            return self._decision(True, "stale", self.safe_id,
                                  f"{what}: fall back to the safe variant {self.safe_id}", now)

        budgets, lambdas = self.budgets(now)
        est = self.estimator
        best = self.search.choose(budgets, lambdas, p.headroom, est.contention, est.tail,
                                  est.overhead_mj, est.cold_ms)
        if self.active_id is None or self.active_id not in self.search:
            return self._decision(True, "initial", best.config_id, best.reason, now,
                                  best.prediction, best)

        active = self._predict(self.active_id, budgets, lambdas)
        problems = [f"violates {v}" for v in active.violations]
        if est.deadline_violated:
            problems.append("misses the deadline (measured)")
        below = not self.search.within_floor(self.active_id) and \
            best.rule != "forced-below-floor"
        if below:
            problems.append(f"is below the accuracy floor ({active.accuracy:.1%} < "
                            f"{self.search.floor:.1%}) and the budgets no longer force it")
        estimate = (f"contention {est.contention:.2f}x, cold start +{est.cold_ms:.2f} ms, "
                    f"tail {est.tail:.2f}")
        if best.config_id == self.active_id:
            state = "; ".join(problems) if problems else "is within budget"
            return self._decision(False, "keep", self.active_id,
                                  f"{self.active_id} {state} and is still the best choice "
                                  f"({estimate})", now, active, best)

        since = now - self._last_swap_at
        rival = self._predict(best.config_id, budgets, lambdas)
        step_up = self._step_up_to(best, rival, active, now)
        if problems:
            if since < p.min_urgent_interval_s:
                return self._decision(False, "hold", self.active_id,
                                      f"{self.active_id} {'; '.join(problems)}, but the last "
                                      f"swap was {since:.1f} s ago (< "
                                      f"{p.min_urgent_interval_s:g} s): waiting for its "
                                      f"metrics", now, active, best)
            if self._is_flap(lambdas, now):
                self._flaps.append(now)
            kind = "floor" if below and len(problems) == 1 else "violation"
            return self._decision(True, kind, best.config_id,
                                  f"{self.active_id} {'; '.join(problems)} ({estimate}): swap "
                                  f"to {best.config_id}, {best.reason}", now, best.prediction,
                                  best, step_up)

        # Both objectives against the same (plain) budgets, so they share one anchor.
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
        self._flaps = [t for t in self._flaps if now - t < p.violation_memory_s]
        if step_up is not None and self._flaps:
            calm_for = now - self._flaps[-1]
            backoff = p.recovery_s * 2 ** (min(len(self._flaps), _MAX_FLAPS) - 1)
            if calm_for < backoff:
                return self._decision(False, "hold", self.active_id,
                                      f"{best.config_id} would gain {gain:+.2f}, but it costs "
                                      f"more and the last flap was {calm_for:.1f} s ago (< "
                                      f"{backoff:g} s back-off after {len(self._flaps)} "
                                      f"flap(s))", now, active, best)
        return self._decision(True, "gain", best.config_id,
                              f"objective gain {gain:+.2f} >= {p.gain_threshold:g} "
                              f"({lambdas.rule}): swap {self.active_id} -> {best.config_id}, "
                              f"{best.reason}", now, best.prediction, best, step_up)

    def _step_up_to(self, best: SearchResult, rival: Prediction, active: Prediction,
                    now: float) -> _StepUp | None:
        """A swap to ``best`` steps up when it costs more latency or energy than the active;
        it is chosen for the budgets it was searched with (those less the headroom, mostly).
        A choice that does not meet them (nothing fits) cannot fail them later."""
        if not best.feasible or (rival.latency_ms <= active.latency_ms
                                 and rival.energy_mj <= active.energy_mj):
            return None
        return _StepUp(best.config_id, best.budgets, self._deadline(),
                       self._context.cpu_load_other_percent, now)

    def _is_flap(self, lambdas: Lambdas, now: float) -> bool:
        """The running variant, stepped up to within ``violation_memory_s``, fails the budgets
        it was chosen for under today's estimates, with no more load than then."""
        up = self._step_up
        if up is None or up.config_id != self.active_id or \
                now - up.time > self.params.violation_memory_s:
            return False
        if self._context.cpu_load_other_percent > up.load_pct + LOAD_RISE_PT:
            return False  # other processes took the CPU: the context tightened
        own = self._predict(self.active_id, up.budgets, lambdas)
        missed = self.estimator.deadline_violated and self._deadline() >= up.deadline_ms
        return bool(own.violations) or missed
