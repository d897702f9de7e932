"""RateCap: the frame-rate cap of the perception node (and the debug view's rate), as plain
logic on a simulated clock."""

from __future__ import annotations

from itertools import pairwise

import pytest

from adaspring_ros.core.serving.rate_cap import RateCap


def admitted(cap: RateCap, camera_hz: float, seconds: float, start: float = 0.0) -> list[float]:
    times = [start + i / camera_hz for i in range(round(seconds * camera_hz))]
    return [t for t in times if cap.admit(t)]


def test_zero_admits_every_frame():
    assert len(admitted(RateCap(0.0), 30.0, 2.0)) == 60


@pytest.mark.parametrize("cap_hz", [1.0, 4.0, 5.0, 7.0, 29.0])
def test_a_faster_camera_is_held_at_the_cap_on_average(cap_hz):
    # 30 Hz does not divide 4 or 7 Hz: the schedule keeps the long-run rate at the cap anyway.
    times = admitted(RateCap(cap_hz), 30.0, 20.0)
    assert len(times) == pytest.approx(20.0 * cap_hz, abs=1)
    assert min(b - a for a, b in pairwise(times)) > 0.5 / cap_hz


def test_a_slower_camera_loses_no_frame():
    assert len(admitted(RateCap(10.0), 5.0, 4.0)) == 20


def test_a_pause_restarts_the_schedule_without_a_burst():
    cap = RateCap(5.0)
    admitted(cap, 30.0, 1.0)
    after = admitted(cap, 30.0, 1.0, start=10.0)  # 9 s without frames
    assert after[0] == 10.0
    assert min(b - a for a, b in pairwise(after)) >= 0.2 - 1e-9


def test_a_new_cap_applies_at_once_and_bad_values_are_refused():
    cap = RateCap(1.0)
    assert cap.admit(0.0) and not cap.admit(0.1)
    cap.max_rate_hz = 0.0
    assert cap.admit(0.1) and cap.admit(0.11)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_rate_hz"):
            RateCap(bad)
