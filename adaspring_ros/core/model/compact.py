"""Materialise a variant as numpy arrays: the compact network every engine serves.

:func:`materialise` reads a :class:`~adaspring_ros.core.model.weights.WeightBank` and returns a
:class:`CompactWeights`: plain convolutions with batch norm folded in, for one config. Per unit
it slices the supernet's weights to the config's channels, factorises them (rank), quantises
them (int8), and folds the BN that belongs to the variant:

1. the variant's own statistics (``variant_bn``, measured by the profiler for every variant the
   runtime search can pick), with its own tuned scale/shift where ``variant_affine`` has them
   (and the classifier bias);
2. otherwise the row of each switchable BN for the stage's (width, resolution) choice.

Every array is new (never a view of the bank), so materialising any variant after any other
gives bit-identical weights. ``ElasticBackbone.materialise`` builds its torch ``CompactNet`` from
these arrays and ``onnx_graph`` writes them, so torch, ONNX Runtime and a torch-free serving
process serve the same numbers. The weight transforms here (int8, low rank) are the ones the
elastic forward of ``operators`` applies while training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from adaspring_ros.core.model.config import CompressionConfig, SearchSpace, StageConfig
from adaspring_ros.core.model.weights import WeightBank

__all__ = ["BN_EPS", "RELU", "channels_for", "rank_for", "bn_key", "quantise_int8",
           "dequantise_int8", "low_rank_factors", "Conv", "Block", "CompactWeights",
           "as_compact", "materialise"]

BN_EPS = 1e-5   # every switchable BN's epsilon
RELU = "relu"   # a ReLU in a layer sequence


# -- weight transforms ---------------------------------------------------------------------------
def channels_for(width: float, max_channels: int) -> int:
    """Channels kept by a width ratio (at least one)."""
    return max(1, int(round(width * max_channels)))


def rank_for(ratio: float, out_channels: int, fan_in: int) -> int:
    """Kept rank of an (out, fan_in) weight matrix at a rank ratio; >= 1."""
    return max(1, int(round(ratio * min(out_channels, fan_in))))


def bn_key(space: SearchSpace, stage: StageConfig, resolution: int) -> int:
    """Row of the switchable BN statistics for a stage's width at an input resolution.

    Rank and int8 are post-training operators (applied to trained weights, never sampled in
    training), so they share the row of their full-precision, full-rank variant.
    """
    return space.widths.index(stage.width) * len(space.resolutions) + space.resolutions.index(
        resolution)


def quantise_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8: (q int8 same shape, scale float32 (out,)).

    ``q * scale`` (broadcast over dim 0) reconstructs the weight; the error of every element is
    at most ``scale / 2`` = max|w_row| / 254. Quantising such a reconstruction again gives the
    same grid back (the ONNX writer relies on it for BN-folded int8 weights).
    """
    flat = np.asarray(weight, np.float32).reshape(weight.shape[0], -1)
    scale = np.maximum(np.abs(flat).max(axis=1), np.float32(1e-12)) / np.float32(127.0)
    q = np.clip(np.rint(flat / scale[:, None]), -127, 127).astype(np.int8)
    return q.reshape(weight.shape), scale.astype(np.float32)


def dequantise_int8(weight: np.ndarray) -> np.ndarray:
    """The weight as int8 stores it: quantised and scaled back (float32)."""
    q, scale = quantise_int8(weight)
    return (q.astype(np.float32).reshape(q.shape[0], -1) * scale[:, None]).reshape(q.shape)


def low_rank_factors(matrix: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-r factorisation of an (out, fan_in) matrix: (first (r, fan_in), second (out, r)).

    ``second @ first`` is the truncated SVD (Eckart-Young), computed as a projection on the
    top-r eigenvectors of the small Gram matrix (min(out, fan_in) square, in float64): the same
    result as a full SVD, about 10x faster for these shapes. Output-channel scaling (BN folding)
    stays per row of ``second``.

    Each eigenvector's sign is fixed (its largest component positive): an eigensolver may
    return either sign, and LAPACK builds differ (MKL and OpenBLAS disagree on about a quarter
    of these vectors). The product does not care, but the activations between the two factors
    do, and a static int8 graph quantises them with ranges calibrated once, in the profile
    table: the factors must come out the same on every machine.
    """
    m = np.asarray(matrix, np.float32)
    out_channels, fan_in = m.shape
    r = rank_for(ratio, out_channels, fan_in)
    m64 = m.astype(np.float64)
    wide = out_channels <= fan_in
    gram = m64 @ m64.T if wide else m64.T @ m64
    basis = np.linalg.eigh(gram)[1][:, -r:][:, ::-1]
    basis = basis * np.where(basis[np.abs(basis).argmax(0), np.arange(r)] < 0, -1.0, 1.0)
    basis = np.ascontiguousarray(basis, np.float32)
    if wide:   # U_r U_r^T M, with U_r the top left singular vectors
        first, second = basis.T @ m, basis
    else:      # M V_r V_r^T, with V_r the top right singular vectors
        first, second = basis.T, m @ basis
    return np.ascontiguousarray(first), np.ascontiguousarray(second)


# -- the compact network -------------------------------------------------------------------------
@dataclass(frozen=True)
class Conv:
    """A plain convolution: weight (out, in / groups, k, k), optional bias (out,)."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: int = 1
    padding: int = 0
    groups: int = 1


Layer = Union[Conv, str]  # a Conv or RELU


@dataclass(frozen=True)
class Block:
    """A residual block: relu(body(x) + shortcut(x)); no shortcut layers = the identity."""

    body: tuple[Layer, ...]
    shortcut: tuple[Layer, ...] | None = None


@dataclass(frozen=True)
class CompactWeights:
    """One materialised variant as arrays: stem, residual blocks, global average pool,
    linear classifier. Input (N, in_channels, R, R) at ``config.resolution``."""

    config: CompressionConfig
    stem: tuple[Layer, ...]
    blocks: tuple[Block, ...]
    classifier_weight: np.ndarray
    classifier_bias: np.ndarray

    @property
    def in_channels(self) -> int:
        first = self.stem[0]
        return int(first.weight.shape[1] * first.groups)

    @property
    def num_classes(self) -> int:
        return int(self.classifier_weight.shape[0])

    @property
    def block_stages(self) -> list[int]:
        """The stage of each block, in order."""
        return [s for s, stage in enumerate(self.config.stages) for _ in range(stage.depth)]

    @property
    def storage_bytes(self) -> int:
        """Bytes to store the weights: float32, or for an int8 stage 1 byte per weight element
        plus a float32 scale per output channel; biases stay float32."""
        int8 = [st.int8 for st in self.config.stages]

        def size(layers: Sequence[Layer], q: bool) -> int:
            total = 0
            for layer in layers:
                if isinstance(layer, Conv):
                    w = layer.weight
                    total += w.size + 4 * w.shape[0] if q else 4 * w.size
                    total += 4 * layer.bias.size if layer.bias is not None else 0
            return total

        total = size(self.stem, int8[0]) + 4 * self.classifier_bias.size + (
            self.classifier_weight.size + 4 * self.num_classes if int8[-1]
            else 4 * self.classifier_weight.size)
        for block, s in zip(self.blocks, self.block_stages, strict=True):
            total += size(block.body, int8[s]) + size(block.shortcut or (), int8[s])
        return total


def as_compact(variant: Any) -> CompactWeights:
    """``variant`` itself, or the arrays of a torch ``CompactNet`` (its ``to_weights()``)."""
    return variant if isinstance(variant, CompactWeights) else variant.to_weights()


def _folded_bn(bank: WeightBank, name: str, out_c: int, key: int, config_id: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) of unit ``name``'s eval-mode BN for the variant, first ``out_c`` channels."""
    stats = bank.variant_bn.get(config_id, {}).get(name)
    affine = bank.variant_affine.get(config_id, {}).get(name) if stats is not None else None
    if stats is None:
        mean = bank.state[f"{name}.bn.running_mean"][key, :out_c]
        var = bank.state[f"{name}.bn.running_var"][key, :out_c]
    else:
        mean, var = stats[0], stats[1]
    if affine is None:
        weight = bank.state[f"{name}.bn.weight"][:out_c]
        bias = bank.state[f"{name}.bn.bias"][:out_c]
    else:
        weight, bias = affine[0], affine[1]
    scale = weight / np.sqrt(var + BN_EPS)
    return scale, bias - mean * scale


def _unit(bank: WeightBank, name: str, in_c: int, out_c: int, rank: float, int8: bool,
          stride: int, key: int, config_id: str) -> list[Conv]:
    """The plain convs of one unit (conv or depthwise-separable conv + BN) for one choice."""
    weight = bank.state[f"{name}.weight"]
    depthwise = bank.state.get(f"{name}.depthwise")
    kernel = (depthwise if depthwise is not None else weight).shape[-1]
    scale, shift = _folded_bn(bank, name, out_c, key, config_id)
    layers = []
    if depthwise is not None:
        dw = depthwise[:in_c]
        layers.append(Conv(dequantise_int8(dw) if int8 else dw.copy(), None, stride,
                           kernel // 2, groups=in_c))
    w = weight[:out_c, :in_c]
    if rank >= 1.0:
        factors = [dequantise_int8(w) if int8 else w]
    else:
        first, second = low_rank_factors(w.reshape(out_c, -1), rank)
        if int8:
            first, second = dequantise_int8(first), dequantise_int8(second)
        factors = [first.reshape(-1, in_c, *w.shape[2:]), second[:, :, None, None]]
    for i, f in enumerate(factors):
        last, spatial = i == len(factors) - 1, i == 0 and depthwise is None
        layers.append(Conv(f * scale[:, None, None, None] if last else f.copy(),
                           shift.astype(np.float32) if last else None,
                           stride if spatial else 1, kernel // 2 if spatial else 0))
    return layers


def materialise(bank: WeightBank, config: CompressionConfig) -> CompactWeights:
    """The compact network of ``config`` (validated against the bank's space)."""
    cfg = config.validated(bank.space)
    arch, cid = bank.arch, cfg.id
    widths = [channels_for(st.width, c) for st, c in zip(cfg.stages, arch.stage_channels,
                                                         strict=True)]
    st0 = cfg.stages[0]
    stem = (*_unit(bank, "stem", arch.in_channels, widths[0], 1.0, st0.int8,
                   arch.stem_conv_stride, bn_key(bank.space, st0, cfg.resolution), cid), RELU)
    blocks, in_c = [], widths[0]
    for layouts, stage, c in zip(arch.stages(), cfg.stages, widths, strict=True):
        key = bn_key(bank.space, stage, cfg.resolution)
        for block in layouts[:stage.depth]:
            first, second, short = block.unit_names(stage.operator)
            body = (*_unit(bank, first, in_c, c, stage.rank, stage.int8, block.stride, key, cid),
                    RELU,
                    *_unit(bank, second, c, c, stage.rank, stage.int8, 1, key, cid))
            shortcut = None
            if block.has_shortcut:
                shortcut = tuple(_unit(bank, short, in_c, c, 1.0, stage.int8, block.stride, key,
                                       cid))
            blocks.append(Block(body, shortcut))
            in_c = c
    weight = bank.state["classifier.weight"][:, :in_c]
    bias = bank.variant_affine.get(cid, {}).get("classifier", bank.state["classifier.bias"])
    return CompactWeights(cfg, stem, tuple(blocks),
                          dequantise_int8(weight) if cfg.stages[-1].int8 else weight.copy(),
                          np.array(bias, np.float32))
