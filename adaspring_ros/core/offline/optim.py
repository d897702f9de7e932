"""The optimiser and learning-rate schedule of training (the schedule also drives variant
tuning)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["sgd_optimizer", "lr_at"]


def sgd_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Nesterov SGD (momentum 0.9) with ``weight_decay`` on the conv and linear weights only:
    BN affine parameters and biases are not decayed (standard ResNet practice)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim == 1 else decay).append(p)
    return torch.optim.SGD([
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ], lr=lr, momentum=0.9, nesterov=True)


def lr_at(step: int, total: int, base: float, warmup: int = 0) -> float:
    """Linear warm-up (``warmup`` steps) then cosine decay to zero at ``total``, per step."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1.0 + math.cos(math.pi * min(1.0, progress)))
