"""The self-evolutionary backbone: one set of weights, every variant of the search space.

Three tiers, after once-for-all: elastic ops (``operators.ElasticConvBN``, sliced on demand) ->
elastic residual blocks (:class:`ElasticBlock`) -> the network (:class:`ElasticBackbone`) with
``set_active(config)`` (training / elastic forward) and ``materialise(config)`` (a fresh, plain,
BN-folded :class:`CompactNet` that inference runs on; it holds copies, never views). The layout
(blocks, strides, shortcuts, tensor shapes) is ``weights.BackboneArch``'s; the compact copy's
weights are computed by ``compact.materialise`` from the supernet's tensors, the arrays a
torch-free serving process materialises from the checkpoint too.

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

from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaspring_ros.core.model import compact
from adaspring_ros.core.model.card import ModelCard
from adaspring_ros.core.model.compact import RELU, CompactWeights, Conv
from adaspring_ros.core.model.config import (
    DEFAULT_SPACE,
    CompressionConfig,
    SearchSpace,
    StageConfig,
)
from adaspring_ros.core.model.operators import ElasticConvBN, ElasticLinear, channels_for
from adaspring_ros.core.model.weights import BackboneArch, BlockLayout, WeightBank

__all__ = [
    "CompactBlock",
    "CompactNet",
    "ElasticBlock",
    "ElasticBackbone",
    "build_backbone",
]


# -- compact (materialised) network -------------------------------------------------------------
class CompactBlock(nn.Module):
    """A plain residual block: relu(body(x) + shortcut(x))."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class _CopiedConv2d(nn.Conv2d):
    """An nn.Conv2d whose weights are copied in right after construction.

    Skipping the random init keeps ``materialise`` within its time budget (``nn.utils.skip_init``
    costs more here than the init it saves: it builds on the meta device first).
    """

    def reset_parameters(self) -> None:
        pass


class _CopiedLinear(nn.Linear):
    """An nn.Linear whose weights are copied in right after construction (see above)."""

    def reset_parameters(self) -> None:
        pass


def _sequential(layers: Sequence[compact.Layer]) -> nn.Sequential:
    """torch modules holding copies of a layer sequence's arrays."""
    modules: list[nn.Module] = []
    for layer in layers:
        if layer == RELU:
            modules.append(nn.ReLU(inplace=True))
            continue
        out_c, in_per_group, k, _ = layer.weight.shape
        conv = _CopiedConv2d(in_per_group * layer.groups, out_c, k, stride=layer.stride,
                             padding=layer.padding, groups=layer.groups,
                             bias=layer.bias is not None)
        conv.weight.data.copy_(torch.from_numpy(layer.weight))
        if layer.bias is not None:
            conv.bias.data.copy_(torch.from_numpy(layer.bias))
        modules.append(conv)
    return nn.Sequential(*modules)


def _layers(sequence: nn.Sequential) -> tuple[compact.Layer, ...]:
    """The arrays of a compact layer sequence (copies of its current parameters)."""
    layers: list[compact.Layer] = []
    for m in sequence:
        if isinstance(m, nn.ReLU):
            layers.append(RELU)
        elif isinstance(m, nn.Conv2d):
            layers.append(Conv(m.weight.detach().cpu().numpy().copy(),
                               None if m.bias is None else m.bias.detach().cpu().numpy().copy(),
                               m.stride[0], m.padding[0], m.groups))
        else:
            raise TypeError(f"no compact layer for {type(m).__name__}")
    return tuple(layers)


class CompactNet(nn.Module):
    """One materialised variant: a fresh static network with BN folded into its convs.

    Input (N, ``in_channels``, R, R) at ``config.resolution`` (see ``transforms.preprocess``),
    output logits (N, classes). Made from, and turned back into, :class:`compact.CompactWeights`.
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

    @classmethod
    def from_weights(cls, weights: CompactWeights) -> CompactNet:
        """torch modules holding copies of a compact variant's arrays, in eval mode."""
        blocks = [CompactBlock(_sequential(b.body),
                               _sequential(b.shortcut) if b.shortcut is not None else None)
                  for b in weights.blocks]
        out_f, in_f = weights.classifier_weight.shape
        classifier = _CopiedLinear(in_f, out_f)
        classifier.weight.data.copy_(torch.from_numpy(weights.classifier_weight))
        classifier.bias.data.copy_(torch.from_numpy(weights.classifier_bias))
        return cls(_sequential(weights.stem), blocks, classifier, weights.config,
                   weights.storage_bytes, weights.in_channels).eval()

    def to_weights(self) -> CompactWeights:
        """The variant's current parameters as arrays (what the ONNX writer reads)."""
        blocks = tuple(compact.Block(_layers(b.body), _layers(b.shortcut)
                                     if isinstance(b.shortcut, nn.Sequential) else None)
                       for b in self.blocks)
        return CompactWeights(self.config, _layers(self.stem), blocks,
                              self.classifier.weight.detach().cpu().numpy().copy(),
                              self.classifier.bias.detach().cpu().numpy().copy())

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# -- tier 2: elastic residual block -------------------------------------------------------------
class ElasticBlock(nn.Module):
    """A residual block with one unit pair per operator ("conv", "dwsep"): trained jointly.

    body = unit2(relu(unit1(x))) where each unit is a 3x3 (separable) conv + switchable BN; the
    shortcut is the identity, or a 1x1 conv + BN when the block changes stride or channels.
    """

    def __init__(self, layout: BlockLayout, operators: Sequence[str], num_keys: int) -> None:
        super().__init__()
        in_c, out_c, stride = layout.in_channels, layout.out_channels, layout.stride
        self.layout = layout
        self.units = nn.ModuleDict({
            op: nn.ModuleList([
                ElasticConvBN(in_c, out_c, 3, stride, op == "dwsep", num_keys),
                ElasticConvBN(out_c, out_c, 3, 1, op == "dwsep", num_keys),
            ])
            for op in operators
        })
        self.shortcut = (ElasticConvBN(in_c, out_c, 1, stride, False, num_keys)
                         if layout.has_shortcut else None)

    def forward(self, x: Tensor, out_channels: int, stage: StageConfig, key: int,
                stats: Sequence[Tensor | None] = (None, None, None)) -> Tensor:
        first, second = self.units[stage.operator]
        h = F.relu(first(x, out_channels, stage.rank, stage.int8, key, stats[0]))
        h = second(h, out_channels, stage.rank, stage.int8, key, stats[1])
        if self.shortcut is None:
            return F.relu(h + x)
        return F.relu(h + self.shortcut(x, out_channels, 1.0, stage.int8, key, stats[2]))


# -- tier 3: the network ------------------------------------------------------------------------
class ElasticBackbone(nn.Module):
    """ResNet-style elastic backbone: stem, ``space.num_stages`` stages of residual blocks, head.

    Stage ``s`` has ``stage_channels[s]`` channels at full width and ``max(space.depths)`` blocks;
    every stage after the first halves the resolution, and ``stem_stride`` (1, 2 or 4) divides
    the input side before the first stage (``weights.BackboneArch`` says how). Use
    :meth:`set_active` then call the module (training, elastic evaluation) or :meth:`materialise`
    for a compact copy (inference).

    Args:
        space: the search space the backbone serves.
        stage_channels: full-width channels of each stage.
        num_classes: classifier outputs.
        classes: class names (kept in the checkpoint for the perception node).
        in_channels: input channels of the stem (1 grey, 3 colour).
        stem_stride: 1, 2 or 4.
    """

    def __init__(self, space: SearchSpace = DEFAULT_SPACE,
                 stage_channels: Sequence[int] = (16, 32, 64), num_classes: int = 10,
                 classes: Sequence[str] | None = None, in_channels: int = 1,
                 stem_stride: int = 1) -> None:
        super().__init__()
        classes = tuple(classes) if classes is not None else tuple(
            str(i) for i in range(num_classes))
        self.layout = BackboneArch(space, tuple(int(c) for c in stage_channels), num_classes,
                                   tuple(str(c) for c in classes), int(in_channels),
                                   int(stem_stride))
        self.layout.check()
        self.space = space
        self.stage_channels = self.layout.stage_channels
        self.num_classes = num_classes
        self.classes = classes
        self.in_channels = self.layout.in_channels
        self.stem_stride = self.layout.stem_stride
        # The input contract and label space; set from the checkpoint when loaded (None for a
        # network built here: its card is given when it is saved).
        self.card: ModelCard | None = None
        num_keys = self.layout.num_bn_keys
        self.stem = ElasticConvBN(self.in_channels, self.stage_channels[0], 3,
                                  self.layout.stem_conv_stride, False, num_keys)
        self.stages = nn.ModuleList(
            nn.ModuleList(ElasticBlock(block, space.operators, num_keys) for block in stage)
            for stage in self.layout.stages())
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
        return self.layout.to_dict()

    def set_active(self, config: CompressionConfig) -> CompressionConfig:
        """Validate ``config`` against the space and make it the variant ``forward`` runs."""
        self.active = config.validated(self.space)
        return self.active

    def channels(self, config: CompressionConfig) -> list[int]:
        """Channels of each stage for a config."""
        pairs = zip(config.stages, self.stage_channels, strict=True)
        return [channels_for(st.width, c) for st, c in pairs]

    def bn_key(self, stage: StageConfig, resolution: int) -> int:
        """Row of the switchable BN statistics for a stage's width at an input resolution
        (``compact.bn_key``); profiled variants carry their own exact statistics in
        ``variant_bn`` anyway."""
        return compact.bn_key(self.space, stage, resolution)

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
        names = self.stages[stage][block].layout.unit_names(config.stages[stage].operator)
        return [self.unit_stats(config.id, n) for n in names]

    def _classifier_bias(self, config: CompressionConfig) -> Tensor | None:
        return self.variant_affine.get(config.id, {}).get("classifier")

    def with_resolutions(self, resolutions: Sequence[int]) -> ElasticBackbone:
        """A copy of this backbone whose space allows the input sides ``resolutions`` instead:
        the same weights (a convolution does not depend on the input's size), each switchable
        BN row of a (width, side) copied from the nearest side this one was trained at (ties:
        the larger), so training at new sides starts from the nearest statistics. The card
        follows; per-variant statistics and affines are dropped (they belong to variants of
        the old space, and a profile of the new one recomputes them)."""
        space = replace(self.space, resolutions=tuple(int(r) for r in resolutions))
        copy = ElasticBackbone(space, self.stage_channels, self.num_classes, self.classes,
                               self.in_channels, self.stem_stride)
        old = self.space.resolutions
        nearest = [min(range(len(old)), key=lambda i: (abs(old[i] - r), -old[i]))
                   for r in space.resolutions]
        # the new rows in the new keys' order (widths, then sides), read at the old keys
        rows = torch.tensor([self.bn_key(StageConfig(width=w), old[i])
                             for w in space.widths for i in nearest])
        state = {}
        for name, tensor in self.state_dict().items():
            keyed = name.endswith(("running_mean", "running_var", "num_batches_tracked"))
            state[name] = tensor[rows].clone() if keyed else tensor.clone()
        copy.load_state_dict(state)
        copy.card = self.card.with_resolutions(space.resolutions) if self.card else None
        copy.active = CompressionConfig.full(space)
        return copy.train(self.training)

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
    def weight_bank(self, config_id: str | None = None) -> WeightBank:
        """The supernet's current tensors as arrays (views, no copy, for a CPU model); with
        ``config_id``, only that variant's own BN statistics and affine."""
        def arrays(tensors: dict[str, Tensor]) -> dict[str, np.ndarray]:
            return {n: t.detach().cpu().numpy() for n, t in tensors.items()}

        def variants(bank: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, np.ndarray]]:
            ids = bank if config_id is None else [config_id] if config_id in bank else []
            return {cid: arrays(bank[cid]) for cid in ids}

        return WeightBank(self.layout, arrays(self.state_dict()), variants(self.variant_bn),
                          variants(self.variant_affine), card=self.card)

    def materialise(self, config: CompressionConfig) -> CompactNet:
        """A fresh plain network for ``config`` (weights copied; the supernet is not touched),
        on the supernet's device."""
        cfg = config.validated(self.space)
        net = CompactNet.from_weights(compact.materialise(self.weight_bank(cfg.id), cfg))
        return net.to(self.classifier.weight.device)

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
