"""The catalogue Δ of compression operators, as code.

Each operator changes one stage of the backbone (or, for the resolution, its input):

=========== ============================================================================ ==========
operator    what it does to the stage                                                    choices
=========== ============================================================================ ==========
width       keep the first ``width`` fraction of the stage's channels; channels are      0.25..1.0
            ordered by importance (L1 norm of their filters times |BN gamma|, see
            ``ElasticBackbone.reorder_channels``) after a full-width warm-up, so a narrow
            variant keeps the best filters
depth       run the first ``depth`` residual blocks of the stage, skip the rest          1, 2, 3
operator    "conv": standard 3x3 convolutions; "dwsep": depthwise 3x3 + pointwise 1x1,  dwsep, conv
            a second set of weights per block trained jointly with the first
rank        truncated SVD of each (sliced) conv weight, kept rank = ratio x full rank;   0.25..1.0
            the compact copy runs it as two smaller convs (k x k to r, then 1x1 to out)
int8        per-output-channel symmetric weight quantisation, post-training: applied     True/False
            to the trained weights, never sampled in training
resolution  input resized to R x R by ``transforms.preprocess``                         16..28
=========== ============================================================================ ==========

In the torch reference engine int8 is a *storage / memory* operator: eager PyTorch has no fast
int8 conv for these tiny layers, so the compact module dequantises once when it is materialised
and runs float32 convolutions (weights stored as 1 byte plus a float32 scale per output channel).
The ONNX Runtime engine (core/model/engine.py) runs the same variants in int8, with the activation
ranges of the profile table; each engine's table reports what the variant costs there.

Every operator is reversible: the supernet's weights are only ever read (sliced, factorised,
quantised into *new* tensors), so materialising any variant after any other gives bit-identical
weights to materialising it first.

Tier 1 of the elastic network lives here: :class:`ElasticConvBN` (one max-size conv or separable
conv with switchable batch-norm statistics) and :class:`ElasticLinear`, both sliced on demand for
the elastic forward (training, and the exact BN statistics of a variant). The compact copy of a
variant is made from the same weights, with the same transforms, in numpy (``compact``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaspring_ros.core.model import compact
from adaspring_ros.core.model.compact import BN_EPS, channels_for, rank_for

__all__ = [
    "channels_for",
    "rank_for",
    "quantise_int8",
    "fake_quant_int8",
    "low_rank_factors",
    "SwitchableBatchNorm2d",
    "ElasticConvBN",
    "ElasticLinear",
]


# -- weight transforms of the elastic forward (the compact copy applies them in ``compact``) ----
def quantise_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-channel symmetric int8: returns (q int8 same shape, scale float (out,)).

    ``q * scale`` (broadcast over dim 0) reconstructs the weight; the error of every element is
    at most ``scale / 2`` = max|w_row| / 254.
    """
    flat = weight.detach().reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(weight.shape), scale


def _dequantised(weight: Tensor) -> Tensor:
    q, scale = quantise_int8(weight)
    return (q.to(weight.dtype).reshape(weight.shape[0], -1) * scale[:, None]).reshape(weight.shape)


def fake_quant_int8(weight: Tensor) -> Tensor:
    """Quantise-dequantise: the int8 error in the elastic forward, with a straight-through
    gradient."""
    return _straight_through(weight, _dequantised(weight))


def low_rank_factors(matrix: Tensor, ratio: float) -> tuple[Tensor, Tensor]:
    """``compact.low_rank_factors`` of a tensor (no gradient), as tensors on its device: the
    elastic forward uses the very factors the compact copy is made of."""
    first, second = compact.low_rank_factors(matrix.detach().float().cpu().numpy(), ratio)
    return (torch.from_numpy(first).to(matrix.device, matrix.dtype),
            torch.from_numpy(second).to(matrix.device, matrix.dtype))


def _straight_through(weight: Tensor, approx: Tensor) -> Tensor:
    return weight + (approx - weight).detach() if weight.requires_grad else approx


# -- tier 1: elastic ops ------------------------------------------------------------------------
class SwitchableBatchNorm2d(nn.Module):
    """Batch norm with one set of running statistics per *key* (a choice of the variant).

    The affine parameters are shared; the running mean/var rows are private to each key (a
    width / resolution choice), so narrow and wide variants do not share statistics.
    ``momentum=None`` gives a cumulative average, as in ``nn.BatchNorm2d``;
    ``momentum=0`` normalises with batch statistics without touching any row (used to measure the
    statistics of one whole variant, see ``model.bn_stats.variant_bn_stats``).

    ``stats`` (a (2, C) tensor of mean and variance), when given, replaces the key's row in eval
    mode: the exact statistics of one variant, stored per config id by the profiler. A (4, C)
    ``stats`` also carries that variant's own scale and shift (rows 2 and 3, see
    core/offline/tuning.py), which then replace the shared affine parameters.
    """

    def __init__(self, num_features: int, num_keys: int, eps: float = BN_EPS,
                 momentum: float | None = 0.1) -> None:
        super().__init__()
        self.num_features, self.num_keys, self.eps, self.momentum = (
            num_features, num_keys, eps, momentum)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_keys, num_features))
        self.register_buffer("running_var", torch.ones(num_keys, num_features))
        self.register_buffer("num_batches_tracked", torch.zeros(num_keys, dtype=torch.long))

    def forward(self, x: Tensor, key: int, stats: Tensor | None = None) -> Tensor:
        c = x.shape[1]
        momentum = self.momentum
        if self.training and momentum == 0:
            return F.batch_norm(x, None, None, self.weight[:c], self.bias[:c], True, 0.0,
                                self.eps)
        if not self.training and stats is not None:
            weight, bias = self._affine(c, stats)     # (4, C) stats may carry tuned ones
            return F.batch_norm(x, stats[0].detach(), stats[1].detach(), weight, bias, False,
                                0.0, self.eps)
        if self.training:
            self.num_batches_tracked[key] += 1
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked[key])
        # Row slices of the (keys, C) buffers are views: batch_norm updates them in place.
        return F.batch_norm(x, self.running_mean[key, :c], self.running_var[key, :c],
                            self.weight[:c], self.bias[:c], self.training, momentum or 0.0,
                            self.eps)

    def _affine(self, c: int, stats: Tensor | None) -> tuple[Tensor, Tensor]:
        """(weight, bias) for ``c`` channels: a variant's own (rows 2-3 of ``stats``) or shared."""
        if stats is not None and stats.shape[0] == 4:
            return stats[2], stats[3]
        return self.weight[:c], self.bias[:c]

    def permute(self, order: Tensor) -> None:
        for t in (self.weight, self.bias):
            t.data.copy_(t.data[order])
        for t in (self.running_mean, self.running_var):
            t.copy_(t[:, order])

    def extra_repr(self) -> str:
        return f"{self.num_features}, keys={self.num_keys}"


class ElasticConvBN(nn.Module):
    """A k x k conv (or depthwise-separable conv) + switchable BN, sliced on demand.

    ``separable=False``: weight (out, in, k, k). ``separable=True``: a depthwise k x k weight
    (in, 1, k, k) then a pointwise (out, in, 1, 1) weight with no non-linearity in between (the
    Xception separable convolution). Low rank applies to the standard conv, or to the pointwise
    conv of a separable one; int8 applies to every weight.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, separable: bool = False, num_keys: int = 1) -> None:
        super().__init__()
        if separable and kernel_size == 1:
            raise ValueError("a separable conv needs kernel_size > 1")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.separable = kernel_size, stride, separable
        self.padding = kernel_size // 2
        if separable:
            self.depthwise = nn.Parameter(torch.empty(in_channels, 1, kernel_size, kernel_size))
            self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
            nn.init.kaiming_normal_(self.depthwise, mode="fan_out", nonlinearity="relu")
        else:
            self.register_parameter("depthwise", None)
            self.weight = nn.Parameter(
                torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.bn = SwitchableBatchNorm2d(out_channels, num_keys)

    # The weights for one choice, as the compact module will hold them (before BN folding).
    def _depthwise(self, in_c: int, int8: bool) -> Tensor:
        w = self.depthwise[:in_c]
        return fake_quant_int8(w) if int8 else w

    def _factors(self, in_c: int, out_c: int, rank: float, int8: bool) -> list[Tensor]:
        """Weights of the convs this op becomes, first to last (one, or two if factorised)."""
        w = self.weight[:out_c, :in_c]
        if rank >= 1.0:
            return [fake_quant_int8(w) if int8 else w]
        first, second = low_rank_factors(w.reshape(out_c, -1), rank)
        if int8:
            first, second = _dequantised(first), _dequantised(second)
        k = w.shape[-1]
        return [first.reshape(-1, in_c, k, k), second[:, :, None, None]]

    def _weight(self, in_c: int, out_c: int, rank: float, int8: bool) -> Tensor:
        """The one (out, in, k, k) weight equal to ``_factors`` (for the elastic forward)."""
        factors = self._factors(in_c, out_c, rank, int8)
        if len(factors) == 1:
            return factors[0]
        first, second = factors
        approx = (second.flatten(1) @ first.flatten(1)).reshape(out_c, in_c, *first.shape[2:])
        return _straight_through(self.weight[:out_c, :in_c], approx)

    def forward(self, x: Tensor, out_channels: int, rank: float = 1.0, int8: bool = False,
                key: int = 0, stats: Tensor | None = None) -> Tensor:
        in_c = x.shape[1]
        if self.separable:
            x = F.conv2d(x, self._depthwise(in_c, int8), None, self.stride, self.padding,
                         groups=in_c)
            x = F.conv2d(x, self._weight(in_c, out_channels, rank, int8))
        else:
            x = F.conv2d(x, self._weight(in_c, out_channels, rank, int8), None, self.stride,
                         self.padding)
        return self.bn(x, key, stats)

    # -- importance ordering (in place, used once after the full-width warm-up) ---------------
    def output_importance(self) -> Tensor:
        """L1 norm of each output filter times |BN gamma|: how much each channel carries."""
        return self.weight.detach().abs().flatten(1).sum(1) * self.bn.weight.detach().abs()

    @torch.no_grad()
    def permute_outputs(self, order: Tensor) -> None:
        self.weight.copy_(self.weight[order])
        self.bn.permute(order)

    @torch.no_grad()
    def permute_inputs(self, order: Tensor) -> None:
        self.weight.copy_(self.weight[:, order])
        if self.depthwise is not None:
            self.depthwise.copy_(self.depthwise[order])

    def extra_repr(self) -> str:
        kind = "separable" if self.separable else "conv"
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, {kind}")


class ElasticLinear(nn.Module):
    """The classifier: a max-size linear layer whose input features are sliced on demand."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, 0.0, 1.0 / math.sqrt(in_features))

    def _weight(self, in_features: int, int8: bool) -> Tensor:
        w = self.weight[:, :in_features]
        return fake_quant_int8(w) if int8 else w

    def forward(self, x: Tensor, int8: bool = False, bias: Tensor | None = None) -> Tensor:
        """``bias``, when given, replaces the shared one (a variant's own, see tuning)."""
        return F.linear(x, self._weight(x.shape[1], int8), self.bias if bias is None else bias)

    @torch.no_grad()
    def permute_inputs(self, order: Tensor) -> None:
        self.weight.copy_(self.weight[:, order])
