"""BN recalibration: the exact batch-norm statistics of one whole variant of the supernet.

A switchable-BN row averages over every upstream context it was trained in (all the variants
that share the row's width and resolution), which costs a narrow or mixed variant many points;
the statistics of the variant itself (what BN recalibration in once-for-all computes) restore
them. The profiler stores them per config id in the backbone (``variant_bn``), so
``materialise`` needs no data; variant tuning normalises with them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from adaspring_ros.core.data.transforms import preprocess_tensor
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.operators import ElasticConvBN
from adaspring_ros.core.model.supernet import ElasticBackbone

__all__ = ["variant_bn_stats"]


@torch.no_grad()
def variant_bn_stats(model: ElasticBackbone, config: CompressionConfig, images: np.ndarray,
                     batch_size: int = 256) -> dict[str, Tensor]:
    """Exact BN statistics of one whole variant: unit name -> (2, C) mean / unbiased var.

    The supernet is not modified: BNs run with momentum 0 (batch statistics, no tracking),
    forward hooks read their input, and the training mode and active variant are restored.
    ``images`` are preprocessed for the backbone's model card (``model.card``; none: grey).
    """
    units = {n: m for n, m in model.named_modules() if isinstance(m, ElasticConvBN)}
    moments: dict[str, list] = {}

    def hook_for(name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            x = inputs[0].double()
            acc = moments.setdefault(name, [0, 0.0, 0.0])
            acc[0] += x.numel() // x.shape[1]
            acc[1] = acc[1] + x.sum((0, 2, 3))
            acc[2] = acc[2] + (x * x).sum((0, 2, 3))
        return hook

    handles = [u.bn.register_forward_hook(hook_for(n)) for n, u in units.items()]
    saved = [(u.bn, u.bn.momentum) for u in units.values()]
    was_training, was_active = model.training, model.active
    try:
        for bn, _ in saved:
            bn.momentum = 0.0
        model.train()
        model.set_active(config)
        for i in range(0, len(images), batch_size):
            model(preprocess_tensor(images[i:i + batch_size], config.resolution, model.card))
    finally:
        for h in handles:
            h.remove()
        for bn, momentum in saved:
            bn.momentum = momentum
        model.train(was_training)
        model.active = was_active
    out = {}
    for name, (n, s, sq) in moments.items():
        mean = s / n
        var = (sq - n * mean * mean) / max(1, n - 1)
        out[name] = torch.stack([mean, var.clamp_min(0.0)]).float()
    return out
