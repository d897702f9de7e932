"""The ONNX graph of a compact variant, written directly from its arrays (no torch, no tracer).

The topology is fixed (stem, residual blocks, global average pool, linear classifier), so
:func:`onnx_graph` writes the nodes itself from a :class:`~adaspring_ros.core.model.compact.
CompactWeights` (a torch ``CompactNet`` gives its arrays with ``to_weights()``): a swap stays
within a few milliseconds (``torch.onnx.export`` takes 30-140 ms here) and a serving process
needs no torch.

Node and tensor names follow the compact network's modules ("stem.0", "blocks.3.body.2",
"blocks.3.shortcut.0", "blocks.3.relu", ...): the profile table keys its int8 activation ranges
by them.

int8 has two forms, both from the same int8 weights (symmetric, per output channel):

* static int8 (when the variant has calibrated activation ranges, stored in the profile table):
  activations are quantised too (uint8, QDQ format), and ONNX Runtime fuses each
  DequantizeLinear -> Conv -> QuantizeLinear into one integer convolution;
* weight-only int8 (no ranges, e.g. a variant the profiler never saw): weights are stored as
  int8 and dequantised, convolutions run in float32 -- exactly what the torch reference computes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from adaspring_ros.core.model.compact import RELU, Conv, Layer, as_compact, quantise_int8

__all__ = ["OPSET", "onnx_graph"]

OPSET = 17
# Activation ranges narrower than this are widened (a dead channel must not give scale 0).
_MIN_RANGE = 1e-6


class _GraphWriter:
    """Collects ONNX nodes and initialisers while :func:`onnx_graph` walks a compact variant."""

    def __init__(self, ranges: Mapping[str, Sequence[float]] | None) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.inits: list = []
        self.ranges = ranges
        self.points: list[str] = []   # activation tensors quantised in static int8

    def init(self, name: str, array: np.ndarray) -> str:
        # np.ascontiguousarray would turn a scalar into shape (1,), which QLinearAdd refuses.
        self.inits.append(self.numpy_helper.from_array(np.require(array, requirements='C'), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def weight(self, name: str, weight: np.ndarray, int8: bool) -> str:
        """A weight initialiser; for int8 its int8 grid and scales behind a DequantizeLinear (a
        compact int8 weight is an int8 grid times a per-output-channel factor, so
        re-quantising it recovers that grid exactly)."""
        w = np.asarray(weight, np.float32)
        if not int8:
            return self.init(name, w)
        q, scale = quantise_int8(w)
        self.init(f"{name}_q", q)
        self.init(f"{name}_scale", scale)
        self.init(f"{name}_zp", np.zeros(len(scale), np.int8))
        return self.node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zp"],
                         name, axis=0)

    def activation(self, tensor: str, int8: bool) -> str:
        """A quantisation point: QuantizeLinear -> DequantizeLinear in static int8."""
        if not int8:
            return tensor
        self.points.append(tensor)
        if self.ranges is None:
            return tensor
        lo, hi = self.ranges[tensor]
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        scale = max(hi - lo, _MIN_RANGE) / 255.0
        zero = int(np.clip(round(-lo / scale), 0, 255))
        self.init(f"{tensor}_as", np.array(scale, np.float32))
        self.init(f"{tensor}_az", np.array(zero, np.uint8))
        q = self.node("QuantizeLinear", [tensor, f"{tensor}_as", f"{tensor}_az"], f"{tensor}_q")
        return self.node("DequantizeLinear", [q, f"{tensor}_as", f"{tensor}_az"], f"{tensor}_dq")

    def conv(self, name: str, conv: Conv, x: str, int8: bool) -> str:
        inputs = [x, self.weight(f"{name}.weight", conv.weight, int8)]
        if conv.bias is not None:
            inputs.append(self.init(f"{name}.bias", np.asarray(conv.bias, np.float32)))
        k, s, p = conv.weight.shape[-1], conv.stride, conv.padding
        return self.node("Conv", inputs, name, kernel_shape=[k, k], strides=[s, s],
                         pads=[p, p, p, p], group=conv.groups)

    def sequence(self, prefix: str, layers: Sequence[Layer], x: str, int8: bool) -> str:
        """Convs and ReLUs in order; a conv output that feeds another conv is a quant point
        (one whose next layer is a ReLU is quantised after the ReLU instead)."""
        for i, layer in enumerate(layers):
            name = f"{prefix}.{i}"
            if isinstance(layer, Conv):
                x = self.conv(name, layer, x, int8)
                if i + 1 < len(layers) and isinstance(layers[i + 1], Conv):
                    x = self.activation(x, int8)
            elif layer == RELU:
                x = self.activation(self.node("Relu", [x], name), int8)
            else:
                raise ValueError(f"no ONNX form for {layer!r} at {name}")
        return x


def onnx_graph(variant: Any, *, batch: int | None = 1,
               ranges: Mapping[str, Sequence[float]] | None = None, probe: bool = False):
    """The ONNX model (opset 17) of a compact variant, written from its weights.

    Args:
        variant: a ``compact.CompactWeights`` (``compact.materialise``) or a torch
            ``CompactNet`` (``ElasticBackbone.materialise``).
        batch: fixed batch size, or None for a dynamic one (batched evaluation).
        ranges: activation (lo, hi) per quantisation point for static int8 of the int8 stages;
            None writes weight-only int8 (and float32 activations).
        probe: also expose every quantisation point as a graph output (for calibration).
    """
    from onnx import TensorProto, helper

    net = as_compact(variant)
    cfg = net.config
    w = _GraphWriter(ranges)
    int8 = [st.int8 for st in cfg.stages]
    x = w.activation("image", int8[0])
    x = w.sequence("stem", net.stem, x, int8[0])
    for b, (block, stage) in enumerate(zip(net.blocks, net.block_stages, strict=True)):
        q = int8[stage]
        prefix = f"blocks.{b}"
        body = w.activation(w.sequence(f"{prefix}.body", block.body, x, q), q)
        if block.shortcut is not None:
            short = w.activation(w.sequence(f"{prefix}.shortcut", block.shortcut, x, q), q)
        else:
            short = x
        added = w.node("Add", [body, short], f"{prefix}.add")
        x = w.activation(w.node("Relu", [added], f"{prefix}.relu"), q)
    pooled = w.node("GlobalAveragePool", [x], "pool")
    flat = w.node("Flatten", [pooled], "flatten", axis=1)
    w.node("Gemm", [flat, w.weight("classifier.weight", net.classifier_weight, int8[-1]),
                    w.init("classifier.bias", np.asarray(net.classifier_bias, np.float32))],
           "logits", transB=1)
    r = cfg.resolution
    dim = batch if batch is not None else "N"
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                            [dim, net.in_channels, r, r])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             [dim, net.num_classes])]
    if probe:
        outputs += [helper.make_tensor_value_info(p, TensorProto.FLOAT, None) for p in w.points]
    graph = helper.make_graph(w.nodes, cfg.id, inputs, outputs, w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="adaspring_ros")
    model.ir_version = 8
    return model
