"""What the perception node's metrics say about the device: the live cost estimate the evolution
policy predicts with.

The profile table gives each variant's latency and energy as measured once, back to back; at
run time a forward starts cold after the idle gap between camera frames, the same variant runs
slower when other processes share the CPU, its tail is the device's, and a frame costs more than
its forward pass. :class:`CostEstimator` turns the metrics windows of the running variant into
the numbers :class:`~adaspring_ros.core.policy.search.RuntimeSearch` needs. A variant's median
forward is predicted as ``contention x (table p50 + cold_ms)``:

* ``cold_ms``: what a forward costs on top of its table median after an idle frame gap (caches
  and power state gone cold), the same for every variant: the table's ``cold_start_ms``
  (measured by the profiler, 0 when the table has none), refined at a swap between two variants
  whose table medians differ by :data:`PAIR_MIN_RATIO` or more under the same load (the two
  windows, just before and just after, solve for both terms). One ratio cannot stand for it: at
  10-30 Hz the node measured 1.2x the table for the full network and 3.8x for the fastest
  variant (about +0.3 ms each), so a ratio learnt on one mispredicts the other 3x;
* ``contention``: measured / predicted-without-contention median of the running variant (it
  describes the machine, not the variant, so it carries over a swap);
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
from dataclasses import dataclass

__all__ = ["SmoothedRatio", "CostEstimator", "PAIR_MIN_RATIO", "PAIR_WINDOWS", "LOAD_RISE_PT"]

# A swap refines the cold-start term when the two variants' table medians differ at least this
# much (closer, the window noise of either swamps the difference) ...
PAIR_MIN_RATIO = 2.0
# ... from the first windows of the new variant (later ones may see another load) ...
PAIR_WINDOWS = 3
# A change of the other processes' CPU load (points) that makes a change of latency the load's:
# no cold-start refit across it, and a violation after it is no flap (policy/evolution.py).
LOAD_RISE_PT = 10.0


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


@dataclass
class _Served:
    """What the metrics said of one variant while it ran, under the latest load."""

    variant: str
    table_ms: float
    live_ms: float      # measured median, smoothed over the windows at about ``load_pct``
    load_pct: float     # other processes' CPU load of those windows (NaN: unknown)
    windows: int = 1    # windows since the swap to it


class CostEstimator:
    """The live cost model of the device (see the module docstring)."""

    def __init__(self, table_tail: float = 1.0, cold_ms: float = 0.0) -> None:
        """``table_tail``: the profile table's p95 / p50, the tail until one is measured;
        ``cold_ms``: its cold-start term, until a swap measures one."""
        self.table_tail = min(max(float(table_tail), 1.0), 1000.0)
        if not (math.isfinite(cold_ms) and cold_ms >= 0):
            raise ValueError(f"cold_ms must be a finite number >= 0, got {cold_ms}")
        self.table_cold_ms = self.cold_ms = float(cold_ms)
        self._cold_before_pair = self.cold_ms
        self._served: _Served | None = None
        self._before: _Served | None = None
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

    def predict_p50(self, table_p50_ms: float) -> float:
        """The median forward time of a variant whose table median is ``table_p50_ms``."""
        return self.contention * (table_p50_ms + self.cold_ms)

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
                miss_trigger: int = 1, variant: str = "", load_pct: float = math.nan) -> None:
        """One metrics window of the running variant ``variant``, whose table row has
        ``profiled_p50_ms`` and ``profiled_energy_mj``, while the other processes' CPU load was
        ``load_pct`` (NaN: unknown). ``deadline_ms`` is the application's own latency budget: a
        measured p95 over it, or ``miss_trigger`` deadline misses, is a missed deadline."""
        alpha = self._contention.alpha
        if math.isfinite(non_model_ms) and non_model_ms >= 0:
            self.non_model_ms = non_model_ms if self.non_model_ms is None else \
                (1 - alpha) * self.non_model_ms + alpha * non_model_ms
        if math.isfinite(energy_per_frame_mj) and energy_per_frame_mj >= 0:
            rest = max(energy_per_frame_mj - profiled_energy_mj, 0.0)
            self.overhead_mj = (1 - alpha) * self.overhead_mj + alpha * rest \
                if self.overhead_mj > 0 else rest
        if math.isfinite(latency_ms_p50) and latency_ms_p50 > 0:
            self._learn_cold(variant, profiled_p50_ms, latency_ms_p50, load_pct)
        factor = self._contention.update(latency_ms_p50, profiled_p50_ms + self.cold_ms)
        if self.learn_tail:
            self._tail.update(latency_ms_p95, latency_ms_p50)
        predicted_p95 = (profiled_p50_ms + self.cold_ms) * factor * self.tail
        if math.isfinite(latency_ms_p95) and latency_ms_p95 > 0 and predicted_p95 > 0:
            self.latency_drift = latency_ms_p95 / predicted_p95
        self.deadline_violated = (deadline_misses >= miss_trigger
                                  or (math.isfinite(latency_ms_p95)
                                      and latency_ms_p95 > deadline_ms))

    def _learn_cold(self, variant: str, table_ms: float, live_ms: float,
                    load_pct: float) -> None:
        """Track the running variant; in the first windows after a swap, solve the two
        windows (before, after) for the cold-start term: live = c x (table + cold) on both."""
        served = self._served
        if served is None or served.variant != variant:
            self._before, self._cold_before_pair = served, self.cold_ms
            self._served = _Served(variant, table_ms, live_ms, load_pct)
        elif abs(load_pct - served.load_pct) < LOAD_RISE_PT:
            served.live_ms = (1 - self._contention.alpha) * served.live_ms + \
                self._contention.alpha * live_ms
            served.windows += 1
        else:  # another load: what was smoothed before no longer describes the variant
            served.live_ms, served.load_pct = live_ms, load_pct
            served.windows += 1
        served, before = self._served, self._before
        if before is None or served.windows > PAIR_WINDOWS or \
                not abs(before.load_pct - served.load_pct) < LOAD_RISE_PT or \
                max(served.table_ms, before.table_ms) < \
                PAIR_MIN_RATIO * min(served.table_ms, before.table_ms):
            return
        slope = (served.live_ms - before.live_ms) / (served.table_ms - before.table_ms)
        if not self._contention.low <= slope <= self._contention.high:
            return  # not one contention on both sides: the load changed after all
        cold = max(before.live_ms / slope - before.table_ms, 0.0)
        alpha = self._contention.alpha
        self.cold_ms = (1 - alpha) * self._cold_before_pair + alpha * cold

    def reset_after_swap(self) -> None:
        """A new variant runs: its drift and deadline are not known yet."""
        self.latency_drift = 1.0
        self.deadline_violated = False

    def status(self) -> dict[str, float | str]:
        return {
            "contention_factor": round(self.contention, 3),
            "tail_ratio": round(self.tail, 3),
            "cold_start_ms": round(self.cold_ms, 3),
            "latency_drift": round(self.latency_drift, 3),
            "non_model_ms": round(self.non_model_ms, 3) if self.non_model_ms is not None
            else "unmeasured",
            "frame_overhead_mj": round(self.overhead_mj, 3),
            "perception_max_rate_hz": self.max_rate_hz,
        }
