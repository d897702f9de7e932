"""Synthetic profile tables: plausible made-up measurements for tests and benchmarks.

Used when the real table (models/profile_table.json, written by the profiler) is missing, and to
test the search at sizes the real space is never profiled at (10,000 variants). The numbers follow
a simple cost model of the backbone (MACs from widths, depths, operators, ranks and resolution;
latency and energy proportional to MACs plus a per-block overhead; accuracy saturating in MACs),
so that the trade-offs have the right shape. They are NOT measurements; every table made here says
so in its ``meta`` and ``energy_method``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np

from adaspring_ros.core.model.card import ModelCard
from adaspring_ros.core.model.config import (
    DEFAULT_SPACE,
    CompressionConfig,
    SearchSpace,
    StageConfig,
)
from adaspring_ros.core.model.profile_table import ProfileEntry, ProfileTable

__all__ = ["synthetic_table", "table_from_rows", "width_only_configs"]

# Made-up numbers stand for no engine in particular, so any engine may use them.
SYNTHETIC_ENGINE = {"name": "synthetic"}
_BASE_CHANNELS = (32, 64, 128)   # stage widths of the uncompressed backbone
_MACS_PER_MS = 4e6               # a small CPU core on batch-1 convolutions
_OVERHEAD_MS = 0.03              # per executed block (Python/kernel launch)
_POWER_W = 8.0                   # energy = latency x power, as the CPU-time model does


def _stage_choices(space: SearchSpace) -> list[StageConfig]:
    return [
        StageConfig(width=w, depth=d, operator=o, rank=r, int8=q)
        for w in space.widths for d in space.depths for o in space.operators
        for r in space.ranks for q in space.int8
    ]


def _entry(config: CompressionConfig, rng: np.random.Generator) -> ProfileEntry:
    side = config.resolution
    macs = params = 0.0
    activations = 0.0
    blocks = 0
    for i, stage in enumerate(config.stages):
        channels = max(1, round(_BASE_CHANNELS[min(i, len(_BASE_CHANNELS) - 1)] * stage.width))
        side_i = max(1, side // (2 ** i))
        if stage.operator == "conv":
            per_block = 9 * channels * channels * stage.rank
        else:  # depthwise 3x3 + pointwise, the pointwise factorised by rank
            per_block = 9 * channels + channels * channels * stage.rank
        params += per_block * stage.depth
        macs += per_block * stage.depth * side_i * side_i
        activations = max(activations, channels * side_i * side_i * 4 * 3)
        blocks += stage.depth
    latency = _OVERHEAD_MS * blocks + macs / _MACS_PER_MS
    latency *= float(rng.lognormal(0.0, 0.05))  # measurement noise
    int8_stages = sum(s.int8 for s in config.stages)
    accuracy = 0.72 + 0.22 * (1.0 - math.exp(-macs / 6e6))
    accuracy -= 0.004 * int8_stages + 0.01 * sum(1.0 - s.rank for s in config.stages)
    accuracy = float(np.clip(accuracy + rng.normal(0.0, 0.004), 0.0, 1.0))
    storage = sum(
        params / len(config.stages) * (1 if s.int8 else 4) for s in config.stages
    )
    return ProfileEntry(
        config=config,
        accuracy=round(accuracy, 4),
        latency_ms_p50=round(latency, 4),
        latency_ms_p95=round(latency * 1.15, 4),
        macs=int(macs),
        params=int(params),
        storage_bytes=int(storage),
        peak_memory_mb=round((activations + storage) / 2**20 + 1.0, 3),
        energy_mj=round(latency * _POWER_W, 4),
    )


def width_only_configs(space: SearchSpace = DEFAULT_SPACE) -> list[CompressionConfig]:
    """Every variant that differs from the full model only in its per-stage widths."""
    full = CompressionConfig.full(space)
    configs = [full]
    for stage in range(space.num_stages):  # widen the family one stage at a time
        configs = [
            CompressionConfig(
                stages=tuple(replace(s, width=w) if i == stage else s
                             for i, s in enumerate(c.stages)),
                resolution=c.resolution)
            for c in configs for w in space.widths
        ]
    return configs


def synthetic_table(
    n: int, seed: int = 0, space: SearchSpace = DEFAULT_SPACE,
    include: Sequence[CompressionConfig] = (), card: ModelCard | None = None,
) -> ProfileTable:
    """A table of ``n`` distinct variants of ``space`` with synthetic measurements: the full and
    the smallest variant, then ``include`` (as many as fit), then random draws. Deterministic
    for a given ``seed``. ``card`` is the model card of the backbone it stands for (default:
    the grey Fashion-MNIST card at the space's resolutions)."""
    if not 2 <= n <= space.size:
        raise ValueError(f"n must be in [2, {space.size}], got {n}")
    rng = np.random.default_rng(seed)
    choices = _stage_choices(space)
    per_stage = len(choices)
    configs = {c.id: c for c in (CompressionConfig.full(space),
                                 CompressionConfig.smallest(space), *include)}
    configs = dict(list(configs.items())[:n])
    while len(configs) < n:
        for index in rng.integers(0, space.size, size=n - len(configs)):
            index = int(index)
            resolution = space.resolutions[index % len(space.resolutions)]
            index //= len(space.resolutions)
            stages = []
            for _ in range(space.num_stages):
                stages.append(choices[index % per_stage])
                index //= per_stage
            config = CompressionConfig(stages=tuple(stages), resolution=resolution)
            configs.setdefault(config.id, config)
            if len(configs) == n:
                break
    entries = [_entry(c, rng) for c in configs.values()]
    return ProfileTable(
        space=space, entries=entries, device={"name": "synthetic"},
        energy_method="synthetic: latency x 8 W (not measured)", engine=dict(SYNTHETIC_ENGINE),
        meta={"synthetic": True, "seed": seed, "note": "made-up numbers from a cost model"},
        card=card,
    )


def table_from_rows(rows: list[dict[str, float]], space: SearchSpace = DEFAULT_SPACE,
                    seed: int = 0, card: ModelCard | None = None) -> ProfileTable:
    """A table with the given metrics, one row per entry, on distinct variants of ``space``
    (``card`` as for :func:`synthetic_table`).

    Each row may set accuracy, latency_ms_p50, latency_ms_p95 (default 1.15 x p50),
    peak_memory_mb, storage_bytes, energy_mj; missing metrics get neutral defaults. For tests
    that need exact numbers rather than the cost model.
    """
    configs = [e.config for e in synthetic_table(max(len(rows), 2), seed, space).entries]
    entries = []
    for config, row in zip(configs, rows, strict=False):
        p50 = float(row.get("latency_ms_p50", 1.0))
        entries.append(ProfileEntry(
            config=config,
            accuracy=float(row.get("accuracy", 0.9)),
            latency_ms_p50=p50,
            latency_ms_p95=float(row.get("latency_ms_p95", p50 * 1.15)),
            macs=int(row.get("macs", 1000)),
            params=int(row.get("params", 100)),
            storage_bytes=int(row.get("storage_bytes", 400)),
            peak_memory_mb=float(row.get("peak_memory_mb", 1.0)),
            energy_mj=float(row.get("energy_mj", 1.0)),
        ))
    return ProfileTable(space=space, entries=entries, device={"name": "synthetic"},
                        energy_method="given", meta={"synthetic": True},
                        engine=dict(SYNTHETIC_ENGINE), card=card)
