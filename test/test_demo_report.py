"""The demo's report without ROS: per-phase statistics, the verdict, the swap labels."""

from __future__ import annotations

import math

import pytest


def test_phase_stats_counts_dropped_frames_as_missed_deadlines():
    from adaspring_ros.core.policy.scenario import ScenarioTrace
    from adaspring_ros.demo.report import Frame, RunRecord, phase_stats, scenario_phases

    trace = ScenarioTrace.from_yaml(
        "duration_s: 10\nsteps:\n  - {t: 0, latency_budget_ms: 20}\n"
        "  - {t: 4, latency_budget_ms: 5, cpu_hog: 1}\n")
    phases = scenario_phases(trace)
    assert [(p.start, p.end, p.budget_ms, p.hog) for p in phases] == [(0, 4, 20, 0),
                                                                     (4, 10, 5, 1)]
    record = RunRecord("x", True, t0=1000.0, time_scale=2.0)  # scenario runs twice as fast
    # Frames every 0.5 wall s (1 scenario s); seq 3 and 6 never came back; 3 ms then 8 ms.
    for seq in (0, 1, 2, 4, 5, 7, 8, 9):
        stamp = 1000.0 + seq * 0.5
        latency = 0.003 if seq < 4 else 0.008
        record.frames.append(Frame(seq, seq % 2, 0, "c", stamp, stamp + latency, 1.0))
    early = phase_stats(record, 0, 4, 20)  # seq 0..3: 3 received in time, seq 3 dropped
    assert (early["frames"], early["dropped"]) == (3, 1)
    assert early["deadline_hit_percent"] == 75.0 and early["accuracy_percent"] == 100 * 2 / 3
    assert early["accuracy_ci95"] == pytest.approx(196 * (2 / 9 / 3) ** 0.5)
    assert math.isnan(early["table_accuracy_percent"])              # no table given
    # the variants served, frame-weighted, from the table's accuracies
    record.frames[1].config_id = "d"
    served = phase_stats(record, 0, 4, 20, {"c": 94.0, "d": 91.0})
    assert served["table_accuracy_percent"] == pytest.approx((94.0 + 91.0 + 94.0) / 3)
    assert math.isnan(phase_stats(record, 0, 4, 20, {"c": 94.0})["table_accuracy_percent"])
    late = phase_stats(record, 4, 10, 5)  # seq 4..9: 5 received (8 ms > 5 ms), seq 6 dropped
    assert (late["frames"], late["dropped"]) == (5, 1)
    assert late["deadline_hit_percent"] == 0.0
    assert late["latency_ms_p50"] == pytest.approx(8.0)


def test_summary_verdict_and_swap_labels():
    from adaspring_ros.demo.report import swap_label, verdict

    def whole(run, hits, energy, acc):
        return {"phase": "whole scenario", "run": run, "deadline_hit_percent": hits,
                "energy_mj_per_frame": energy, "accuracy_percent": acc}

    good = verdict([whole("adaptive", 80.0, 20.0, 93.5), whole("static full", 60.0, 30.0, 95.0)])
    assert "80.0 vs 60.0 %" in good and "at least as good" in good
    bad = verdict([whole("adaptive", 80.0, 20.0, 92.5), whole("static full", 60.0, 30.0, 95.0)])
    assert "NOT better" in bad and "accuracy" in bad and "energy" not in bad.split("NOT")[1]
    slow = verdict([whole("adaptive", 50.0, 31.0, 95.0), whole("static full", 60.0, 30.0, 95.0)])
    assert "deadline hits, energy" in slow
    # live accuracies 3.5 points apart by chance; the variants served are 0.2 apart: judged
    # on those, and all four figures shown
    noisy = verdict([{**whole("adaptive", 80.0, 20.0, 92.5),
                      "accuracy_ci95": 1.9, "table_accuracy_percent": 93.96},
                     {**whole("static full", 60.0, 30.0, 96.0), "accuracy_ci95": 2.2,
                      "table_accuracy_percent": 94.16}])
    assert "at least as good" in noisy and "92.5 vs 96.0 % (±1.9 / ±2.2)" in noisy
    assert "variants served (test split) 93.96 vs 94.16 %" in noisy
    far = verdict([{**whole("adaptive", 80.0, 20.0, 95.0), "table_accuracy_percent": 91.0},
                   {**whole("static full", 60.0, 30.0, 95.0), "table_accuracy_percent": 94.16}])
    assert "NOT better: accuracy" in far
    # one frame missed of 600 against none of 300 is below what the shorter run resolves;
    # two frames missed of 300-frame runs is not
    level = verdict([{**whole("adaptive", 99.83, 20.0, 95.0), "frames": 600},
                     {**whole("static full", 100.0, 30.0, 95.0), "frames": 300}])
    assert "at least as good" in level
    worse = verdict([{**whole("adaptive", 99.33, 20.0, 95.0), "frames": 300},
                     {**whole("static full", 100.0, 30.0, 95.0), "frames": 300}])
    assert "NOT better: deadline hits" in worse
    event = {"config_id": "r24-w50d2ck100f-w50d2ck100f-w50d2ck100f", "reason":
             "violation: r28-x violates energy 37 mJ > 27 mJ (contention 1.2x): swap to ...",
             "predicted_accuracy_percent": 91.67, "predicted_energy_mj": 21.1}
    assert swap_label(event) == "r24-w50d2… 91.7% 21.1 mJ (budget)"
    for reason, why in (("gain: objective gain +1.34 >= 0.15 (battery 29%)", "gain"),
                        ("initial: best: the highest J of 4 candidates", "initial"),
                        ("stale: context is 4.0 s old (> 3 s)", "stale"),
                        ("floor: r16-x is below the accuracy floor", "floor"),
                        ("re-applied after a perception restart; chosen because: gain: ...",
                         "re-applied")):
        assert swap_label({**event, "reason": reason}).endswith(f"({why})"), reason


def test_the_energy_budget_is_calibrated_on_the_full_models_frames_and_stated():
    from adaspring_ros.core.model.config import CompressionConfig
    from adaspring_ros.core.policy.scenario import ScenarioTrace
    from adaspring_ros.demo.report import RunRecord, describe_calibration, energy_budget_line
    from adaspring_ros.demo.run import CALIBRATION_WINDOWS, calibrate_energy

    trace = ScenarioTrace.from_yaml(
        "budgets: {fps: 10, battery_capacity_wh: 20, mission_duration_s: 1800}\n"
        "energy_budget_at_start: 1.2\nduration_s: 60\n"
        "steps:\n  - {t: 0, battery_percent: 45}\n  - {t: 60, battery_percent: 15}\n")
    record = RunRecord("adaptive", True, t0=1000.0, time_scale=1.0)
    full = CompressionConfig.full().id
    arrivals = iter([(full, 40.0), ("other", 1.0), (full, 18.0), (full, 20.0),
                     (full, math.nan), (full, 19.0), (full, 30.0), (full, 17.0), (full, 50.0)])

    def wait(done, timeout, what):  # metrics come in one by one until the windows are there
        while not done():
            config_id, mj = next(arrivals)
            record.metrics.append({"config_id": config_id, "energy_per_frame_mj": mj})

    calibration = calibrate_energy(record, trace, wait)
    assert len(record.metrics) == CALIBRATION_WINDOWS + 3  # the first (start-up) left out
    assert calibration["frame_energy_mj"] == 19.0 and calibration["budget_mj"] == \
        pytest.approx(22.8)
    assert "1.2 x 19.00 mJ" in describe_calibration(calibration)
    record.calibration = calibration
    record.contexts = [{"time": 1000.0 + t, "battery_percent": b}
                       for t, b in ((-1, 45.0), (0, 45.0), (30, 30.0), (60, 15.0))]
    line = energy_budget_line(record, trace)
    assert [t for t, _ in line] == [0.0, 30.0, 60.0]   # from t = 0 on
    assert line[0][1] == pytest.approx(22.8)
    assert line[1][1] == pytest.approx(22.8 * 30 / 45 * 1800 / 1770)  # battery and mission
    assert energy_budget_line(RunRecord("static", False, 1000.0, 1.0), trace) == []
    no_budget = ScenarioTrace.from_yaml("steps:\n  - {t: 0, battery_percent: 45}\n")
    assert calibrate_energy(record, no_budget, wait) is None
