"""The one percentile and the perception node's frame counters (core/serving/frame_stats.py)."""

from __future__ import annotations

import math

import pytest

from adaspring_ros.core.serving.frame_stats import FrameStats, percentile


def test_percentile_is_nearest_rank_and_never_interpolates():
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 95) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0  # even length: the lower middle value
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    ten = [float(v) for v in range(1, 11)]
    assert percentile(ten, 95) == 10.0  # a window of 10 frames: its p95 is its maximum
    assert percentile(ten, 90) == 9.0 and percentile(ten, 0) == 1.0
    assert percentile(list(range(1, 101)), 95) == 95


@pytest.mark.parametrize("n", [2, 3, 10, 11, 50])
def test_percentile_is_a_sample_with_at_least_q_percent_at_or_below(n):
    values = [float(v) for v in range(n)]
    for q in (5, 50, 95, 100):
        p = percentile(values, q)
        assert p in values
        assert sum(v <= p for v in values) >= q / 100 * n
        assert sum(v < p for v in values) < q / 100 * n or q == 0


def info(gid: bytes, seq: int) -> dict:
    return {"publication_sequence_number": seq, "publisher_gid": {"data": gid}}


def test_dropped_frames_are_the_gaps_in_each_publishers_sequence():
    stats = FrameStats()
    for seq in (1, 2, 5, 6):  # 3 and 4 never arrived
        stats.received(info(b"a", seq))
    for seq in (10, 12):  # another publisher: its own numbering, 11 lost
        stats.received(info(b"b", seq))
    stats.received(None)  # a middleware that does not number publications
    stats.received(info(b"a", 4))  # late and out of order: not a new gap
    counts, _window, _seconds = stats.take_window()
    assert counts["frames_received"] == 8 and counts["frames_dropped"] == 3


def test_a_window_hands_over_its_samples_and_starts_afresh():
    stats = FrameStats()
    stats.sample(model_ms=1.0, e2e_ms=2.0)
    stats.sample(model_ms=3.0, e2e_ms=4.0)
    stats.add("frames_processed", 2)
    counts, window, seconds = stats.take_window()
    assert window["model_ms"] == [1.0, 3.0] and counts["frames_processed"] == 2 and seconds >= 0
    counts, window, _ = stats.take_window()
    assert not window["model_ms"] and counts["frames_processed"] == 2  # counters run on


def test_window_metrics_leave_unusable_stamps_out_of_the_end_to_end_latency():
    from adaspring_ros.core.serving.frame_stats import window_metrics

    window = {"model_ms": [1.0, 2.0, 3.0, 4.0], "e2e_ms": [5.0, math.nan, 7.0, 8.0],
              "non_model_ms": [4.0, math.nan, 4.0, 4.0]}
    m = window_metrics({"last_swap_us": 1500}, window, seconds=2.0, joules=0.004)
    assert m["model_latency_ms_p50"] == 2.0 and m["model_latency_ms_p95"] == 4.0
    assert m["end_to_end_latency_ms_p50"] == 7.0 and m["non_model_latency_ms_p95"] == 4.0
    assert m["fps"] == 2.0 and m["energy_per_frame_mj"] == pytest.approx(1.0)
    assert m["last_swap_ms"] == 1.5
    empty = window_metrics({}, {"model_ms": [], "e2e_ms": [], "non_model_ms": []}, 0.0, 0.0)
    assert all(math.isnan(v) for v in empty.values())


def test_timing_log_writes_a_csv_and_survives_being_closed(tmp_path):
    from adaspring_ros.core.serving.frame_stats import TimingLog

    TimingLog(None).write(1, 2.0, 1.0, "c", 3, 0.5)  # off: a no-op
    log = TimingLog(str(tmp_path / "t.csv"))
    log.write(10, 3.0, 1.0, "r28", 11, 0.25)
    log.close()
    log.write(12, 3.0, 1.0, "r28", 13, 0.25)  # after close: dropped, no error
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("stamp_ns,") and lines[1] == "10,3.0000,1.0000,2.0000,r28,11,0.2500"
    assert len(lines) == 2
