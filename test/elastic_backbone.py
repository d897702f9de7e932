"""A tiny elastic backbone for unit tests, and configs that change every stage alike."""

from __future__ import annotations

import dataclasses

import torch

from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig, StageConfig
from adaspring_ros.core.model.operators import SwitchableBatchNorm2d
from adaspring_ros.core.model.supernet import ElasticBackbone, build_backbone


def tiny_backbone() -> ElasticBackbone:
    """A tiny random backbone whose BN rows all hold different, non-trivial statistics."""
    torch.manual_seed(0)
    model = build_backbone(stage_channels=(8, 12, 16))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SwitchableBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def every_stage(resolution: int = 28, **changes) -> CompressionConfig:
    """The full config with the same ``changes`` applied to every stage."""
    changed = dataclasses.replace(StageConfig(), **changes)
    return CompressionConfig((changed,) * DEFAULT_SPACE.num_stages, resolution)
