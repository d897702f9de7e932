"""core.policy.scenario: scenario traces, shipped and hostile."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaspring_ros.core.policy.scenario import ScenarioError, ScenarioTrace, shipped_scenarios

GOOD = """\
name: t
steps:
  - {t: 0, battery_percent: 80, cpu_load_other_percent: 5, latency_budget_ms: 40}
  - {t: 10, battery_percent: 60, cpu_load_other_percent: 90, cpu_hog: 1}
  - {t: 20, battery_percent: 60, latency_budget_ms: 10, cpu_hog: 0}
"""



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

