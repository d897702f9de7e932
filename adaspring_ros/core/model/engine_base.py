"""The inference engine interface: what an engine makes of a compact variant and reports.

An :class:`Engine` prepares a :class:`Runner` (preprocessed float32 in, logits out) from a
compact variant (``compact.CompactWeights``, or a torch ``CompactNet``) and names itself and its
version in :class:`EngineInfo`, which a profile table records. The engines themselves live in
``engine`` (ONNX Runtime, and ``make_engine``) and ``torch_engine`` (the reference); both build on
this module, so neither imports the other at load time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from adaspring_ros.core.model.config import CompressionConfig

__all__ = ["EngineError", "EngineInfo", "Runner", "Variant", "Engine"]


class EngineError(RuntimeError):
    """An engine that is unknown, not installed, or cannot run a variant."""


@dataclass(frozen=True)
class EngineInfo:
    """Which engine measured or serves a variant: recorded in the profile table."""

    name: str
    version: str
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "threads": self.threads}


class Runner(Protocol):
    """One variant, ready to serve: preprocessed float32 (N, in_channels, R, R) in, logits
    (N, classes) out."""

    config: CompressionConfig
    static_int8: bool

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


Variant = Any  # a compact.CompactWeights, or a torch CompactNet


class Engine:
    """Makes :class:`Runner` s for compact variants; ``info`` goes into the profile table."""

    name = ""
    # True when a runner keeps the thread count it was built with (rebuild to change it).
    threads_fixed_at_build = False

    def __init__(self, threads: int = 1) -> None:
        self.threads = self._checked_threads(threads)

    @staticmethod
    def _checked_threads(threads: int) -> int:
        if int(threads) < 1:
            raise EngineError(f"threads must be >= 1, got {threads}")
        return int(threads)

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(self.name, self.version, self.threads)

    @property
    def version(self) -> str:
        raise NotImplementedError

    def set_threads(self, threads: int) -> None:
        """Intra-op threads of the runners built from now on (and, where the engine allows,
        of the calling thread's forward passes)."""
        self.threads = self._checked_threads(threads)

    def prepare(self, variant: Variant, ranges: Mapping[str, Sequence[float]] | None = None,
                batch: int | None = 1) -> Runner:
        raise NotImplementedError

    def calibrate(self, variant: Variant, x: np.ndarray, batch_size: int = 256
                  ) -> dict[str, list[float]]:
        """Activation (lo, hi) of every quantisation point over preprocessed images ``x``."""
        return {}
