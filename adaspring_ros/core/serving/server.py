"""The variant a perception process serves: built and warmed up off the frame path, cached, and
swapped atomically between frames.

A variant is built by :class:`VariantBuilder`: materialised (from the checkpoint's arrays,
``compact.materialise``, or by a torch backbone), then prepared by the engine with the profile
table's int8 activation ranges. With ONNX Runtime none of this loads torch.

A frame takes ONE reference to the ``active`` (config, runner) pair when it starts and uses only
that; :meth:`VariantServer.swap` replaces the pair with a single assignment once the new runner is
built and warmed up, so every frame is computed entirely by one variant.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from adaspring_ros.core.data.transforms import InputSpec, preprocess_frame
from adaspring_ros.core.model.config import CompressionConfig, SearchSpace
from adaspring_ros.core.model.engine import Engine, Runner
from adaspring_ros.core.model.profile_table import ProfileTable

__all__ = ["parse_config", "VariantBuilder", "VariantCache", "VariantServer", "freeze_heap",
           "release_free_memory", "reuse_frame_memory"]

T = TypeVar("T")
# Builds whose median is VariantServer.build_s.
BUILD_HISTORY = 5


class VariantCache(Generic[T]):
    """LRU of variants ready to serve, so switching between known variants is a dict lookup.

    ``get(config)`` calls ``build(config)`` on a miss (materialise + engine session: a few ms).
    Thread-safe; a build runs outside the lock so a lookup never waits for one.
    """

    def __init__(self, build: Callable[[CompressionConfig], T], capacity: int = 8) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.build = build
        self.capacity = capacity
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0  # variants dropped to keep the capacity, since start

    def __contains__(self, config: CompressionConfig) -> bool:
        return config.id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def get(self, config: CompressionConfig) -> T:
        with self._lock:
            item = self._items.get(config.id)
            if item is not None:
                self._items.move_to_end(config.id)
                return item
        item = self.build(config)
        with self._lock:
            self._items[config.id] = item
            self._items.move_to_end(config.id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
                self.evictions += 1
        return item


def freeze_heap() -> None:
    """Exempt every object alive now from Python's cyclic garbage collector (``gc.freeze``).

    Call once a process has loaded its backbone: the many objects that the libraries and the
    weights leave behind make every full collection walk them all, a pause that a swap or a frame
    which happens to trigger one would pay (it was the slowest ``materialise`` seen). After the
    freeze, collections only walk objects created later.
    """
    gc.collect()
    gc.freeze()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64 bits.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    try:
        return ctypes.CDLL(None).mallopt  # glibc
    except (OSError, AttributeError):
        return None


def reuse_frame_memory(keep_bytes: int = 128 * 2**20) -> bool:
    """Let freed frame-sized buffers serve the next frame instead of going back to the system
    (glibc's ``mallopt``: buffers up to 32 MB come from the heap, and up to ``keep_bytes`` of
    free heap stay mapped); False where there is no glibc.

    Each camera frame allocates a few MB (the message's pixels, twice, and their float planes);
    with glibc's adaptive defaults the heap returned them after every frame and the next frame
    faulted them back in, zeroed: 11,700-13,300 page faults a second at 10 fps and 6.1-6.2 ms
    of CPU per 640x480 rgb8 frame in the perception node (grey model), against 0-4 and 4.0 ms
    with this (docs/benchmarks.md, design measurements). The peak is unchanged;
    :func:`release_free_memory` still trims.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, int(keep_bytes)))


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``; a no-op where
    there is none).

    An evicted variant frees its engine session, but the allocator keeps those pages for later,
    so a serving process's resident memory creeps up with every swap that builds; trimming
    after evictions keeps it near what the cached variants hold (in-process here, 300 swaps over
    36 variants: 150 MB before, 137 MB after). It takes ~1.5 ms, so it belongs off the frame
    path (the perception node's report timer).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def parse_config(text: str, space: SearchSpace) -> CompressionConfig:
    """"full", "smallest" or a config id of ``space`` (the served backbone's); ConfigError if
    none of them."""
    if text == "full":
        return CompressionConfig.full(space)
    if text == "smallest":
        return CompressionConfig.smallest(space)
    return CompressionConfig.from_id(text, space)


class VariantBuilder:
    """What a node serves for a config: ``materialise(config)``, then a runner of ``engine``,
    with the table's int8 activation ranges when the engine computes in int8.

    ``materialise`` returns a compact variant: ``functools.partial(compact.materialise, bank)``
    for a torch-free process, or a torch backbone's ``materialise``. The table must come from
    the same engine (ProfileError otherwise): without its ranges an int8 variant would still
    run, but in float32, not as profiled.
    """

    def __init__(self, materialise: Callable[[CompressionConfig], Any], engine: Engine,
                 table: ProfileTable | None = None) -> None:
        self.materialise = materialise
        self.engine = engine
        self.ranges: dict[str, dict] = {}
        if table is not None and engine.name == "onnxruntime":
            table.require_engine(engine.name)
            self.ranges = {e.id: dict(e.int8_ranges) for e in table.entries if e.int8_ranges}

    def __call__(self, config: CompressionConfig) -> Runner:
        return self.engine.prepare(self.materialise(config), self.ranges.get(config.id))


class VariantServer:
    """The served variant in ``engine``, with an LRU of ready variants (see VariantBuilder for
    ``materialise`` and ``table``); ``card`` is the backbone's model card, whose preprocessing
    makes the warm-up input."""

    def __init__(self, materialise: Callable[[CompressionConfig], Any], engine: Engine,
                 table: ProfileTable | None, capacity: int, initial: CompressionConfig,
                 threads: int = 1, *, card: InputSpec) -> None:
        self.engine, self.threads, self.card = engine, threads, card
        engine.set_threads(threads)
        self.cache = VariantCache(VariantBuilder(materialise, engine, table), capacity)
        self.lock = threading.Lock()
        self._build_s: deque[float] = deque(maxlen=BUILD_HISTORY)
        self.active: tuple[CompressionConfig, Runner] = (initial, self.build(initial))
        self._released_at = 0  # cache evictions when memory was last given back

    def release_evicted(self) -> bool:
        """Give the memory of variants evicted since the last call back to the system (see
        :func:`release_free_memory`); whether there were any."""
        evictions = self.cache.evictions
        if evictions == self._released_at:
            return False
        self._released_at = evictions
        release_free_memory()
        return True

    def build(self, config: CompressionConfig) -> Runner:
        """Look up ``config``, or build it and run one warm-up forward (first-call allocations
        happen here, off the frame path, not on the first frame it serves)."""
        if config in self.cache:
            return self.cache.get(config)
        start = time.perf_counter()
        runner = self.cache.get(config)
        blank = np.zeros((config.resolution, config.resolution), np.uint8)
        runner(preprocess_frame(blank, config.resolution, self.card))
        self._build_s.append(time.perf_counter() - start)
        return runner

    @property
    def build_s(self) -> float:
        """What building a variant takes here: the median of the last builds (the first one's
        while only it has been timed)."""
        return statistics.median(self._build_s)

    def swap(self, wanted: CompressionConfig) -> tuple[bool, bool]:
        """Serve ``wanted`` from now on: (whether that changed the variant, whether it was
        cached). The build happens before the swap; a failing build leaves the old variant."""
        with self.lock:
            config, _ = self.active
            cached = wanted in self.cache
            if wanted == config:
                return False, cached
            self.active = (wanted, self.build(wanted))  # the swap: one reference assignment
            return True, cached

    def set_threads(self, wanted: int) -> None:
        """Intra-op threads of the forward passes; where a runner fixes its thread count when
        it is built, later builds use the new one (the cache is emptied)."""
        if wanted == self.threads:
            return
        self.engine.set_threads(wanted)
        self.threads = wanted
        if self.engine.threads_fixed_at_build:
            self.cache.clear()
