"""Backbone checkpoints: one format, one writer, verified on load.

Checkpoints are plain dicts of tensors/str/int loaded with ``torch.load(weights_only=True)`` and
verified against the sha256 in the sibling ``<file>.sha256``. :func:`backbone_checkpoint` is the
format, :func:`atomic_save` the only way one reaches the disk (training's resumable state wraps
the same format), :func:`backbone_from_checkpoint` checks the format and every shape (with
``weights.bank_from_checkpoint``, the checks a torch-free serving process applies to the same
file through ``checkpoint_reader``).

Every checkpoint carries the backbone's model card (``core/model/card.py``), which must agree with
its weights: the stem's input channels, the classifier's outputs and class names, the space's
resolutions. A loaded backbone keeps it as ``model.card``. Version-1 files predate cards and get
:func:`~adaspring_ros.core.model.card.legacy_card`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adaspring_ros.core.model.card import ModelCard
from adaspring_ros.core.model.checkpoint_reader import (
    checksum_path,
    sha256_of,
    verify_checksum,
    write_checksum,
)
from adaspring_ros.core.model.supernet import ElasticBackbone
from adaspring_ros.core.model.weights import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    arch_legacy_card,
    bank_from_checkpoint,
    check_card,
)

__all__ = ["CheckpointError", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "sha256_of",
           "checksum_path", "write_checksum", "verify_checksum", "atomic_save",
           "backbone_checkpoint", "save_backbone", "read_checkpoint", "backbone_from_checkpoint",
           "load_backbone"]


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save ``obj`` to ``path`` through a temporary file: a crash leaves the old file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def backbone_checkpoint(model: ElasticBackbone, meta: dict[str, Any] | None = None,
                        card: ModelCard | None = None) -> dict[str, Any]:
    """The checkpoint format (weights + architecture + space + model card + per-variant BN),
    as the dict that :func:`backbone_from_checkpoint` reads back.

    ``card`` defaults to the backbone's own (``model.card``, kept from the file it was loaded
    from), else to the legacy grey card, which only a grey backbone can take; CheckpointError
    if the card contradicts the weights.
    """
    where = "the backbone to save"
    card = card or model.card or arch_legacy_card(model.layout, where)
    check_card(card, model.layout, where)
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": model.arch(),
        "card": card.to_dict(),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "variant_bn": {cid: {n: t.detach().clone() for n, t in units.items()}
                       for cid, units in model.variant_bn.items()},
        # A separate key, so that code which predates it still loads the file (shared affine).
        "variant_affine": {cid: {n: t.detach().clone() for n, t in units.items()}
                           for cid, units in model.variant_affine.items()},
        "meta": dict(meta or {}),
    }


def save_backbone(model: ElasticBackbone, path: str | Path,
                  meta: dict[str, Any] | None = None, card: ModelCard | None = None) -> str:
    """Save :func:`backbone_checkpoint` and the sibling .sha256; returns the digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(backbone_checkpoint(model, meta, card), path)
    return write_checksum(path)


def _as_arrays(obj: Any) -> Any:
    """``obj`` with every tensor inside its dicts replaced by a numpy view of it."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: _as_arrays(v) for k, v in obj.items()}
    return obj


def backbone_from_checkpoint(ckpt: Any, where: str = "checkpoint") -> ElasticBackbone:
    """Rebuild a backbone from a loaded checkpoint dict (checks format, every shape, and that the
    model card agrees with the weights); the card is kept as ``model.card``."""
    bank = bank_from_checkpoint(_as_arrays(ckpt), where)
    arch = bank.arch
    model = ElasticBackbone(arch.space, arch.stage_channels, arch.num_classes, arch.classes,
                            arch.in_channels, arch.stem_stride)
    model.load_state_dict(ckpt["state_dict"])
    model.card = bank.card
    model.variant_bn = ckpt.get("variant_bn", {})
    model.variant_affine = ckpt.get("variant_affine", {})
    return model.eval()


def read_checkpoint(path: str | Path, verify: bool = True) -> tuple[Any, str]:
    """The raw checkpoint in ``path`` and its sha256, read with ``weights_only=True``.

    The sha256 must match ``<path>.sha256`` unless ``verify=False``; CheckpointError otherwise
    or when the file cannot be unpickled. The content is checked by
    :func:`backbone_from_checkpoint`.
    """
    path = Path(path)
    digest = verify_checksum(path) if verify else sha256_of(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of a damaged file come in many types
        raise CheckpointError(f"cannot load {path}: {exc}") from exc
    return ckpt, digest


def load_backbone(path: str | Path | None = None, verify: bool = True) -> ElasticBackbone:
    """Load a trained backbone (default: the shipped ``models/backbone.pt``), in eval mode.

    The file's sha256 must match ``<path>.sha256`` (unless ``verify=False``); it is loaded with
    ``weights_only=True``. The digest is kept as ``model.sha256``, the model card as
    ``model.card``.
    """
    if path is None:
        from adaspring_ros.core.paths import default_backbone

        path = default_backbone()
    ckpt, digest = read_checkpoint(path, verify)
    model = backbone_from_checkpoint(ckpt, str(path))
    model.sha256 = digest
    model.meta = dict(ckpt.get("meta", {}))
    return model
