"""Which variants training sees: the sandwich rule's students, the student pool, the training
space of a sized backbone.

Only the operators that own weights are sampled (width, depth, conv/dwsep, resolution); low
rank and int8 are applied to the trained weights afterwards, so training keeps every stage at
full rank and float. Every draw comes from a seeded ``torch.Generator``, never the global RNG,
so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import torch

from adaspring_ros.core.model.config import (
    DEFAULT_SPACE,
    CompressionConfig,
    SearchSpace,
    StageConfig,
)
from adaspring_ros.core.model.profile_table import front_ids

__all__ = [
    "sample_config",
    "sample_uniform_config",
    "sample_student",
    "trained_form",
    "student_pool",
    "with_operator",
    "smallest_trained",
    "sized_space",
]


def _pick(choices: Sequence, gen: torch.Generator):
    return choices[int(torch.randint(len(choices), (1,), generator=gen))]


def _sample_stage(space: SearchSpace, gen: torch.Generator, post: Callable) -> StageConfig:
    return StageConfig(width=_pick(space.widths, gen), depth=_pick(space.depths, gen),
                       operator=_pick(space.operators, gen), rank=post(space.ranks),
                       int8=post(space.int8))


def sample_config(space: SearchSpace, gen: torch.Generator,
                  post_training: bool = False) -> CompressionConfig:
    """A random variant, drawn from ``gen`` only (never the global RNG).

    Width, depth, operator and resolution are uniform over the space. By default (training) rank
    and int8 stay at full rank / float: they are post-training operators (truncated SVD and
    quantisation of trained weights), so the supernet's weights are shaped only by the variants
    that own weights; sampling them as well costs the full-precision subnets accuracy for the
    same epochs (docs/benchmarks.md, design measurements). ``post_training=True`` draws them
    uniformly too: a variant of the whole space.
    """
    def post(choices: Sequence):
        return _pick(choices, gen) if post_training else choices[-1]

    stages = tuple(_sample_stage(space, gen, post) for _ in range(space.num_stages))
    return CompressionConfig(stages=stages, resolution=_pick(space.resolutions, gen))


def sample_uniform_config(space: SearchSpace, gen: torch.Generator) -> CompressionConfig:
    """A random variant whose stages all make the same width / depth / operator choice (the
    kind of variant a slimmable network trains); full rank, float, random resolution."""
    stage = _sample_stage(space, gen, lambda choices: choices[-1])
    return CompressionConfig(stages=(stage,) * space.num_stages,
                             resolution=_pick(space.resolutions, gen))


def sample_student(space: SearchSpace, gen: torch.Generator,
                   uniform_fraction: float = 0.0,
                   pool: Sequence[CompressionConfig] = (), pool_share: float = 0.0
                   ) -> CompressionConfig:
    """A random sandwich student: with probability ``pool_share`` one of ``pool`` (the
    variants the search can pick), else with probability ``uniform_fraction`` a stage-uniform
    variant, else one of the whole training space. With neither, the generator is consumed
    exactly as ``sample_config`` alone does, so the shipped recipe draws the same students."""
    if pool and pool_share > 0 and float(torch.rand(1, generator=gen)) < pool_share:
        return _pick(pool, gen)
    if uniform_fraction > 0 and float(torch.rand(1, generator=gen)) < uniform_fraction:
        return sample_uniform_config(space, gen)
    return sample_config(space, gen)


def trained_form(space: SearchSpace, config: CompressionConfig) -> CompressionConfig:
    """The variant whose weights training shapes for ``config``: full rank and float in every
    stage (low rank and int8 are applied to the trained weights afterwards)."""
    return replace(config, stages=tuple(replace(s, rank=space.ranks[-1], int8=space.int8[-1])
                                        for s in config.stages))


def student_pool(space: SearchSpace, ids: Sequence[str], table_path: str = ""
                 ) -> list[CompressionConfig]:
    """The distinct trained forms of ``ids`` and of the Pareto front of the profile table at
    ``table_path`` (if given), the full network left out (it is the teacher)."""
    if table_path:
        ids = [*front_ids(table_path), *ids]
    full, pool = CompressionConfig.full(space), {}
    for config_id in ids:
        config = trained_form(space, CompressionConfig.from_id(config_id, space))
        if config.id != full.id:
            pool.setdefault(config.id, config)
    return list(pool.values())


def with_operator(config: CompressionConfig, operator: str) -> CompressionConfig:
    """``config`` with ``operator`` in every stage."""
    return replace(config, stages=tuple(replace(s, operator=operator) for s in config.stages))


def smallest_trained(space: SearchSpace, operator: str) -> CompressionConfig:
    """The sandwich rule's smallest variant: narrowest, shallowest, lowest resolution, with
    ``operator`` in every stage (the trainer alternates it so both unit sets get the bound)."""
    stage = StageConfig(width=space.widths[0], depth=space.depths[0], operator=operator,
                        rank=space.ranks[-1], int8=space.int8[-1])
    return CompressionConfig(stages=(stage,) * space.num_stages,
                             resolution=space.resolutions[0])


def sized_space(max_depth: int, max_resolution: int) -> SearchSpace:
    """The default space cut to a backbone of at most ``max_depth`` blocks per stage and
    ``max_resolution`` input pixels (``adaspring size-backbone`` picks them for a device)."""
    space = DEFAULT_SPACE
    if max_depth not in space.depths or max_resolution not in space.resolutions:
        raise ValueError(f"max depth must be one of {space.depths} and max resolution one of "
                         f"{space.resolutions}, got {max_depth} and {max_resolution}")
    return replace(space, depths=tuple(d for d in space.depths if d <= max_depth),
                   resolutions=tuple(r for r in space.resolutions if r <= max_resolution))
