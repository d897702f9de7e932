"""Context snapshot, its sources (BatteryState fields, psutil, scenario traces), budgets and λ."""

from __future__ import annotations

import math
from collections import namedtuple
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaspring_ros.core.policy.budgets import BudgetParams, compute_budgets, energy_share_for
from adaspring_ros.core.policy.context import BatteryReading, Context, battery_from_state
from adaspring_ros.core.policy.lambdas import LambdaParams, Lambdas, adapt_lambdas
from adaspring_ros.core.policy.psutil_source import PsutilSource
from adaspring_ros.core.policy.scenario import ScenarioError, ScenarioTrace, shipped_scenarios

NAN = float("nan")


# -- Context --------------------------------------------------------------------------------
def test_context_turns_nan_into_none_and_validates():
    ctx = Context(battery_percent=NAN, cpu_frequency_mhz=NAN, cpu_temperature_c=NAN,
                  memory_available_mb=NAN, battery_seconds_left=NAN)
    assert ctx.battery_percent is None and ctx.cpu_frequency_mhz is None
    assert ctx.cpu_temperature_c is None and ctx.memory_available_mb is None
    with pytest.raises(ValueError, match="battery_percent"):
        Context(battery_percent=120)
    with pytest.raises(ValueError, match="cpu_load_other_percent"):
        Context(cpu_load_other_percent=-1)
    with pytest.raises(ValueError, match="latency_budget_ms"):
        Context(latency_budget_ms=0)
    with pytest.raises(ValueError, match="cpu_load_percent"):
        Context(cpu_load_percent=NAN)


def test_context_with_battery_overlays_the_battery_fields():
    ctx = Context(cpu_load_percent=30, source="psutil")
    out = ctx.with_battery(BatteryReading(percent=42.0, charging=True, seconds_left=None),
                           source="psutil+battery_state")
    assert (out.battery_percent, out.charging, out.cpu_load_percent) == (42.0, True, 30.0)
    assert out.source == "psutil+battery_state"
    assert "42%" in out.describe()


# -- BatteryState ---------------------------------------------------------------------------
def test_battery_from_state_uses_the_ros_fraction_and_status():
    reading = battery_from_state(0.37, 2, charge=3.7, current=-1.85)
    assert reading.percent == pytest.approx(37.0)
    assert reading.charging is False
    assert reading.seconds_left == pytest.approx(3.7 / 1.85 * 3600)
    assert battery_from_state(0.9, 1).charging is True   # CHARGING
    assert battery_from_state(1.0, 4).charging is True   # FULL: on external power
    assert battery_from_state(0.5, 3).charging is False  # NOT_CHARGING


def test_battery_from_state_unknowns_stay_unknown():
    reading = battery_from_state(NAN, 0)
    assert reading.percent is None and reading.seconds_left is None
    assert battery_from_state(NAN, 2, charge=1.0, capacity=4.0).percent == pytest.approx(25.0)
    # charging: no time-to-empty even with a current reading
    assert battery_from_state(0.5, 1, charge=2.0, current=1.0).seconds_left is None
    assert battery_from_state(0.5, 2, present=False).percent is None


def test_battery_from_state_rejects_bad_values():
    with pytest.raises(ValueError, match="fraction"):
        battery_from_state(55.0, 2)  # a percent where ROS sends a fraction
    with pytest.raises(ValueError, match="power_supply_status"):
        battery_from_state(0.5, 9)


# -- psutil ---------------------------------------------------------------------------------
def test_psutil_source_samples_this_machine():
    source = PsutilSource()
    ctx = source.sample(latency_budget_ms=50.0, timestamp=12.5)
    assert ctx.source == "psutil" and ctx.timestamp == 12.5
    assert 0.0 <= ctx.cpu_load_other_percent <= ctx.cpu_load_percent <= 100.0
    assert ctx.memory_available_mb is not None and ctx.memory_available_mb > 0
    assert ctx.latency_budget_ms == 50.0


def test_psutil_source_never_invents_missing_sensors(monkeypatch):
    monkeypatch.setattr(psutil, "sensors_battery", lambda: None, raising=False)
    monkeypatch.setattr(psutil, "cpu_freq", lambda: None)
    monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)
    ctx = PsutilSource().sample(latency_budget_ms=20.0)
    assert ctx.battery_percent is None and ctx.charging is False
    assert ctx.cpu_frequency_mhz is None and ctx.cpu_temperature_c is None


def test_psutil_source_reads_battery_and_sensors_when_present(monkeypatch):
    Battery = namedtuple("Battery", "percent secsleft power_plugged")
    Freq = namedtuple("Freq", "current min max")
    Temp = namedtuple("Temp", "label current high critical")
    monkeypatch.setattr(psutil, "sensors_battery",
                        lambda: Battery(64.0, psutil.POWER_TIME_UNKNOWN, False), raising=False)
    monkeypatch.setattr(psutil, "cpu_freq", lambda: Freq(1800.0, 0.0, 0.0))
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {
        "coretemp": [Temp("a", 51.0, None, None), Temp("b", 63.0, None, None)]}, raising=False)
    ctx = PsutilSource().sample(latency_budget_ms=20.0)
    assert ctx.battery_percent == 64.0 and ctx.battery_seconds_left is None
    assert ctx.cpu_frequency_mhz == 1800.0 and ctx.cpu_temperature_c == 63.0
    # a BatteryState reading overrides the OS battery
    ctx = PsutilSource().sample(20.0, battery=battery_from_state(0.1, 1))
    assert ctx.battery_percent == pytest.approx(10.0) and ctx.charging
    assert ctx.source == "psutil+battery_state"


# -- scenarios ------------------------------------------------------------------------------
def test_the_shipped_scenarios_all_load():
    paths = shipped_scenarios()
    names = {p.stem for p in paths}
    assert {"battery_drain", "cpu_contention", "latency_tightening", "memory_pressure",
            "mixed"} <= names
    for path in paths:
        trace = ScenarioTrace.load(path)
        trace.budget_params()
        for t in range(0, int(trace.duration_s) + 5, 5):
            assert trace.context_at(t).source == f"scenario:{trace.name}"
    mixed = ScenarioTrace.load(next(p for p in paths if p.stem == "mixed"))
    assert 50 <= mixed.duration_s <= 70
    assert any(s.cpu_hog for s in mixed.steps)
    assert len({s.latency_budget_ms for s in mixed.steps}) > 1


GOOD = """\
name: t
steps:
  - {t: 0, battery_percent: 80, cpu_load_other_percent: 5, latency_budget_ms: 40}
  - {t: 10, battery_percent: 60, cpu_load_other_percent: 90, cpu_hog: 1}
  - {t: 20, battery_percent: 60, latency_budget_ms: 10, cpu_hog: 0}
"""


def test_scenario_holds_values_and_interpolates_the_battery():
    trace = ScenarioTrace.from_yaml(GOOD)
    assert trace.duration_s == 20
    ctx = trace.context_at(5)
    assert ctx.battery_percent == pytest.approx(70.0)
    assert ctx.cpu_load_other_percent == 5 and ctx.latency_budget_ms == 40
    assert trace.step_at(12).cpu_hog == 1 and trace.context_at(12).latency_budget_ms == 40
    assert trace.context_at(25).latency_budget_ms == 10  # the last step holds past the end
    assert trace.context_at(5, timestamp=1000.0).timestamp == 1000.0
    with pytest.raises(ValueError):
        trace.context_at(-1)


@pytest.mark.parametrize("text, expected", [
    ("steps:\n  - {t: 0}\n  - {t: 5, cpu_load_other_percent: .nan}\n",
     r"step 1 \(line 3\): field 'cpu_load_other_percent' is NaN"),
    ("steps:\n  - {t: 0}\n  - {t: 5, memory_available_mb: -3}\n",
     r"step 1 \(line 3\): field 'memory_available_mb' = -3 is out of range"),
    ("steps:\n  - t: 0\n  - t: 5\n    battery_percent: 130\n",
     r"step 1 \(line 4\): field 'battery_percent' = 130 is out of range"),
    ("steps:\n  - {t: 0, cpu_load: 5}\n", r"step 0 \(line 2\): unknown field\(s\) \['cpu_load'\]"),
    ("steps:\n  - {t: 0}\n  - {t: 10}\n  - {t: 10}\n",
     r"step 2 \(line 4\): field 't' = 10 is not after"),
    ("steps:\n  - {t: 3}\n", r"step 0 \(line 2\): field 't': the first step must be at t: 0"),
    ("steps:\n  - {t: 0, charging: 1}\n", r"step 0 \(line 2\): field 'charging' must be true"),
    ("steps:\n  - {t: 0, latency_budget_ms: fast}\n",
     r"step 0 \(line 2\): field 'latency_budget_ms' must be a number"),
    ("steps:\n  - {battery_percent: 5}\n", r"step 0 \(line 2\): field 't' .* missing"),
    ("stepz:\n  - {t: 0}\n", r"line 1: unknown key\(s\) \['stepz'\]"),
    ("steps: []\n", r"'steps' must be a non-empty list"),
    ("budgets: {fps: -1}\nsteps:\n  - {t: 0}\n", r"line 1: budgets: fps must be"),
    ("steps: [\n", r"not valid YAML"),
    ("energy_budget_at_start: 0\nbudgets: {mission_duration_s: 60}\nsteps:\n  - {t: 0}\n",
     r"line 1: field 'energy_budget_at_start' = 0 is out of range"),
    ("energy_budget_at_start: 1.2\nsteps:\n  - {t: 0}\n",
     r"line 1: energy_budget_at_start needs budgets.mission_duration_s"),
])
def test_bad_scenarios_fail_naming_file_step_line_and_field(tmp_path: Path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=expected) as info:
        ScenarioTrace.load(path)
    assert str(path) in str(info.value)


def test_missing_scenario_file_names_the_file(tmp_path: Path):
    with pytest.raises(ScenarioError, match="nope.yaml"):
        ScenarioTrace.load(tmp_path / "nope.yaml")


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


# -- λ --------------------------------------------------------------------------------------
def test_lambda_rules():
    p = LambdaParams(lambda2_min=0.1, lambda2_max=0.5, battery_high_percent=80,
                     battery_low_percent=20, hot_temperature_c=85, lambda2_hot=0.4)
    assert adapt_lambdas(Context(battery_percent=95), p).lambda2 == pytest.approx(0.1)
    assert adapt_lambdas(Context(battery_percent=10), p).lambda2 == pytest.approx(0.5)
    assert adapt_lambdas(Context(battery_percent=50), p).lambda2 == pytest.approx(0.3)
    # external power: energy is free by default, so accuracy alone decides
    assert adapt_lambdas(Context(battery_percent=10, charging=True), p).lambda2 == 0.0
    assert adapt_lambdas(Context(), p).rule == "no battery"
    assert adapt_lambdas(Context(), p).lambda2 == 0.0
    assert adapt_lambdas(Context(charging=True),
                         LambdaParams(lambda2_external=0.05)).lambda2 == 0.05
    hot = adapt_lambdas(Context(battery_percent=95, cpu_temperature_c=90), p)
    assert hot.lambda2 == pytest.approx(0.4) and "hot" in hot.rule
    lam = adapt_lambdas(Context(battery_percent=50), p)
    assert lam.lambda1 + lam.lambda2 == pytest.approx(1.0)


@given(st.floats(0, 100), st.floats(0, 100))
def test_lambda2_never_falls_as_the_battery_drains(a, b):
    high, low = max(a, b), min(a, b)
    l_high = adapt_lambdas(Context(battery_percent=high)).lambda2
    l_low = adapt_lambdas(Context(battery_percent=low)).lambda2
    p = LambdaParams()
    assert p.lambda2_min <= l_high <= l_low <= p.lambda2_max


@pytest.mark.parametrize("kwargs, field", [
    ({"lambda2_min": 0.6, "lambda2_max": 0.5}, "lambda2_min"),
    ({"lambda2_max": 1.2}, "lambda2_max"),
    ({"battery_low_percent": 90}, "battery_low_percent"),
    ({"hot_temperature_c": NAN}, "hot_temperature_c"),
])
def test_lambda_params_are_validated(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LambdaParams(**kwargs)
    with pytest.raises(ValueError, match="both be 0"):
        Lambdas(0.0, 0.0)
