"""Backbone checkpoints: one format, one writer, verified on load.

Checkpoints are plain dicts of tensors/str/int loaded with ``torch.load(weights_only=True)`` and
verified against the sha256 in the sibling ``<file>.sha256``. :func:`backbone_checkpoint` is the
format, :func:`atomic_save` the only way one reaches the disk (training's resumable state wraps
the same format), :func:`backbone_from_checkpoint` checks the format and every shape.

Every checkpoint carries the backbone's model card (``core/model/card.py``), which must agree with
its weights: the stem's input channels, the classifier's outputs and class names, the space's
resolutions. A loaded backbone keeps it as ``model.card``. Version-1 files predate cards and get
:func:`~adaspring_ros.core.model.card.legacy_card`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adaspring_ros.core.model.card import CardError, ModelCard, legacy_card
from adaspring_ros.core.model.config import CompressionConfig, ConfigError, SearchSpace
from adaspring_ros.core.model.operators import ElasticConvBN
from adaspring_ros.core.model.supernet import ElasticBackbone

__all__ = ["CheckpointError", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "sha256_of",
           "checksum_path", "write_checksum", "verify_checksum", "atomic_save",
           "backbone_checkpoint", "save_backbone", "read_checkpoint", "backbone_from_checkpoint",
           "load_backbone"]

CHECKPOINT_FORMAT = "adaspring-backbone"
CHECKPOINT_VERSION = 2   # written; version 1 (no model card) is still read
_READABLE_VERSIONS = (1, CHECKPOINT_VERSION)


class CheckpointError(ValueError):
    """A backbone checkpoint that is missing, corrupt, or does not match its checksum/shape."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_path(path: str | Path) -> Path:
    """The sibling file that holds ``path``'s sha256 (``<path>.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_checksum(path: str | Path) -> str:
    """Write ``<path>.sha256`` in sha256sum format; returns the digest."""
    path = Path(path)
    digest = sha256_of(path)
    checksum_path(path).write_text(f"{digest}  {path.name}\n")
    return digest


def verify_checksum(path: str | Path) -> str:
    """Check ``path`` against ``<path>.sha256``; returns the digest or raises CheckpointError."""
    path = Path(path)
    sums = checksum_path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone checkpoint {path} does not exist")
    if not sums.is_file():
        raise CheckpointError(f"checksum file {sums} is missing (cannot verify {path.name})")
    fields = sums.read_text().split()
    expected = fields[0].lower() if fields else ""
    digest = sha256_of(path)
    if digest != expected:
        raise CheckpointError(
            f"{path} does not match {sums.name}: sha256 {digest} != {expected or '(empty)'}; "
            "the file is corrupt, truncated or from another training run")
    return digest


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
    card = card or model.card or _legacy_card(model, where)
    _check_card(card, model, where)
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


def _check_card(card: ModelCard, model: ElasticBackbone, where: str) -> None:
    """CheckpointError naming both sides where ``card`` contradicts the backbone's weights."""
    problems = []
    if card.channels != model.in_channels:
        problems.append(f"the card says {card.channels} input channel(s), the stem's weights "
                        f"take {model.in_channels}")
    if card.num_classes != model.num_classes:
        problems.append(f"the card names {card.num_classes} classes, the classifier has "
                        f"{model.num_classes} outputs")
    elif card.classes != model.classes:
        problems.append(f"the card's class names {list(card.classes)} differ from the "
                        f"architecture's {list(model.classes)}")
    if card.resolutions != model.space.resolutions:
        problems.append(f"the card's resolutions {list(card.resolutions)} differ from the "
                        f"space's {list(model.space.resolutions)}")
    if problems:
        raise CheckpointError(f"{where}: the model card contradicts the weights: "
                              + "; ".join(problems))


def backbone_from_checkpoint(ckpt: Any, where: str = "checkpoint") -> ElasticBackbone:
    """Rebuild a backbone from a loaded checkpoint dict (checks format, every shape, and that the
    model card agrees with the weights); the card is kept as ``model.card``."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{where} is not an adaspring backbone checkpoint")
    version = ckpt.get("version")
    if version not in _READABLE_VERSIONS:
        raise CheckpointError(f"{where}: checkpoint version {version!r} is not supported "
                              f"(this package reads {', '.join(map(str, _READABLE_VERSIONS))})")
    try:
        arch = ckpt["arch"]
        space = SearchSpace.from_dict(arch["space"])
        model = ElasticBackbone(space, arch["stage_channels"], int(arch["num_classes"]),
                                arch.get("classes"), int(arch.get("in_channels", 1)),
                                int(arch.get("stem_stride", 1)))
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{where}: bad architecture description: {exc}") from exc
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} has no state_dict")
    expected = model.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise CheckpointError(f"{where}: missing tensors {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{where}: {name} has shape {tuple(state[name].shape)}, "
                                  f"expected {tuple(tensor.shape)}")
    model.load_state_dict(state)
    model.card = _stored_card(ckpt, model, where)
    model.variant_bn = _checked_variant_bn(model, ckpt.get("variant_bn", {}), where)
    model.variant_affine = _checked_variant_affine(model, ckpt.get("variant_affine", {}), where)
    return model.eval()


def _stored_card(ckpt: dict, model: ElasticBackbone, where: str) -> ModelCard:
    """The checkpoint's card, checked against the weights (a version-1 file: the legacy card)."""
    if ckpt["version"] == 1:
        return _legacy_card(model, where)
    if "card" not in ckpt:
        raise CheckpointError(f"{where} has no model card")
    try:
        card = ModelCard.from_dict(ckpt["card"])
    except CardError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    _check_card(card, model, where)
    return card


def _legacy_card(model: ElasticBackbone, where: str) -> ModelCard:
    try:
        return legacy_card(model.space.resolutions, model.classes)
    except CardError as exc:
        raise CheckpointError(f"{where}: no model card describes it: {exc}") from exc


def _checked_variant_bn(model: ElasticBackbone, bank: Any, where: str) -> dict:
    """Validate stored whole-variant BN statistics (optional: a file the profiler has not
    written to has none)."""
    if not isinstance(bank, dict):
        raise CheckpointError(f"{where}: variant_bn must be a mapping")
    units = {n: m for n, m in model.named_modules() if isinstance(m, ElasticConvBN)}
    for config_id, stats in bank.items():
        try:
            CompressionConfig.from_id(config_id, model.space)
        except ConfigError as exc:
            raise CheckpointError(f"{where}: variant_bn: {exc}") from exc
        for name, t in stats.items():
            unit = units.get(name)
            if unit is None or not isinstance(t, Tensor) or t.ndim != 2 or t.shape[0] != 2 \
                    or t.shape[1] > unit.out_channels:
                raise CheckpointError(f"{where}: variant_bn[{config_id}][{name}] is not a "
                                      "(2, C) mean/var tensor of that unit")
    return bank


def _checked_variant_affine(model: ElasticBackbone, bank: Any, where: str) -> dict:
    """Validate stored per-variant BN weight/bias and classifier bias (optional: only variants
    ``tune-variants`` tuned have them). Each belongs to a variant with stored statistics of the
    same units."""
    if not isinstance(bank, dict):
        raise CheckpointError(f"{where}: variant_affine must be a mapping")
    for config_id, params in bank.items():
        what = f"{where}: variant_affine[{config_id}]"
        try:
            CompressionConfig.from_id(config_id, model.space)
        except ConfigError as exc:
            raise CheckpointError(f"{where}: variant_affine: {exc}") from exc
        stats = model.variant_bn.get(config_id)
        if stats is None:
            raise CheckpointError(f"{what}: the variant has no stored BN statistics (variant_bn)"
                                  " to normalise with")
        if not isinstance(params, dict):
            raise CheckpointError(f"{what} must be a mapping of unit name to tensor")
        for name, t in params.items():
            if name == "classifier":
                shape, expected = (tuple(t.shape) if isinstance(t, Tensor) else None,
                                   (model.num_classes,))
            else:
                ref = stats.get(name)
                shape = tuple(t.shape) if isinstance(t, Tensor) else None
                expected = (2, ref.shape[1]) if ref is not None else None
            if expected is None or shape != expected:
                raise CheckpointError(
                    f"{what}[{name}] is not a BN weight/bias tensor of that variant's units "
                    f"(shape {shape}, expected {expected or 'a unit with variant_bn'})")
            if t.dtype != torch.float32 or not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{what}[{name}] holds non-finite or non-float32 values")
    return bank


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
