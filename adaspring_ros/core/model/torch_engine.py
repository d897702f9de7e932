"""The torch reference engine: a compact variant run as its torch ``CompactNet`` (eager).

int8 is weight-only here (the weights are dequantised once, convolutions run in float32): eager
PyTorch has no fast int8 convolution for these small layers. ``engine.make_engine("torch")``
imports this module, so only a process that asks for the reference loads torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from adaspring_ros.core.model.compact import CompactWeights
from adaspring_ros.core.model.engine_base import Engine, Variant
from adaspring_ros.core.model.supernet import CompactNet

__all__ = ["TorchRunner", "TorchEngine"]


class TorchRunner:
    """The reference: the compact torch module itself (int8 = weight-only, float32 compute)."""

    static_int8 = False

    def __init__(self, net: CompactNet) -> None:
        self.net = net.eval()
        self.config = net.config

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.net(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


class TorchEngine(Engine):
    """Runs variants in torch with ``torch.set_num_threads(threads)`` for the calling process
    (applied by :meth:`set_threads`; 1 is fastest at batch 1 on small CPUs)."""

    name = "torch"

    @property
    def version(self) -> str:
        return torch.__version__

    def set_threads(self, threads: int) -> None:
        super().set_threads(threads)
        torch.set_num_threads(self.threads)

    def prepare(self, variant: Variant, ranges: Mapping[str, Sequence[float]] | None = None,
                batch: int | None = 1) -> TorchRunner:
        if isinstance(variant, CompactWeights):
            variant = CompactNet.from_weights(variant)
        return TorchRunner(variant)
