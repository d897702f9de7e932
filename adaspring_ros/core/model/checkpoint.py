"""Backbone checkpoints: one format, one writer, verified on load.

Checkpoints are plain dicts of tensors/str/int loaded with ``torch.load(weights_only=True)`` and
verified against the sha256 in the sibling ``<file>.sha256``. :func:`backbone_checkpoint` is the
format, :func:`atomic_save` the only way one reaches the disk (training's resumable state wraps
the same format), :func:`backbone_from_checkpoint` checks the format and every shape (with
``weights.bank_from_checkpoint``, the checks a torch-free serving process applies to the same
file through ``checkpoint_reader``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adaspring_ros.core.model.checkpoint_reader import sha256_of, verify_checksum, write_checksum
from adaspring_ros.core.model.supernet import ElasticBackbone
from adaspring_ros.core.model.weights import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    bank_from_checkpoint,
)

__all__ = ["CheckpointError", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "sha256_of",
           "write_checksum", "verify_checksum", "atomic_save", "backbone_checkpoint",
           "save_backbone", "backbone_from_checkpoint", "load_backbone"]


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save ``obj`` to ``path`` through a temporary file: a crash leaves the old file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def backbone_checkpoint(model: ElasticBackbone, meta: dict[str, Any] | None = None,
                        ) -> dict[str, Any]:
    """The checkpoint format (weights + architecture + space + class names + per-variant BN),
    as the dict that :func:`backbone_from_checkpoint` reads back."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": model.arch(),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "variant_bn": {cid: {n: t.detach().clone() for n, t in units.items()}
                       for cid, units in model.variant_bn.items()},
        # A separate key, so that code which predates it still loads the file (shared affine).
        "variant_affine": {cid: {n: t.detach().clone() for n, t in units.items()}
                           for cid, units in model.variant_affine.items()},
        "meta": dict(meta or {}),
    }


def save_backbone(model: ElasticBackbone, path: str | Path,
                  meta: dict[str, Any] | None = None) -> str:
    """Save :func:`backbone_checkpoint` and the sibling .sha256; returns the digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(backbone_checkpoint(model, meta), path)
    return write_checksum(path)


def _as_arrays(obj: Any) -> Any:
    """``obj`` with every tensor inside its dicts replaced by a numpy view of it."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: _as_arrays(v) for k, v in obj.items()}
    return obj


def backbone_from_checkpoint(ckpt: Any, where: str = "checkpoint") -> ElasticBackbone:
    """Rebuild a backbone from a loaded checkpoint dict (checks format and every shape)."""
    bank = bank_from_checkpoint(_as_arrays(ckpt), where)
    arch = bank.arch
    model = ElasticBackbone(arch.space, arch.stage_channels, arch.num_classes, arch.classes)
    model.load_state_dict(ckpt["state_dict"])
    model.variant_bn = ckpt.get("variant_bn", {})
    model.variant_affine = ckpt.get("variant_affine", {})
    return model.eval()


def load_backbone(path: str | Path | None = None, verify: bool = True) -> ElasticBackbone:
    """Load a trained backbone (default: the shipped ``models/backbone.pt``), in eval mode.

    The file's sha256 must match ``<path>.sha256`` (unless ``verify=False``); it is loaded with
    ``weights_only=True``. The digest is kept as ``model.sha256``.
    """
    if path is None:
        from adaspring_ros.core.paths import default_backbone

        path = default_backbone()
    path = Path(path)
    digest = verify_checksum(path) if verify else sha256_of(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of a damaged file come in many types
        raise CheckpointError(f"cannot load {path}: {exc}") from exc
    model = backbone_from_checkpoint(ckpt, str(path))
    model.sha256 = digest
    model.meta = dict(ckpt.get("meta", {}))
    return model
