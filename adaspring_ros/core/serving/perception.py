"""The perception process without ROS: load, classify and count frames, swap, report.

:class:`Perception` is what the perception node holds while it is configured: the backbone's
weights (read without torch, ``checkpoint_reader``), the served variant (``server``), the
counters and latency windows (``frame_stats``), the energy meter, the rate caps and the timing
log. The node (nodes/perception_node.py) only wires it to a subscription, a service, a timer and
publishers; what it publishes is built from the values returned here.

The checkpoint decides what is served: its model card how a frame is preprocessed and what the
classes are called, its search space which variants exist (``initial_config`` and every
Reconfigure request are read in it). A profile table measured for another card or space is
refused at start (:func:`require_table_fits`).

A frame goes :meth:`Perception.receive` (counted; held back by ``max_rate_hz``) ->
:meth:`Perception.classify` (decoded, preprocessed and classified by ONE variant: the pair
taken from ``server.active`` when it starts) -> the node publishes the result inside
:meth:`Perception.publishing` (which counts a failure and times the publication) ->
:meth:`Perception.finish` (latency samples, timing log). Bad input raises :class:`RejectedFrame`
(counted in frames_rejected); any other failure is counted in frame_errors and raised on.

What the counters mean:
  frames_received   images that reached the callback;
  frames_processed  images that produced an InferenceResult;
  frames_rejected   images refused as bad input (encoding, size, step, empty, huge; for
                    compressed frames also a wrong format, a truncated or undecodable file,
                    a decompression bomb); the last reason is on /diagnostics;
  frame_errors      images that failed for any other reason (on /diagnostics; e.g. MemoryError);
  frames_skipped    images left unclassified to hold ``max_rate_hz``;
                    frames_received = frames_processed + frames_rejected + frame_errors
                                      + frames_skipped;
  stamps_rejected   classified images whose stamp cannot be right (negative, or further than
                    ``stamp_tolerance_s`` from this node's clock): their result is published,
                    stamp copied as is, but they are left out of the end-to-end latency that the
                    evolution node's deadline feedback reads (on /diagnostics);
  callback_errors   exceptions caught in any callback of this node (on /diagnostics): none may
                    end the node;
  frames_dropped    frames a publisher sent that never reached the callback: the gaps in each
                    publisher's DDS publication sequence number (see FrameStats).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from adaspring_ros.core import energy, paths
from adaspring_ros.core.data.datasets import DataError
from adaspring_ros.core.data.transforms import preprocess_frame
from adaspring_ros.core.model import compact
from adaspring_ros.core.model.card import ModelCard
from adaspring_ros.core.model.checkpoint_reader import load_weight_bank, sha256_of
from adaspring_ros.core.model.config import CompressionConfig, ConfigError, SearchSpace
from adaspring_ros.core.model.engine import EngineInfo, classify_logits, make_engine
from adaspring_ros.core.model.profile_table import ProfileError, ProfileTable, load_profile_table
from adaspring_ros.core.model.weights import WeightBank
from adaspring_ros.core.serving.annotate import annotate, decision_lines
from adaspring_ros.core.serving.frame_gaps import FrameGaps
from adaspring_ros.core.serving.frame_stats import (
    FrameStats,
    TimingLog,
    percentile,
    window_metrics,
)
from adaspring_ros.core.serving.image_codec import ImageError
from adaspring_ros.core.serving.rate_cap import RateCap
from adaspring_ros.core.serving.server import (
    VariantServer,
    freeze_heap,
    parse_config,
    release_free_memory,
    reuse_frame_memory,
)

__all__ = ["RejectedFrame", "ModelInfo", "Frame", "Classification", "SwapOutcome", "Health",
           "invalid_parameters", "require_table_fits", "Perception"]

# The counters a /diagnostics status carries, besides the ones computed for it.
_DIAGNOSTIC_COUNTS = ("frame_errors", "stamps_rejected", "frames_received", "frames_processed",
                      "frames_dropped", "frames_rejected", "frames_skipped",
                      "reconfigure_rejected", "swaps")


class RejectedFrame(ValueError):
    """A frame refused as bad input (encoding, size, step, empty, huge); already counted."""


@dataclass(frozen=True)
class ModelInfo:
    """What decodes this configuration's results: classes, weights, table, engine."""

    class_names: tuple[str, ...]
    backbone_path: str
    backbone_sha256: str
    table_path: str
    table_sha256: str
    engine: EngineInfo


@dataclass
class Frame:
    """A frame admitted to the classifier: when the callback started, when the result went out
    (perf_counter seconds) and when it arrived (wall clock ns, comparable with its stamp)."""

    start: float
    received_ns: int
    published: float = math.nan


@dataclass(frozen=True)
class Classification:
    """One frame's decision and what it cost; ``pixels`` are the decoded frame (debug view)."""

    config: CompressionConfig
    class_id: int
    label: str
    score: float
    forward_ms: float
    preprocess_ms: float
    pixels: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class SwapOutcome:
    """The reply to a Reconfigure request; ``level`` is the log level it deserves."""

    success: bool
    swapped: bool
    swap_ms: float
    message: str
    active: CompressionConfig
    level: str


@dataclass(frozen=True)
class Health:
    """One /diagnostics status: warn or OK, a line, and the values behind it."""

    warn: bool
    message: str
    values: dict[str, object]


def invalid_parameters(values: Mapping[str, Any]) -> str:
    """Why these parameter values are unusable ('' if they are not): a device_power_profile
    that cannot be loaded. (initial_config names a variant of the backbone's space, so it is
    checked when the backbone is loaded: :class:`Perception`.)"""
    if "device_power_profile" in values:
        try:
            energy.load_device(values["device_power_profile"])
        except ValueError as exc:
            return f"device_power_profile: {exc}"
    return ""


def require_table_fits(table: ProfileTable, bank: WeightBank, where: str) -> None:
    """ProfileError, starting with ``where`` (the table's path), unless ``table`` was measured
    for a backbone with ``bank``'s model card and search space: its accuracies and variants
    hold for that input contract, label space and space only."""
    try:
        table.require_card(bank.card)
        if table.space != bank.space:
            raise ProfileError(f"the profile table's space {table.space.to_dict()} is not "
                               f"the backbone's {bank.space.to_dict()}; profile this backbone "
                               f"(adaspring profile)")
    except ProfileError as exc:
        raise ProfileError(f"{where}: {exc}") from None


def _profile_table(engine: str, path: str, bank: WeightBank) -> tuple[ProfileTable | None, str]:
    """The table whose int8 activation ranges the engine serves with, and its path. The torch
    reference needs none; another engine reads ``path`` or its shipped table, and a missing or
    unreadable one, or one measured for another backbone (:func:`require_table_fits`), is a
    ProfileError naming it (nothing serves on ranges nobody measured)."""
    if engine == "torch":
        return None, path
    table = load_profile_table(path or None, engine)
    path = path or str(paths.default_profile_table(engine))
    require_table_fits(table, bank, path)
    return table, path


class Perception:
    """A configured perception process; ``params`` are the node's parameter values by name.

    Raises ValueError/OSError (bad weights, table, config or device) or EngineError.
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        path = params["backbone_path"] or str(paths.default_backbone())
        self.bank = load_weight_bank(path)  # verifies the sha256; runs no code from the file
        self.card: ModelCard = self.bank.card  # a loaded checkpoint always has one
        engine = make_engine(params["engine"], params["num_threads"])
        table, table_path = _profile_table(engine.name, params["profile_table"], self.bank)
        try:
            initial = parse_config(params["initial_config"], self.bank.space)
        except ConfigError as exc:
            raise ConfigError(f"initial_config: {exc}") from None
        self.server = VariantServer(partial(compact.materialise, self.bank), engine, table,
                                    params["max_cached_variants"], initial,
                                    params["num_threads"], card=self.card)
        freeze_heap()  # no full garbage-collection pause in a later frame or swap
        release_free_memory()  # what reading the checkpoint left behind
        reuse_frame_memory()  # no page faults for every frame's buffers
        self.model_info = ModelInfo(self.card.classes, path, self.bank.sha256, table_path,
                                    sha256_of(table_path) if table_path else "", engine.info)
        self.stats = FrameStats()
        self.gaps = FrameGaps()  # builds go between frames (``with gaps.frame()`` around each)
        self.reported: dict[str, int] = {}  # counters at the last report, for per-window rates
        self.rate_cap = RateCap(params["max_rate_hz"])
        self.debug_cap = RateCap(params["debug_image_rate_hz"])
        self.stamp_tolerance_ns = round(params["stamp_tolerance_s"] * 1e9)
        self.meter = energy.make_meter(params["device_power_profile"])
        self.meter.start()
        self.timing_log = TimingLog(params["timing_log"] or None)
        # The model's input channels: the codecs hand frames over in the cheapest form for it.
        self.channels = self.bank.arch.in_channels
        self.last_rejection = ""

    @property
    def space(self) -> SearchSpace:
        return self.bank.space

    def apply(self, values: Mapping[str, Any]) -> None:
        """Parameters changed at run time (validated already); the rest are read at start."""
        if "max_cached_variants" in values:
            self.server.cache.capacity = values["max_cached_variants"]
        if "num_threads" in values:
            self.server.set_threads(values["num_threads"])
        if "stamp_tolerance_s" in values:
            self.stamp_tolerance_ns = round(values["stamp_tolerance_s"] * 1e9)
        if "device_power_profile" in values:
            self.meter = energy.make_meter(values["device_power_profile"])
            self.meter.start()
        if "max_rate_hz" in values:
            self.rate_cap.max_rate_hz = values["max_rate_hz"]
        if "debug_image_rate_hz" in values:
            self.debug_cap.max_rate_hz = values["debug_image_rate_hz"]

    def start_window(self) -> None:
        """The first report window (and energy reading) starts now."""
        self.stats.take_window()
        self.meter.start()

    def close(self) -> None:
        self.timing_log.close()

    # -- frames ---------------------------------------------------------------------------------
    def receive(self, info: Any) -> Frame | None:
        """Count an arriving frame (``info``: its MessageInfo dict); None when ``max_rate_hz``
        holds it back (counted in frames_skipped), else the frame to classify."""
        start = time.perf_counter()
        received_ns = time.time_ns()
        self.stats.received(info)
        if not self.rate_cap.admit(start):
            self.stats.add("frames_skipped")
            return None
        return Frame(start, received_ns)

    def classify(self, frame: Frame, decode: Callable[[int], np.ndarray]) -> Classification:
        """Decode (``decode(channels)``, given the model's input channels: ImageError for bad
        input), preprocess and classify one frame with the variant served when it starts."""
        with self._counting_errors():
            try:
                pixels = decode(self.channels)
                config, runner = self.server.active  # one reference per frame: one variant
                x = preprocess_frame(pixels, config.resolution, self.card)
            except (ImageError, DataError) as exc:
                self.stats.add("frames_rejected")
                self.last_rejection = str(exc)
                raise RejectedFrame(str(exc)) from exc
            forward_start = time.perf_counter()
            class_id, score = classify_logits(runner(x))
            forward_ms = (time.perf_counter() - forward_start) * 1e3
        return Classification(config, class_id, self.card.classes[class_id], score, forward_ms,
                              (forward_start - frame.start) * 1e3, pixels)

    @contextmanager
    def _counting_errors(self) -> Iterator[None]:
        try:
            yield
        except RejectedFrame:
            raise
        except Exception:  # unforeseen (MemoryError...): counted here, logged by the caller
            self.stats.add("frame_errors")
            raise

    @contextmanager
    def publishing(self, frame: Frame) -> Iterator[None]:
        """Around publishing a frame's result: a failure is counted in frame_errors (and
        raised on); success marks when the result went out."""
        with self._counting_errors():
            yield
        frame.published = time.perf_counter()

    def finish(self, frame: Frame, result: Classification, raw_stamp_ns: int,
               stamp_ns: int | None, now_ns: int) -> float:
        """Account a published frame: counters, latency samples, timing log. ``stamp_ns`` is
        None for a stamp that cannot be right (left out of the latency; count it with
        :meth:`stamp_rejected`). Returns the end-to-end latency in ms (NaN if unknown)."""
        callback_ms = (frame.published - frame.start) * 1e3
        e2e_ms = (now_ns - stamp_ns) / 1e6 if stamp_ns is not None else math.nan
        self.stats.add("frames_processed")
        self.stats.sample(model_ms=result.forward_ms, e2e_ms=e2e_ms,
                          overhead_ms=callback_ms - result.forward_ms,
                          non_model_ms=e2e_ms - result.forward_ms)
        self.timing_log.write(raw_stamp_ns, callback_ms, result.forward_ms, result.config.id,
                              frame.received_ns, result.preprocess_ms)
        return e2e_ms

    def stamp_rejected(self) -> None:
        self.stats.add("stamps_rejected")

    def debug_view(self, result: Classification, e2e_ms: float) -> np.ndarray | None:
        """The frame with the decision drawn on it, or None when ``debug_image_rate_hz``
        holds this one back."""
        if not self.debug_cap.admit(time.perf_counter()):
            return None
        return annotate(result.pixels, decision_lines(result.label, result.score,
                                                      result.config.id, e2e_ms))

    # -- variants -------------------------------------------------------------------------------
    def reconfigure(self, read: Callable[[SearchSpace], CompressionConfig]) -> SwapOutcome:
        """Serve the variant a request names (``read(space)``: ConfigError if it is invalid).
        The reply comes once it serves; a bad request or a failed build keeps the old one."""
        start = time.perf_counter()
        config, _ = self.server.active
        waited_s = 0.0
        try:
            wanted = read(self.space)
            if wanted != config and wanted not in self.server.cache:
                waited_s = self.gaps.wait_for_gap(self.server.build_s)
            swapped, cached = self.server.swap(wanted)
        except ConfigError as exc:
            self.stats.add("reconfigure_rejected")
            return SwapOutcome(False, False, math.nan, f"invalid request, still serving "
                               f"{config.id}: {exc}", config, "warning")
        except Exception as exc:  # a failed build must not take the node down
            self.stats.add("reconfigure_rejected")
            return SwapOutcome(False, False, math.nan, f"could not build the variant, still "
                               f"serving {config.id}: {exc}", config, "error")
        swap_ms = (time.perf_counter() - start) * 1e3
        if swapped:
            with self.stats.lock:
                self.stats.counts["swaps"] += 1
                self.stats.counts["last_swap_us"] = round(swap_ms * 1e3)
        how = ("swapped, " if swapped else "already serving, ") + ("cached" if cached
                                                                   else "built")
        gap = f", {waited_s * 1e3:.1f} ms of it waiting for a gap between frames" \
            if waited_s >= 5e-4 else ""
        return SwapOutcome(True, swapped, swap_ms, f"serving {wanted.id} ({how}, "
                           f"{swap_ms:.1f} ms{gap})", wanted, "info")

    # -- reporting ------------------------------------------------------------------------------
    def report(self, callback_errors: int) -> tuple[dict[str, Any], Health]:
        """Close the report window: the PerformanceMetrics values and the /diagnostics health
        (``callback_errors``: exceptions the node's callbacks caught). Memory of variants
        evicted meanwhile is given back here, off the frame path."""
        counts, window, seconds = self.stats.take_window()
        self.server.release_evicted()  # after the window closed: freeing may take a while
        meter = self.meter  # a parameter change may replace it meanwhile
        reading = meter.stop()
        meter.start()
        config, _ = self.server.active
        values = {**counts, **window_metrics(counts, window, seconds, reading.joules),
                  "config_id": config.id, "energy_method": reading.method,
                  "max_rate_hz": self.rate_cap.max_rate_hz}
        previous, self.reported = self.reported, counts
        processed = len(window["model_ms"])
        dropped = counts.get("frames_dropped", 0) - previous.get("frames_dropped", 0)
        warn, message = False, f"serving {config.id}"
        if not processed:
            warn, message = True, "no frames classified"
        elif dropped > processed:  # most frames never reach the callback: load or transport
            warn = True
            message = (f"serving {config.id}, but {dropped} of {dropped + processed} frames "
                       "were dropped")
        health = {
            "config_id": config.id, "fps": f"{values['fps']:.2f}",
            "cached_variants": len(self.server.cache), "backbone_sha256": self.bank.sha256,
            "overhead_ms_p50": f"{percentile(window['overhead_ms'], 50):.3f}",
            "overhead_ms_p95": f"{percentile(window['overhead_ms'], 95):.3f}",
            "callback_errors": callback_errors, "last_rejection": self.last_rejection,
            **{name: counts.get(name, 0) for name in _DIAGNOSTIC_COUNTS},
        }
        return values, Health(warn, message, health)
