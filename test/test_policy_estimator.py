"""The live cost estimate (policy.estimator): smoothing and bounds, tail, drift, the rest of a
frame, deadlines, and new tuning at run time."""

from __future__ import annotations

import math

import pytest

from adaspring_ros.core.policy.estimator import PAIR_WINDOWS, CostEstimator, SmoothedRatio


def test_a_smoothed_ratio_is_clipped_before_smoothing_and_ignores_broken_pairs():
    ratio = SmoothedRatio(alpha=0.5, low=0.5, high=4.0)
    assert ratio.update(20.0, 10.0) == pytest.approx(1.5)
    assert ratio.update(1000.0, 10.0) == pytest.approx(2.75)  # clipped at 4 before smoothing
    for measured, reference in ((math.nan, 10.0), (-1.0, 10.0), (5.0, 0.0), (math.inf, 1.0)):
        assert ratio.update(measured, reference) == pytest.approx(2.75)
    ratio.bound(0.5, 2.0)
    assert ratio.factor == 2.0
    with pytest.raises(ValueError):
        SmoothedRatio(alpha=0.0)
    with pytest.raises(ValueError):
        SmoothedRatio(low=2.0, initial=1.0)


def estimator(alpha: float = 1.0, **kwargs) -> CostEstimator:
    est = CostEstimator(table_tail=1.2)
    settings = dict(alpha=alpha, contention_min=0.5, contention_max=10.0, learn_tail=True,
                    tail_max=10.0)
    est.configure(**{**settings, **kwargs})
    return est


def test_contention_tail_and_drift_follow_the_running_variant():
    est = estimator(alpha=0.5)
    assert (est.contention, est.tail, est.latency_drift) == (1.0, 1.2, 1.0)
    # the variant's table p50 is 2 ms; it runs at 4 ms with a tail of 1.5
    est.observe(2.0, 1.0, 4.0, 6.0)
    assert est.contention == pytest.approx(1.5)
    assert est.tail == pytest.approx(1.35)
    assert est.latency_drift == pytest.approx(6.0 / (2.0 * 1.5 * 1.35))  # > 1: not caught up
    est.reset_after_swap()
    assert est.latency_drift == 1.0


def test_the_rest_of_a_frame_is_measured_beside_the_forward():
    est = estimator(alpha=0.5)
    assert est.non_model_ms is None and est.overhead_mj == 0.0
    est.observe(2.0, 3.0, 2.0, 2.4, non_model_ms=8.0, energy_per_frame_mj=13.0)
    assert (est.non_model_ms, est.overhead_mj) == (8.0, 10.0)  # the first window as is
    est.observe(2.0, 3.0, 2.0, 2.4, non_model_ms=4.0, energy_per_frame_mj=5.0)
    assert (est.non_model_ms, est.overhead_mj) == (6.0, 6.0)  # then smoothed
    est.observe(2.0, 3.0, 2.0, 2.4, non_model_ms=math.nan, energy_per_frame_mj=math.nan)
    assert (est.non_model_ms, est.overhead_mj) == (6.0, 6.0)  # unknown keeps the estimate
    est.observe_rate_cap(5.0)
    est.observe_rate_cap(math.nan)
    assert est.max_rate_hz == 5.0 and est.status()["perception_max_rate_hz"] == 5.0


def test_a_missed_deadline_is_a_p95_over_the_budget_or_enough_misses():
    est = estimator()
    est.observe(2.0, 1.0, 2.0, 9.0, deadline_ms=10.0)
    assert not est.deadline_violated
    est.observe(2.0, 1.0, 2.0, 11.0, deadline_ms=10.0)
    assert est.deadline_violated
    est.observe(2.0, 1.0, 2.0, 2.0, deadline_ms=10.0, deadline_misses=2, miss_trigger=3)
    assert not est.deadline_violated
    est.observe(2.0, 1.0, 2.0, 2.0, deadline_ms=10.0, deadline_misses=3, miss_trigger=3)
    assert est.deadline_violated


def test_new_tuning_keeps_the_estimate_within_the_new_bounds():
    est = estimator()
    est.observe(1.0, 1.0, 8.0, 40.0)
    assert (est.contention, est.tail) == (8.0, 5.0)
    est.configure(alpha=1.0, contention_min=0.5, contention_max=4.0, learn_tail=True,
                  tail_max=3.0)
    assert (est.contention, est.tail) == (4.0, 3.0)
    est.configure(alpha=1.0, contention_min=0.5, contention_max=4.0, learn_tail=False,
                  tail_max=3.0)
    assert est.tail == 1.2  # the table's again, and no longer learnt
    est.observe(1.0, 1.0, 1.0, 3.0)
    assert est.tail == 1.2 and est.contention == 1.0


# Table medians of variants from 0.09 to 1.34 ms (the shipped table's fastest to full) and a
# node that runs each 1.1 x (table + 0.3 ms): the cold start after an idle frame gap, plus a
# little contention. What the perception node reported at 10-30 Hz looks like this.
TABLE_MS = (0.09, 0.2, 0.45, 0.64, 1.34)


def live(table_ms: float, contention: float = 1.1, cold: float = 0.3) -> float:
    return contention * (table_ms + cold)


def test_the_cold_start_term_predicts_every_variant_from_any_other():
    for seen in TABLE_MS:
        with_term, ratio_only = CostEstimator(cold_ms=0.3), CostEstimator()
        for est in (with_term, ratio_only):
            est.configure(alpha=1.0, contention_min=0.5, contention_max=10.0, learn_tail=True,
                          tail_max=10.0)
            est.observe(seen, 1.0, live(seen), 1.2 * live(seen), variant="seen")
        assert with_term.contention == pytest.approx(1.1)
        for other in TABLE_MS:
            assert with_term.predict_p50(other) == pytest.approx(live(other))
    # a ratio learnt on the full network makes the fastest 3.5x faster than it runs
    assert live(0.09) / ratio_only.predict_p50(0.09) == pytest.approx(
        (0.39 / 0.09) / (1.64 / 1.34))


def observe(est: CostEstimator, table_ms: float, live_ms: float, variant: str,
            load: float = 5.0) -> None:
    est.observe(table_ms, 1.0, live_ms, 1.2 * live_ms, variant=variant, load_pct=load)


def test_a_swap_under_the_same_load_measures_the_cold_start_term():
    est = estimator(alpha=1.0)  # a table without the term: the ratio model to begin with
    observe(est, 1.34, live(1.34), "full")
    assert est.cold_ms == 0.0 and est.contention == pytest.approx(live(1.34) / 1.34)
    observe(est, 0.09, live(0.09), "fastest")  # solved from the windows before and after
    assert est.cold_ms == pytest.approx(0.3) and est.contention == pytest.approx(1.1)
    assert est.predict_p50(0.64) == pytest.approx(live(0.64))
    assert est.status()["cold_start_ms"] == 0.3
    observe(est, 0.09, live(0.09, contention=2.0), "fastest", load=80.0)  # later: contention
    assert est.cold_ms == pytest.approx(0.3) and est.contention == pytest.approx(2.0)


def test_no_cold_start_refit_across_a_load_change_or_between_close_variants():
    est = estimator(alpha=1.0)
    observe(est, 1.34, live(1.34), "full", load=5.0)
    observe(est, 0.09, live(0.09, contention=2.0), "fastest", load=60.0)
    assert est.cold_ms == 0.0  # the load, not the cold start, changed the time
    close = estimator(alpha=1.0)
    observe(close, 0.45, live(0.45), "a")
    observe(close, 0.64, live(0.64) * 1.1, "b")  # 10 % noise on a 1.4x step: no refit
    assert close.cold_ms == 0.0
    unknown = estimator(alpha=1.0)
    unknown.observe(1.34, 1.0, live(1.34), 2.0, variant="full")
    unknown.observe(0.09, 1.0, live(0.09), 0.5, variant="fastest")
    assert unknown.cold_ms == 0.0  # no load reading: no evidence it stayed the same


def test_a_refit_is_smoothed_from_the_term_before_the_swap_and_only_just_after_it():
    est = CostEstimator(cold_ms=0.1)
    est.configure(alpha=0.5, contention_min=0.5, contention_max=10.0, learn_tail=True,
                  tail_max=10.0)
    observe(est, 1.34, 1.34 + 0.3, "full")
    observe(est, 0.09, 0.09 + 0.3, "fastest")
    assert est.cold_ms == pytest.approx(0.5 * 0.1 + 0.5 * 0.3)
    for _ in range(PAIR_WINDOWS - 1):  # the same pair, its new side smoothed: same answer
        observe(est, 0.09, 0.09 + 0.3, "fastest")
    assert est.cold_ms == pytest.approx(0.2)
    observe(est, 0.09, 0.09 + 0.9, "fastest")  # past the first windows: contention's now
    assert est.cold_ms == pytest.approx(0.2)
    with pytest.raises(ValueError):
        CostEstimator(cold_ms=-1.0)
