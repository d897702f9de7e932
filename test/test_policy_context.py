"""core.policy.context: a context snapshot and the battery readings it overlays."""

from __future__ import annotations

import pytest

from adaspring_ros.core.policy.context import BatteryReading, Context, battery_from_state

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

