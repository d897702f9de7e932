"""core.policy.psutil_source: this machine's context, never inventing sensors."""

from __future__ import annotations

from collections import namedtuple

import psutil
import pytest

from adaspring_ros.core.policy.context import battery_from_state
from adaspring_ros.core.policy.psutil_source import PsutilSource


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

