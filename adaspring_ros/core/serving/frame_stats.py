"""Frame statistics: the percentile every latency figure uses, and the perception node's counters.

One percentile for the whole package, because the policy compares a measured p95 (the perception
node's window) with a profiled one (the profile table): both must mean the same thing.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

__all__ = ["percentile", "FrameStats", "window_metrics", "TimingLog"]

# rmw's "this middleware does not number publications" value.
_SEQ_UNSUPPORTED = 2**64 - 1


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile: the smallest sample with at least q % of the samples
    at or below it (NaN for no samples).

    Always a measured value, never an interpolation. For an even number of samples the median
    (q = 50) is the lower of the two middle values; the p95 of 10 to 20 samples (a one-second
    window at 10-20 fps) is the maximum.
    """
    if not len(values):
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


class FrameStats:
    """Counters since start and per-window latency samples (locked, so the metrics timer may
    run on another thread than the frames in a multi-threaded host).

    ``frames_dropped`` is counted exactly from the gaps in each publisher's DDS publication
    sequence number (rclpy's MessageInfo): frames overwritten in the keep-last-1 queue while an
    earlier frame was processed, or lost on the wire.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.last_seq: dict[bytes, int] = {}
        self.window: dict[str, list[float]] = defaultdict(list)
        self.window_start = time.monotonic()

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def received(self, info: Any) -> None:
        """Count a frame and the publications of its publisher that never arrived (``info``:
        the MessageInfo dict of the frame, or None)."""
        gid = seq = None
        if isinstance(info, dict):
            seq = info.get("publication_sequence_number")
            gid = bytes((info.get("publisher_gid") or {}).get("data", b""))
        with self.lock:
            self.counts["frames_received"] += 1
            if not isinstance(seq, int) or seq in (0, _SEQ_UNSUPPORTED):
                return
            last = self.last_seq.get(gid)
            if last is not None and seq > last + 1:
                self.counts["frames_dropped"] += seq - last - 1
            self.last_seq[gid] = max(seq, last or 0)

    def sample(self, **values: float) -> None:
        with self.lock:
            for name, value in values.items():
                self.window[name].append(value)

    def take_window(self) -> tuple[dict[str, int], dict[str, list[float]], float]:
        """Counters, the window's samples and its length in s; starts a new window."""
        with self.lock:
            now = time.monotonic()
            window, self.window = self.window, defaultdict(list)
            seconds, self.window_start = now - self.window_start, now
            return dict(self.counts), window, seconds


def window_metrics(counts: dict[str, int], window: dict[str, list[float]], seconds: float,
                   joules: float) -> dict[str, float]:
    """The PerformanceMetrics numbers of one window (``take_window``'s output and the energy
    measured over it): latency percentiles (non-finite samples, e.g. frames with a stamp that
    cannot be right, left out of the end-to-end ones), fps, energy per frame and the last swap.

    ``non_model``: image stamp -> result published minus the forward pass; the policy subtracts
    its median from the frame budget to budget the forward pass.
    """
    processed = len(window["model_ms"])
    e2e = [v for v in window["e2e_ms"] if math.isfinite(v)]
    non_model = [v for v in window["non_model_ms"] if math.isfinite(v)]
    return {
        "model_latency_ms_p50": percentile(window["model_ms"], 50),
        "model_latency_ms_p95": percentile(window["model_ms"], 95),
        "end_to_end_latency_ms_p50": percentile(e2e, 50),
        "end_to_end_latency_ms_p95": percentile(e2e, 95),
        "non_model_latency_ms_p50": percentile(non_model, 50),
        "non_model_latency_ms_p95": percentile(non_model, 95),
        "fps": processed / seconds if seconds > 0 else math.nan,
        "energy_per_frame_mj": joules * 1e3 / processed if processed else math.nan,
        "last_swap_ms": counts["last_swap_us"] / 1e3 if "last_swap_us" in counts else math.nan,
    }


class TimingLog:
    """A CSV of per-frame timings for profiling (None path: a no-op). Writing never fails a
    frame: a log closed at shutdown or a full disk only loses lines."""

    HEADER = ("stamp_ns,callback_ms,forward_ms,overhead_ms,config_id,received_ns,"
              "preprocess_ms\n")

    def __init__(self, path: str | None) -> None:
        self._file = open(path, "w", buffering=1 << 16) if path else None
        if self._file:
            self._file.write(self.HEADER)

    def write(self, stamp_ns: int, callback_ms: float, forward_ms: float, config_id: str,
              received_ns: int, preprocess_ms: float) -> None:
        if self._file is None:
            return
        try:
            self._file.write(f"{stamp_ns},{callback_ms:.4f},{forward_ms:.4f},"
                             f"{callback_ms - forward_ms:.4f},{config_id},{received_ns},"
                             f"{preprocess_ms:.4f}\n")
        except (ValueError, OSError):  # closed at shutdown, or the disk is full
            pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
