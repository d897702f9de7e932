"""The variant a perception process serves: built and warmed up off the frame path, cached, and
swapped atomically between frames.

A frame takes ONE reference to the ``active`` (config, runner) pair when it starts and uses only
that; :meth:`VariantServer.swap` replaces the pair with a single assignment once the new runner is
built and warmed up, so every frame is computed entirely by one variant.
"""

from __future__ import annotations

import threading

import numpy as np

from . import data
from .config import DEFAULT_SPACE, CompressionConfig, SearchSpace
from .engine import Engine, Runner, VariantBuilder
from .profile_table import ProfileTable
from .supernet import ElasticBackbone, VariantCache, set_num_threads

__all__ = ["parse_config", "VariantServer"]


def parse_config(text: str, space: SearchSpace = DEFAULT_SPACE) -> CompressionConfig:
    """"full", "smallest" or a config id; ConfigError if none of them."""
    if text == "full":
        return CompressionConfig.full(space)
    if text == "smallest":
        return CompressionConfig.smallest(space)
    return CompressionConfig.from_id(text, space)


class VariantServer:
    """The served variant of ``backbone`` in ``engine``, with an LRU of ready variants."""

    def __init__(self, backbone: ElasticBackbone, engine: Engine, table: ProfileTable | None,
                 capacity: int, initial: CompressionConfig, threads: int = 1) -> None:
        self.backbone, self.engine, self.threads = backbone, engine, threads
        set_num_threads(threads)
        self.cache = VariantCache(VariantBuilder(backbone, engine, table), capacity)
        self.lock = threading.Lock()
        self.active: tuple[CompressionConfig, Runner] = (initial, self.build(initial))

    def build(self, config: CompressionConfig) -> Runner:
        """Look up ``config``, or build it and run one warm-up forward (first-call allocations
        happen here, off the frame path, not on the first frame it serves)."""
        if config in self.cache:
            return self.cache.get(config)
        runner = self.cache.get(config)
        blank = np.zeros((config.resolution, config.resolution), np.uint8)
        runner(data.preprocess(blank, config.resolution).numpy())
        return runner

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
        """Intra-op threads of the calling thread's forward passes; an engine session fixes its
        thread count, so later builds use the new one (the cache is emptied)."""
        if wanted == self.threads:
            return
        set_num_threads(wanted)
        self.threads = wanted
        if self.engine.name != "torch":
            self.engine.threads = wanted
            self.cache.clear()
