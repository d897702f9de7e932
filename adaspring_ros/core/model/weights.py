"""The backbone as numpy arrays: its layout, and a checked bank of its trained tensors.

:class:`BackboneArch` is the architecture a checkpoint records (search space, stage channels,
classes, input channels) and the one place that says what follows from it: the residual blocks
of each stage (stride, channels, whether a 1x1 shortcut is needed), the units (conv + switchable
BN) they hold, and the shape of every tensor. ``supernet.ElasticBackbone`` builds its modules
from it; :func:`bank_from_checkpoint` checks a loaded checkpoint against it.

A :class:`WeightBank` is a checkpoint's content as numpy arrays: the supernet's state, the exact
BN statistics of the profiled variants, the tuned BN affine of some of them, and the model card
(``card.py``: the input contract and label space), checked against the weights. ``compact``
materialises variants from it, so a serving process needs neither torch nor the supernet's
modules. Torch's checkpoint loader and the torch-free reader (``checkpoint_reader``) both go
through :func:`bank_from_checkpoint`: one set of checks and one set of messages. Version-1
files predate model cards and get :func:`~adaspring_ros.core.model.card.legacy_card`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaspring_ros.core.model.card import CardError, ModelCard, legacy_card
from adaspring_ros.core.model.config import CompressionConfig, ConfigError, SearchSpace

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "READABLE_VERSIONS", "CheckpointError",
           "BlockLayout", "BackboneArch", "WeightBank", "check_card", "arch_legacy_card",
           "bank_from_checkpoint", "STEM_STRIDES"]

CHECKPOINT_FORMAT = "adaspring-backbone"
CHECKPOINT_VERSION = 2   # written; version 1 (no model card) is still read
READABLE_VERSIONS = (1, CHECKPOINT_VERSION)
KERNEL_SIZE = 3  # every unit's spatial kernel (the shortcut's is 1)
STEM_STRIDES = (1, 2, 4)   # what the stem divides the input side by before the first stage


class CheckpointError(ValueError):
    """A backbone checkpoint that is missing, corrupt, or does not match its checksum/shape."""


@dataclass(frozen=True)
class BlockLayout:
    """One residual block of the supernet: where it is and what it maps."""

    stage: int
    index: int
    in_channels: int
    out_channels: int
    stride: int

    @property
    def name(self) -> str:
        return f"stages.{self.stage}.{self.index}"

    @property
    def has_shortcut(self) -> bool:
        """A 1x1 conv + BN shortcut where the block changes stride or channels."""
        return self.stride != 1 or self.in_channels != self.out_channels

    def unit_names(self, operator: str) -> tuple[str, str, str]:
        """Names of the two units of ``operator`` and of the shortcut (as in named_modules)."""
        return (f"{self.name}.units.{operator}.0", f"{self.name}.units.{operator}.1",
                f"{self.name}.shortcut")


@dataclass(frozen=True)
class BackboneArch:
    """The architecture of a backbone: every stage has ``max(space.depths)`` blocks, the first
    block of every stage after the first halves the resolution.

    ``stem_stride`` divides the input side before the first stage, so that a large input costs
    about what a small one does: 1 (the stem keeps the input size), 2 (the stem convolution has
    stride 2) or 4 (that, and the first block of the first stage has stride 2 with a 1x1
    shortcut, as every later stage's first block)."""

    space: SearchSpace
    stage_channels: tuple[int, ...]
    num_classes: int
    classes: tuple[str, ...]
    in_channels: int = 1
    stem_stride: int = 1

    @classmethod
    def from_dict(cls, arch: Mapping[str, Any]) -> BackboneArch:
        """The ``arch`` entry of a checkpoint; ValueError/KeyError/TypeError if malformed."""
        space = SearchSpace.from_dict(arch["space"])
        channels = tuple(int(c) for c in arch["stage_channels"])
        num_classes = int(arch["num_classes"])
        classes = arch.get("classes")
        classes = tuple(str(c) for c in classes) if classes is not None else tuple(
            str(i) for i in range(num_classes))
        result = cls(space, channels, num_classes, classes, int(arch.get("in_channels", 1)),
                     int(arch.get("stem_stride", 1)))
        result.check()
        return result

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space.to_dict(), "stage_channels": list(self.stage_channels),
                "num_classes": self.num_classes, "classes": list(self.classes),
                "in_channels": self.in_channels, "stem_stride": self.stem_stride}

    def check(self) -> None:
        """ValueError unless the parts fit together."""
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if self.stem_stride not in STEM_STRIDES:
            raise ValueError(f"stem_stride must be one of {STEM_STRIDES}, got {self.stem_stride}")
        if len(self.stage_channels) != self.space.num_stages:
            raise ValueError(f"stage_channels has {len(self.stage_channels)} entries, the space "
                             f"has {self.space.num_stages} stages")
        if len(self.classes) != self.num_classes:
            raise ValueError(f"{len(self.classes)} class names for {self.num_classes} classes")
        unknown = sorted(set(self.space.operators) - {"conv", "dwsep"})
        if unknown:
            raise ValueError(f"unknown operators {unknown}")

    @property
    def num_bn_keys(self) -> int:
        """Rows of every switchable BN: one per (width, resolution) choice."""
        return len(self.space.widths) * len(self.space.resolutions)

    @property
    def stem_conv_stride(self) -> int:
        """The stride of the stem's convolution (a stem stride of 4 is 2 here and 2 in the
        first block)."""
        return min(self.stem_stride, 2)

    def stages(self) -> list[list[BlockLayout]]:
        """The blocks of every stage, at full width."""
        out, in_c = [], self.stage_channels[0]
        for s, out_c in enumerate(self.stage_channels):
            first_stride = 2 if s > 0 or self.stem_stride == 4 else 1
            out.append([BlockLayout(s, b, in_c if b == 0 else out_c, out_c,
                                    first_stride if b == 0 else 1)
                        for b in range(max(self.space.depths))])
            in_c = out_c
        return out

    def units(self) -> dict[str, tuple[int, int, int, bool]]:
        """Every conv + BN unit: name -> (in channels, out channels, kernel, separable)."""
        units = {"stem": (self.in_channels, self.stage_channels[0], KERNEL_SIZE, False)}
        for stage in self.stages():
            for block in stage:
                for op in self.space.operators:
                    first, second, _ = block.unit_names(op)
                    units[first] = (block.in_channels, block.out_channels, KERNEL_SIZE,
                                    op == "dwsep")
                    units[second] = (block.out_channels, block.out_channels, KERNEL_SIZE,
                                     op == "dwsep")
                if block.has_shortcut:
                    units[f"{block.name}.shortcut"] = (block.in_channels, block.out_channels, 1,
                                                       False)
        return units

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every tensor of the supernet's state_dict, by name."""
        keys, shapes = self.num_bn_keys, {}
        for name, (in_c, out_c, k, separable) in self.units().items():
            if separable:
                shapes[f"{name}.depthwise"] = (in_c, 1, k, k)
                shapes[f"{name}.weight"] = (out_c, in_c, 1, 1)
            else:
                shapes[f"{name}.weight"] = (out_c, in_c, k, k)
            shapes.update({f"{name}.bn.weight": (out_c,), f"{name}.bn.bias": (out_c,),
                           f"{name}.bn.running_mean": (keys, out_c),
                           f"{name}.bn.running_var": (keys, out_c),
                           f"{name}.bn.num_batches_tracked": (keys,)})
        shapes["classifier.weight"] = (self.num_classes, self.stage_channels[-1])
        shapes["classifier.bias"] = (self.num_classes,)
        return shapes


@dataclass
class WeightBank:
    """A backbone's trained tensors as arrays (float32 unless noted), checked against its arch.

    ``variant_bn``: config id -> unit name -> (2, C) mean/var of that whole variant.
    ``variant_affine``: config id -> unit name -> (2, C) BN weight/bias tuned for that variant,
    and "classifier" -> (num_classes,) bias; only for variants with ``variant_bn``.
    ``card``: the model card (None where none is known: a supernet built here, not yet saved).
    """

    arch: BackboneArch
    state: dict[str, np.ndarray]
    variant_bn: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    variant_affine: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    sha256: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    card: ModelCard | None = None

    @property
    def space(self) -> SearchSpace:
        return self.arch.space

    @property
    def classes(self) -> tuple[str, ...]:
        return self.arch.classes


def check_card(card: ModelCard, arch: BackboneArch, where: str) -> None:
    """CheckpointError naming both sides where ``card`` contradicts the backbone's weights: the
    stem's input channels, the classifier's outputs and class names, the space's resolutions."""
    problems = []
    if card.channels != arch.in_channels:
        problems.append(f"the card says {card.channels} input channel(s), the stem's weights "
                        f"take {arch.in_channels}")
    if card.num_classes != arch.num_classes:
        problems.append(f"the card names {card.num_classes} classes, the classifier has "
                        f"{arch.num_classes} outputs")
    elif card.classes != arch.classes:
        problems.append(f"the card's class names {list(card.classes)} differ from the "
                        f"architecture's {list(arch.classes)}")
    if card.resolutions != arch.space.resolutions:
        problems.append(f"the card's resolutions {list(card.resolutions)} differ from the "
                        f"space's {list(arch.space.resolutions)}")
    if problems:
        raise CheckpointError(f"{where}: the model card contradicts the weights: "
                              + "; ".join(problems))


def arch_legacy_card(arch: BackboneArch, where: str) -> ModelCard:
    """The legacy grey card at the backbone's own resolutions and class names, for a file
    written before cards (or a backbone saved without one); CheckpointError if none fits."""
    try:
        return legacy_card(arch.space.resolutions, arch.classes)
    except CardError as exc:
        raise CheckpointError(f"{where}: no model card describes it: {exc}") from exc


def _stored_card(ckpt: dict, arch: BackboneArch, where: str) -> ModelCard:
    """The checkpoint's card, checked against the weights (a version-1 file: the legacy card)."""
    if ckpt["version"] == 1:
        return arch_legacy_card(arch, where)
    if "card" not in ckpt:
        raise CheckpointError(f"{where} has no model card")
    try:
        card = ModelCard.from_dict(ckpt["card"])
    except CardError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    check_card(card, arch, where)
    return card


def bank_from_checkpoint(ckpt: Any, where: str = "checkpoint") -> WeightBank:
    """Check a loaded checkpoint dict whose tensors are numpy arrays; CheckpointError naming the
    first problem (format, version, architecture, a missing/unexpected/misshapen tensor, bad
    per-variant statistics or affine, a model card that contradicts the weights)."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{where} is not an adaspring backbone checkpoint")
    version = ckpt.get("version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"{where}: checkpoint version {version!r} is not supported "
                              f"(this package reads {', '.join(map(str, READABLE_VERSIONS))})")
    try:
        arch = BackboneArch.from_dict(ckpt["arch"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{where}: bad architecture description: {exc}") from exc
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} has no state_dict")
    expected = arch.state_shapes()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise CheckpointError(f"{where}: missing tensors {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    for name, shape in expected.items():
        got = tuple(getattr(state[name], "shape", ()))
        if not isinstance(state[name], np.ndarray) or got != shape:
            raise CheckpointError(f"{where}: {name} has shape {got}, expected {shape}")
    card = _stored_card(ckpt, arch, where)
    units = arch.units()
    variant_bn = _checked_variant_bn(arch, units, ckpt.get("variant_bn", {}), where)
    variant_affine = _checked_variant_affine(arch, variant_bn, ckpt.get("variant_affine", {}),
                                             where)
    meta = ckpt.get("meta", {})
    return WeightBank(arch, dict(state), variant_bn, variant_affine,
                      meta=dict(meta) if isinstance(meta, dict) else {}, card=card)


def _config_id(config_id: Any, space: SearchSpace, what: str) -> None:
    try:
        CompressionConfig.from_id(config_id, space)
    except ConfigError as exc:
        raise CheckpointError(f"{what}: {exc}") from exc


def _checked_variant_bn(arch: BackboneArch, units: dict, bank: Any, where: str) -> dict:
    """Validate stored whole-variant BN statistics (optional: a file the profiler has not
    written to has none)."""
    if not isinstance(bank, dict):
        raise CheckpointError(f"{where}: variant_bn must be a mapping")
    for config_id, stats in bank.items():
        _config_id(config_id, arch.space, f"{where}: variant_bn")
        if not isinstance(stats, dict):
            raise CheckpointError(f"{where}: variant_bn[{config_id}] must be a mapping of unit "
                                  "name to tensor")
        for name, t in stats.items():
            unit = units.get(name)
            if unit is None or not isinstance(t, np.ndarray) or t.ndim != 2 or t.shape[0] != 2 \
                    or t.shape[1] > unit[1]:
                raise CheckpointError(f"{where}: variant_bn[{config_id}][{name}] is not a "
                                      "(2, C) mean/var tensor of that unit")
    return bank


def _checked_variant_affine(arch: BackboneArch, variant_bn: dict, bank: Any, where: str) -> dict:
    """Validate stored per-variant BN weight/bias and classifier bias (optional: only variants
    ``tune-variants`` tuned have them). Each belongs to a variant with stored statistics of the
    same units."""
    if not isinstance(bank, dict):
        raise CheckpointError(f"{where}: variant_affine must be a mapping")
    for config_id, params in bank.items():
        what = f"{where}: variant_affine[{config_id}]"
        _config_id(config_id, arch.space, f"{where}: variant_affine")
        stats = variant_bn.get(config_id)
        if stats is None:
            raise CheckpointError(f"{what}: the variant has no stored BN statistics (variant_bn)"
                                  " to normalise with")
        if not isinstance(params, dict):
            raise CheckpointError(f"{what} must be a mapping of unit name to tensor")
        for name, t in params.items():
            shape = tuple(t.shape) if isinstance(t, np.ndarray) else None
            if name == "classifier":
                expected = (arch.num_classes,)
            else:
                ref = stats.get(name)
                expected = (2, ref.shape[1]) if ref is not None else None
            if expected is None or shape != expected:
                raise CheckpointError(
                    f"{what}[{name}] is not a BN weight/bias tensor of that variant's units "
                    f"(shape {shape}, expected {expected or 'a unit with variant_bn'})")
            if t.dtype != np.float32 or not bool(np.isfinite(t).all()):
                raise CheckpointError(f"{what}[{name}] holds non-finite or non-float32 values")
    return bank
