"""The self-evolutionary backbone: one set of weights, every variant of the search space.

Three tiers, after once-for-all: elastic ops (``operators.ElasticConvBN``, sliced on demand) ->
elastic residual blocks (:class:`ElasticBlock`) -> the network (:class:`ElasticBackbone`) with
``set_active(config)`` (training / elastic forward) and ``materialise(config)`` (a fresh, plain,
BN-folded :class:`CompactNet` that inference runs on; it holds copies, never views).

Per-variant batch norm, in two levels, so that materialising needs no data (it slices weights,
folds BN statistics into the convs and, for low rank, runs a small SVD: ~5 ms):

1. ``variant_bn``: the exact BN statistics of whole variants, by config id, computed offline by
   the profiler on training images for every variant it profiles — i.e. every variant the runtime
   search can pick. This is BN recalibration done once, ahead of time, and stored (a few KB each).
2. otherwise, the row of each switchable BN for the stage's (width, resolution) choice,
   filled during training. Rows average over the upstream variants that shared them, so an
   unprofiled narrow or mixed variant can lose many points with them (docs/benchmarks.md, design
   measurements).

A variant with exact statistics can also carry its own BN scale/shift and classifier bias
(``variant_affine``, by config id, a few KB each): fine-tuned for that variant alone with every
convolution frozen (core/offline/tuning.py). They fold into the convs like the shared ones, so
the materialised variant is as fast; variants without them use the shared affine parameters.

Saving and loading a backbone: core/model/checkpoint.py.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaspring_ros.core.model.card import ModelCard
from adaspring_ros.core.model.config import (
    DEFAULT_SPACE,
    CompressionConfig,
    SearchSpace,
    StageConfig,
)
from adaspring_ros.core.model.operators import ElasticConvBN, ElasticLinear, channels_for

__all__ = [
    "CompactBlock",
    "CompactNet",
    "ElasticBlock",
    "ElasticBackbone",
    "build_backbone",
    "storage_bytes",
    "STEM_STRIDES",
]

STEM_STRIDES = (1, 2, 4)   # what the stem divides the input side by before the first stage


# -- compact (materialised) network -------------------------------------------------------------
class CompactBlock(nn.Module):
    """A plain residual block: relu(body(x) + shortcut(x))."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class CompactNet(nn.Module):
    """One materialised variant: a fresh static network with BN folded into its convs.

    Input (N, ``in_channels``, R, R) at ``config.resolution`` (see ``data.preprocess``), output
    logits (N, classes).
    """

    def __init__(self, stem: nn.Sequential, blocks: Sequence[CompactBlock], classifier: nn.Linear,
                 config: CompressionConfig, storage: int, in_channels: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.classifier = classifier
        self.config = config
        self.resolution = config.resolution
        self.storage_bytes = storage

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def storage_bytes(module: nn.Module, int8: bool) -> int:
    """Bytes to store a compact module's weights.

    float32: 4 bytes per parameter. int8: 1 byte per weight element plus a float32 scale per
    output channel of each weight; biases stay float32.
    """
    total = 0
    for name, p in module.named_parameters():
        if int8 and name.endswith("weight"):
            total += p.numel() + 4 * p.shape[0]
        else:
            total += 4 * p.numel()
    return total


# -- tier 2: elastic residual block -------------------------------------------------------------
class ElasticBlock(nn.Module):
    """A residual block with one unit pair per operator ("conv", "dwsep"): trained jointly.

    body = unit2(relu(unit1(x))) where each unit is a 3x3 (separable) conv + switchable BN; the
    shortcut is the identity, or a 1x1 conv + BN when the block changes stride or channels.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 operators: Sequence[str], num_keys: int) -> None:
        super().__init__()
        self.units = nn.ModuleDict({
            op: nn.ModuleList([
                ElasticConvBN(in_channels, out_channels, 3, stride, op == "dwsep", num_keys),
                ElasticConvBN(out_channels, out_channels, 3, 1, op == "dwsep", num_keys),
            ])
            for op in operators
        })
        self.shortcut = (
            ElasticConvBN(in_channels, out_channels, 1, stride, False, num_keys)
            if stride != 1 or in_channels != out_channels else None
        )

    @staticmethod
    def unit_names(prefix: str, operator: str) -> tuple[str, str, str]:
        """Names (as in ``named_modules``) of the two units and the shortcut one config uses."""
        return (f"{prefix}.units.{operator}.0", f"{prefix}.units.{operator}.1",
                f"{prefix}.shortcut")

    def forward(self, x: Tensor, out_channels: int, stage: StageConfig, key: int,
                stats: Sequence[Tensor | None] = (None, None, None)) -> Tensor:
        first, second = self.units[stage.operator]
        h = F.relu(first(x, out_channels, stage.rank, stage.int8, key, stats[0]))
        h = second(h, out_channels, stage.rank, stage.int8, key, stats[1])
        if self.shortcut is None:
            return F.relu(h + x)
        return F.relu(h + self.shortcut(x, out_channels, 1.0, stage.int8, key, stats[2]))

    def export(self, in_channels: int, out_channels: int, stage: StageConfig, key: int,
               stats: Sequence[Tensor | None] = (None, None, None)) -> CompactBlock:
        first, second = self.units[stage.operator]
        body = nn.Sequential(
            *first.export(in_channels, out_channels, stage.rank, stage.int8, key, stats[0]),
            nn.ReLU(inplace=True),
            *second.export(out_channels, out_channels, stage.rank, stage.int8, key, stats[1]),
        )
        shortcut = None
        if self.shortcut is not None:
            shortcut = self.shortcut.export(in_channels, out_channels, 1.0, stage.int8, key,
                                            stats[2])
        return CompactBlock(body, shortcut)


# -- tier 3: the network ------------------------------------------------------------------------
class ElasticBackbone(nn.Module):
    """ResNet-style elastic backbone: stem, ``space.num_stages`` stages of residual blocks, head.

    Stage ``s`` has ``stage_channels[s]`` channels at full width and ``max(space.depths)`` blocks;
    every stage after the first halves the resolution. ``stem_stride`` divides the input side
    before the first stage, so that a large input costs about what a small one does: 1 (the
    stem keeps the input size), 2 (the stem convolution has stride 2) or 4 (that, and the first
    block of the first stage has stride 2 with a 1x1 shortcut, as every stage's first block
    after it). Use :meth:`set_active` then call the module (training, elastic evaluation) or
    :meth:`materialise` for a compact copy (inference).

    Args:
        space: the search space the backbone serves.
        stage_channels: full-width channels of each stage.
        num_classes: classifier outputs.
        classes: class names (kept in the checkpoint for the perception node).
        in_channels: input channels of the stem (1 grey, 3 colour).
        stem_stride: 1, 2 or 4 (see above).
    """

    def __init__(self, space: SearchSpace = DEFAULT_SPACE,
                 stage_channels: Sequence[int] = (16, 32, 64), num_classes: int = 10,
                 classes: Sequence[str] | None = None, in_channels: int = 1,
                 stem_stride: int = 1) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if stem_stride not in STEM_STRIDES:
            raise ValueError(f"stem_stride must be one of {STEM_STRIDES}, got {stem_stride}")
        if len(stage_channels) != space.num_stages:
            raise ValueError(f"stage_channels has {len(stage_channels)} entries, the space has "
                             f"{space.num_stages} stages")
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names for {num_classes} classes")
        if set(space.operators) - {"conv", "dwsep"}:
            unknown = sorted(set(space.operators) - {"conv", "dwsep"})
            raise ValueError(f"unknown operators {unknown}")
        self.space = space
        self.stage_channels = tuple(int(c) for c in stage_channels)
        self.num_classes = num_classes
        self.classes = tuple(classes) if classes is not None else tuple(
            str(i) for i in range(num_classes))
        self.in_channels = int(in_channels)
        self.stem_stride = int(stem_stride)
        # The input contract and label space; set from the checkpoint when loaded (None for a
        # network built here: its card is given when it is saved).
        self.card: ModelCard | None = None
        num_keys = len(space.widths) * len(space.resolutions)
        self.stem = ElasticConvBN(self.in_channels, self.stage_channels[0], 3,
                                  min(self.stem_stride, 2), False, num_keys)
        stages = []
        in_c = self.stage_channels[0]
        for s, out_c in enumerate(self.stage_channels):
            first_stride = 2 if s > 0 or self.stem_stride == 4 else 1
            blocks = [
                ElasticBlock(in_c if b == 0 else out_c, out_c, first_stride if b == 0 else 1,
                             space.operators, num_keys)
                for b in range(max(space.depths))
            ]
            stages.append(nn.ModuleList(blocks))
            in_c = out_c
        self.stages = nn.ModuleList(stages)
        self.classifier = ElasticLinear(self.stage_channels[-1], num_classes)
        self.active = CompressionConfig.full(space)
        # Exact BN statistics of whole variants, by config id -> unit name -> (2, C) mean/var.
        # Filled offline by the profiler for every profiled variant (the ones the runtime search
        # can pick); other variants use the per-choice rows of the switchable BNs.
        self.variant_bn: dict[str, dict[str, Tensor]] = {}
        # Per-variant tuned affine, by config id -> unit name -> (2, C) BN weight/bias, and
        # "classifier" -> (num_classes,) bias; only for variants that have ``variant_bn`` (it is
        # normalised with those statistics). Filled by offline/tuning.py; others use the shared.
        self.variant_affine: dict[str, dict[str, Tensor]] = {}

    # -- configuration ----------------------------------------------------------------------
    def arch(self) -> dict[str, Any]:
        """Constructor arguments, as stored in the checkpoint."""
        return {"space": self.space.to_dict(), "stage_channels": list(self.stage_channels),
                "num_classes": self.num_classes, "classes": list(self.classes),
                "in_channels": self.in_channels, "stem_stride": self.stem_stride}

    def set_active(self, config: CompressionConfig) -> CompressionConfig:
        """Validate ``config`` against the space and make it the variant ``forward`` runs."""
        self.active = config.validated(self.space)
        return self.active

    def channels(self, config: CompressionConfig) -> list[int]:
        """Channels of each stage for a config."""
        pairs = zip(config.stages, self.stage_channels, strict=True)
        return [channels_for(st.width, c) for st, c in pairs]

    def bn_key(self, stage: StageConfig, resolution: int) -> int:
        """Row of the switchable BN statistics for a stage's width at an input resolution.

        Rank and int8 are post-training operators (applied to trained weights, never sampled in
        training), so they share the row of their full-precision, full-rank variant; profiled
        variants carry their own exact statistics in ``variant_bn`` anyway.
        """
        sp = self.space
        return sp.widths.index(stage.width) * len(sp.resolutions) + sp.resolutions.index(
            resolution)

    def unit_stats(self, config_id: str, name: str) -> Tensor | None:
        """A unit's stored statistics for a variant: (2, C) mean/var, or (4, C) with the
        variant's own BN weight/bias appended when it has them; None if none stored."""
        stats = self.variant_bn.get(config_id, {}).get(name)
        affine = self.variant_affine.get(config_id, {}).get(name)
        if stats is None or affine is None:
            return stats
        return torch.cat([stats, affine])

    def _stats(self, config: CompressionConfig, stage: int, block: int) -> list[Tensor | None]:
        """Stored whole-variant BN statistics for one block's units (Nones if none stored)."""
        names = ElasticBlock.unit_names(f"stages.{stage}.{block}",
                                        config.stages[stage].operator)
        return [self.unit_stats(config.id, n) for n in names]

    def _classifier_bias(self, config: CompressionConfig) -> Tensor | None:
        return self.variant_affine.get(config.id, {}).get("classifier")

    # -- elastic forward --------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        cfg = self.active
        if x.shape[-1] != cfg.resolution or x.shape[-2] != cfg.resolution:
            raise ValueError(f"input is {tuple(x.shape[-2:])}, the active variant expects "
                             f"{cfg.resolution}x{cfg.resolution}")
        widths = self.channels(cfg)
        st0 = cfg.stages[0]
        x = F.relu(self.stem(x, widths[0], 1.0, st0.int8, self.bn_key(st0, cfg.resolution),
                             self.unit_stats(cfg.id, "stem")))
        for s, (blocks, stage, c) in enumerate(zip(self.stages, cfg.stages, widths,
                                                   strict=True)):
            key = self.bn_key(stage, cfg.resolution)
            for b, block in enumerate(blocks[:stage.depth]):
                x = block(x, c, stage, key, self._stats(cfg, s, b))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x, cfg.stages[-1].int8, self._classifier_bias(cfg))

    # -- materialise ------------------------------------------------------------------------
    @torch.no_grad()
    def materialise(self, config: CompressionConfig) -> CompactNet:
        """A fresh plain network for ``config`` (weights copied; the supernet is not touched)."""
        cfg = config.validated(self.space)
        widths = self.channels(cfg)
        st0 = cfg.stages[0]
        stem = nn.Sequential(
            *self.stem.export(self.in_channels, widths[0], 1.0, st0.int8,
                              self.bn_key(st0, cfg.resolution), self.unit_stats(cfg.id, "stem")),
            nn.ReLU(inplace=True),
        )
        blocks, in_c = [], widths[0]
        for s, (s_blocks, stage, c) in enumerate(zip(self.stages, cfg.stages, widths,
                                                     strict=True)):
            key = self.bn_key(stage, cfg.resolution)
            for b, block in enumerate(s_blocks[:stage.depth]):
                blocks.append(block.export(in_c, c, stage, key, self._stats(cfg, s, b)))
                in_c = c
        classifier = self.classifier.export(in_c, cfg.stages[-1].int8,
                                            self._classifier_bias(cfg))
        storage = storage_bytes(stem, st0.int8) + storage_bytes(classifier, cfg.stages[-1].int8)
        b = 0
        for stage in cfg.stages:
            for block in blocks[b:b + stage.depth]:
                storage += storage_bytes(block, stage.int8)
            b += stage.depth
        net = CompactNet(stem, blocks, classifier, cfg, storage, self.in_channels)
        return net.eval()

    @torch.no_grad()
    def zero_init_residual(self) -> None:
        """Set the scale of each block's last BN to zero, in every operator's units: a fresh
        network then starts with every residual block the identity of its shortcut, the deep
        variants computing what the shallow ones do (Goyal et al. 2017; BigNAS uses it for
        weight-shared training). For a network about to be trained from scratch only."""
        for stage in self.stages:
            for block in stage:
                for _, second in block.units.values():
                    nn.init.zeros_(second.bn.weight)

    # -- importance ordering ----------------------------------------------------------------
    @torch.no_grad()
    def reorder_channels(self) -> None:
        """Sort every channel dimension by importance, most important first, in place.

        Run once after a full-width warm-up, before the narrow variants are trained, so that a
        width ratio keeps the strongest filters. The function computed by the full network is
        unchanged (it is a pure permutation).
        """
        n = len(self.stages)
        for s in range(n):
            # Hidden channels of each block (between its two units), one order per operator.
            for block in self.stages[s]:
                for first, second in block.units.values():
                    order = torch.argsort(first.output_importance(), descending=True)
                    first.permute_outputs(order)
                    second.permute_inputs(order)
            # The stage's residual stream: everything that writes or reads it shares one order.
            writers: list[ElasticConvBN] = [self.stem] if s == 0 else []
            readers: list[Any] = []
            for block in self.stages[s]:
                for first, second in block.units.values():
                    writers.append(second)
                    if block.shortcut is None:       # this block reads the stage's stream
                        readers.append(first)
                if block.shortcut is not None:
                    writers.append(block.shortcut)
            if s + 1 < n:
                nxt = self.stages[s + 1][0]
                readers += [units[0] for units in nxt.units.values()]
                readers += [nxt.shortcut] if nxt.shortcut is not None else []
            else:
                readers.append(self.classifier)
            importance = sum(w.output_importance() / w.output_importance().mean()
                             for w in writers)
            order = torch.argsort(importance, descending=True)
            for w in writers:
                w.permute_outputs(order)
            for r in readers:
                r.permute_inputs(order)


def build_backbone(space: SearchSpace = DEFAULT_SPACE,
                   stage_channels: Sequence[int] = (16, 32, 64),
                   classes: Sequence[str] | None = None,
                   in_channels: int = 1, stem_stride: int = 1) -> ElasticBackbone:
    """The default backbone for Fashion-MNIST-sized inputs (10 classes unless ``classes``,
    grey unless ``in_channels``, the stem at stride 1 unless ``stem_stride``)."""
    num_classes = len(classes) if classes is not None else 10
    return ElasticBackbone(space, stage_channels, num_classes, classes, in_channels, stem_stride)
