"""Where training computes and in which precision: the device (``auto``, ``cpu``, ``cuda``,
``cuda:N``) and mixed precision on CUDA (bf16 autocast, or fp16 autocast with a gradient
scaler). The CPU computes in float32 with no autocast at all, so a CPU run is bit for bit what
it is without this module.

Whatever the device, what reaches the disk is on the CPU (:func:`to_cpu`): a backbone trained
on a GPU loads on a robot that has none.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ContextManager

import torch
from torch import Tensor, nn

__all__ = ["AMP_MODES", "Precision", "resolve_device", "resolve_amp", "to_cpu"]

AMP_MODES = ("auto", "bf16", "fp16", "off")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """The device ``spec`` names: ``auto`` is CUDA when available, else the CPU; ``cuda``
    (and ``auto`` on CUDA) is the GPU of ``local_rank`` (torchrun's LOCAL_RANK), GPU 0 without
    one. Raises ValueError for a device this machine does not have."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ValueError(f"--device {spec!r}: {exc}") from exc
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: torch sees no CUDA GPU on this machine "
                         f"(torch {torch.__version__})")
    if device.index is not None and local_rank:
        raise ValueError(f"--device {spec}: under torchrun each process takes the GPU of its "
                         "LOCAL_RANK; give --device cuda")
    index = device.index if device.index is not None else (local_rank or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device cuda:{index}: this machine has "
                         f"{torch.cuda.device_count()} GPU(s)")
    return torch.device("cuda", index)


def resolve_amp(spec: str, device: torch.device) -> str:
    """The precision ``spec`` means on ``device``: ``auto`` is bf16 on CUDA and ``off`` on the
    CPU; bf16 or fp16 on the CPU is refused (ValueError): the CPU recipe stays float32."""
    if spec not in AMP_MODES:
        raise ValueError(f"--amp must be one of {AMP_MODES}, got {spec!r}")
    if spec == "auto":
        return "bf16" if device.type == "cuda" else "off"
    if spec != "off" and device.type != "cuda":
        raise ValueError(f"--amp {spec} is for CUDA; the CPU trains in float32 (--amp off)")
    return spec


@dataclass
class Precision:
    """Autocast and loss scaling of one run: ``amp`` is ``off``, ``bf16`` or ``fp16`` (the
    last with a ``torch.amp.GradScaler``, whose state travels in the resumable state)."""

    device: torch.device
    amp: str = "off"
    scaler: torch.amp.GradScaler | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.amp not in ("off", *_DTYPES):
            raise ValueError(f"amp must be off, bf16 or fp16, got {self.amp!r}")
        if self.amp == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)

    def autocast(self) -> ContextManager:
        """The context the forward passes and losses run in (nothing at all when ``off``)."""
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.amp])

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def clip_and_step(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                      max_norm: float) -> Tensor:
        """Clip the summed gradient to ``max_norm`` (inf: no clipping) and step; returns the
        gradient's L2 norm before clipping (inf or nan on a step the fp16 scaler skips)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        norm = nn.utils.clip_grad_norm_(params, max_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return norm.detach()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def to_cpu(tree: Any) -> Any:
    """``tree`` (dicts, lists, tuples of tensors and plain values) with every tensor on the CPU;
    CPU tensors are returned as they are, not copied."""
    if isinstance(tree, Tensor):
        return tree if tree.device.type == "cpu" else tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree
