"""core.policy.budgets: latency, memory, storage and energy budgets from a context."""

from __future__ import annotations

import math

import pytest

from adaspring_ros.core.policy.budgets import BudgetParams, compute_budgets, energy_share_for
from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.scenario import ScenarioTrace

NAN = float("nan")



# -- budgets --------------------------------------------------------------------------------
def test_latency_budget_is_the_applications_with_margin_and_drift_tightening():
    ctx = Context(latency_budget_ms=20.0)
    params = BudgetParams(latency_margin=0.9, drift_tolerance=0.1, min_latency_factor=0.5)
    assert compute_budgets(ctx, params).latency_ms == pytest.approx(18.0)
    # within tolerance: unchanged
    assert compute_budgets(ctx, params, latency_drift=1.05).latency_ms == pytest.approx(18.0)
    tightened = compute_budgets(ctx, params, latency_drift=1.375)
    assert tightened.latency_ms == pytest.approx(18.0 * 1.1 / 1.375)
    assert any("tightened" in n for n in tightened.notes)
    assert compute_budgets(ctx, params, latency_drift=50).latency_ms == pytest.approx(9.0)



def test_memory_and_storage_budgets():
    params = BudgetParams(memory_reserve_mb=200, memory_limit_mb=50, storage_limit_bytes=10**6)
    assert compute_budgets(Context(memory_available_mb=230), params).memory_mb == 30
    assert compute_budgets(Context(memory_available_mb=1000), params).memory_mb == 50
    assert compute_budgets(Context(memory_available_mb=100), params).memory_mb == 0
    assert compute_budgets(Context(), params).memory_mb == 50  # unknown: only the limit
    assert compute_budgets(Context(), params).storage_bytes == 10**6
    assert compute_budgets(Context(), BudgetParams()).storage_bytes == math.inf



def test_energy_budget_spreads_the_battery_share_over_the_mission():
    params = BudgetParams(fps=10, battery_capacity_wh=20, perception_energy_share=0.05,
                          mission_duration_s=1800)
    ctx = Context(battery_percent=50)
    joules = 0.5 * 20 * 3600 * 0.05
    assert compute_budgets(ctx, params).energy_mj == pytest.approx(joules / 18000 * 1000)
    later = compute_budgets(ctx, params, mission_remaining_s=600).energy_mj
    assert later == pytest.approx(joules / 6000 * 1000)
    assert compute_budgets(Context(battery_percent=50, charging=True), params).energy_mj \
        == math.inf
    assert compute_budgets(Context(), params).energy_mj == math.inf
    assert compute_budgets(ctx, BudgetParams()).energy_mj == math.inf  # no mission



def test_energy_budget_uses_the_rate_perception_is_capped_at():
    # fps 10 but perception classifies at most 4 frames/s: the same joules over 2.5x fewer
    # frames, so each frame may cost 2.5x more; a cap above fps changes nothing.
    params = BudgetParams(fps=10, battery_capacity_wh=20, perception_energy_share=0.05,
                          mission_duration_s=1800)
    ctx = Context(battery_percent=50)
    uncapped = compute_budgets(ctx, params)
    capped = compute_budgets(ctx, params, max_rate_hz=4.0)
    assert capped.energy_mj == pytest.approx(uncapped.energy_mj * 2.5)
    assert any("4 fps (perception's max_rate_hz)" in n for n in capped.notes)
    assert compute_budgets(ctx, params, max_rate_hz=30.0).energy_mj == \
        pytest.approx(uncapped.energy_mj)
    assert compute_budgets(ctx, params, max_rate_hz=0.0).energy_mj == \
        pytest.approx(uncapped.energy_mj)
    with pytest.raises(ValueError, match="max_rate_hz"):
        compute_budgets(ctx, params, max_rate_hz=-1.0)



@pytest.mark.parametrize("kwargs", [
    {"fps": 0}, {"battery_capacity_wh": -1}, {"perception_energy_share": 1.5},
    {"latency_margin": 0}, {"mission_duration_s": 0}, {"memory_reserve_mb": NAN},
    {"fps": True}, {"min_accuracy": 1.5},
])
def test_budget_params_are_validated(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        BudgetParams(**kwargs)


def test_an_energy_budget_stated_per_frame_gives_the_share_that_makes_it():
    params = BudgetParams(fps=10, battery_capacity_wh=20, mission_duration_s=1800)
    share = energy_share_for(params, 45.0, 23.25)
    calibrated = BudgetParams(fps=10, battery_capacity_wh=20, mission_duration_s=1800,
                              perception_energy_share=share)
    assert compute_budgets(Context(battery_percent=45), calibrated).energy_mj == \
        pytest.approx(23.25)
    later = energy_share_for(params, 45.0, 23.25, mission_remaining_s=900)
    assert later == pytest.approx(share / 2)
    assert energy_share_for(params, 1.0, 1e6) == 1.0  # clipped to the parameter's range
    assert energy_share_for(params, 100.0, 1e-6) == 0.001
    with pytest.raises(ValueError, match="mission"):
        energy_share_for(BudgetParams(), 45.0, 10.0)
    with pytest.raises(ValueError, match="battery_percent"):
        energy_share_for(params, 0.0, 10.0)
    trace = ScenarioTrace.from_yaml("budgets: {mission_duration_s: 600}\n"
                                    "energy_budget_at_start: 1.2\nsteps:\n  - {t: 0}\n")
    assert trace.energy_budget_at_start == 1.2
    assert ScenarioTrace.from_yaml("steps:\n  - {t: 0}\n").energy_budget_at_start is None
