"""The live cost estimate (policy.estimator): smoothing and bounds, tail, drift, the rest of a
frame, deadlines, and new tuning at run time."""

from __future__ import annotations

import math

import pytest

from adaspring_ros.core.policy.estimator import CostEstimator, SmoothedRatio


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
