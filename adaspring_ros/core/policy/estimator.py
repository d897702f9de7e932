"""What the perception node's metrics say about the device: the live cost estimate the evolution
policy predicts with.

The profile table gives each variant's latency and energy as measured once; at run time the
same variant runs slower when other processes share the CPU, its tail is the device's, and a
frame costs more than its forward pass. :class:`CostEstimator` turns the metrics windows of the
running variant into the numbers :class:`~adaspring_ros.core.policy.search.RuntimeSearch` needs:

* ``contention``: measured / profiled median latency of the running variant (it describes the
  machine, not the variant, so it carries over a swap);
* ``tail``: the measured p95 / p50 (the table's median ratio until measured);
* ``latency_drift``: measured p95 / the p95 the smoothed model predicts, > 1 right after a
  sudden slowdown the smoothing has not caught up with (the budgets tighten while it lasts);
* ``non_model_ms`` and ``overhead_mj``: the median time and the energy of a frame besides the
  forward pass; ``max_rate_hz``: the perception node's frame-rate cap;
* ``deadline_violated``: the last window's p95 or deadline misses said the deadline was missed.

Smoothed ratios are exponential averages clipped to bounds (:class:`SmoothedRatio`), so one odd
window cannot swing the choice and a broken measurement cannot make every variant look
infinitely slow.
"""

from __future__ import annotations

import math

__all__ = ["SmoothedRatio", "CostEstimator"]


class SmoothedRatio:
    """A ratio of two measurements, exponentially smoothed (``alpha`` = weight of the newest)
    and clipped to [low, high] before smoothing."""

    def __init__(self, alpha: float = 0.5, low: float = 0.5, high: float = 10.0,
                 initial: float = 1.0) -> None:
        if not (0 < alpha <= 1 and 0 < low <= initial <= high):
            raise ValueError(f"need 0 < alpha <= 1 and 0 < low <= initial <= high, got "
                             f"alpha={alpha}, low={low}, initial={initial}, high={high}")
        self.alpha, self.low, self.high = alpha, low, high
        self.factor = float(initial)

    def update(self, measured: float, reference: float) -> float:
        """Fold in measured / reference; an unusable pair keeps the estimate."""
        if not (math.isfinite(measured) and measured > 0 and reference > 0):
            return self.factor
        ratio = min(max(measured / reference, self.low), self.high)
        self.factor = (1 - self.alpha) * self.factor + self.alpha * ratio
        return self.factor

    def bound(self, low: float, high: float) -> None:
        """New bounds; the estimate is clipped into them."""
        self.low, self.high = low, high
        self.factor = min(max(self.factor, low), high)


class CostEstimator:
    """The live cost model of the device (see the module docstring)."""

    def __init__(self, table_tail: float = 1.0) -> None:
        """``table_tail``: the profile table's p95 / p50, the tail until one is measured."""
        self.table_tail = min(max(float(table_tail), 1.0), 1000.0)
        self._contention = SmoothedRatio()
        self._tail = SmoothedRatio(low=1.0, high=max(self.table_tail, 10.0),
                                   initial=self.table_tail)
        self.learn_tail = True
        self.latency_drift = 1.0
        self.deadline_violated = False
        self.non_model_ms: float | None = None  # None until a window reports it
        self.overhead_mj = 0.0
        self.max_rate_hz = 0.0  # 0 = no cap reported

    @property
    def contention(self) -> float:
        return self._contention.factor

    @property
    def tail(self) -> float:
        return self._tail.factor

    def configure(self, *, alpha: float, contention_min: float, contention_max: float,
                  learn_tail: bool, tail_max: float) -> None:
        """New smoothing and bounds; the estimates are kept, clipped to the new bounds. Without
        ``learn_tail`` the tail goes back to the table's."""
        self._contention.alpha = self._tail.alpha = alpha
        self._contention.bound(contention_min, contention_max)
        self.learn_tail = learn_tail
        if not learn_tail:
            self._tail.factor = self.table_tail
        self._tail.bound(1.0, max(tail_max, 1.0))

    def observe_rate_cap(self, max_rate_hz: float) -> None:
        """The perception node's frame-rate cap (0 = none); NaN or negative = not reported."""
        if math.isfinite(max_rate_hz) and max_rate_hz >= 0:
            self.max_rate_hz = max_rate_hz

    def observe(self, profiled_p50_ms: float, profiled_energy_mj: float,
                latency_ms_p50: float, latency_ms_p95: float, *,
                non_model_ms: float = math.nan, energy_per_frame_mj: float = math.nan,
                deadline_ms: float = math.inf, deadline_misses: int = 0,
                miss_trigger: int = 1) -> None:
        """One metrics window of the running variant, whose table row has ``profiled_p50_ms``
        and ``profiled_energy_mj``. ``deadline_ms`` is the application's own latency budget: a
        measured p95 over it, or ``miss_trigger`` deadline misses, is a missed deadline."""
        alpha = self._contention.alpha
        if math.isfinite(non_model_ms) and non_model_ms >= 0:
            self.non_model_ms = non_model_ms if self.non_model_ms is None else \
                (1 - alpha) * self.non_model_ms + alpha * non_model_ms
        if math.isfinite(energy_per_frame_mj) and energy_per_frame_mj >= 0:
            rest = max(energy_per_frame_mj - profiled_energy_mj, 0.0)
            self.overhead_mj = (1 - alpha) * self.overhead_mj + alpha * rest \
                if self.overhead_mj > 0 else rest
        factor = self._contention.update(latency_ms_p50, profiled_p50_ms)
        if self.learn_tail:
            self._tail.update(latency_ms_p95, latency_ms_p50)
        predicted_p95 = profiled_p50_ms * factor * self.tail
        if math.isfinite(latency_ms_p95) and latency_ms_p95 > 0 and predicted_p95 > 0:
            self.latency_drift = latency_ms_p95 / predicted_p95
        self.deadline_violated = (deadline_misses >= miss_trigger
                                  or (math.isfinite(latency_ms_p95)
                                      and latency_ms_p95 > deadline_ms))

    def reset_after_swap(self) -> None:
        """A new variant runs: its drift and deadline are not known yet."""
        self.latency_drift = 1.0
        self.deadline_violated = False

    def status(self) -> dict[str, float | str]:
        return {
            "contention_factor": round(self.contention, 3),
            "tail_ratio": round(self.tail, 3),
            "latency_drift": round(self.latency_drift, 3),
            "non_model_ms": round(self.non_model_ms, 3) if self.non_model_ms is not None
            else "unmeasured",
            "frame_overhead_mj": round(self.overhead_mj, 3),
            "perception_max_rate_hz": self.max_rate_hz,
        }
