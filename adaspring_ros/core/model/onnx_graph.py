"""The ONNX graph of a compact variant, written directly from its arrays (no torch, no tracer).

The topology is fixed (stem, residual blocks, global average pool, linear classifier), so
:func:`onnx_graph` writes the nodes itself from a :class:`~adaspring_ros.core.model.compact.
CompactWeights` (a torch ``CompactNet`` gives its arrays with ``to_weights()``): a swap stays
within a few milliseconds (``torch.onnx.export`` takes 30-140 ms here) and a serving process
needs no torch. The model is written straight in protobuf's wire format, the few messages of
onnx.proto an inference graph uses (model, graph, node, attribute, tensor, value info): the
``onnx`` package would cost a serving process ~15 MB and most of a second to import, for
nothing but this serialisation. ``onnx.checker`` accepts the result (test_model_onnx_graph.py).

Node and tensor names follow the compact network's modules ("stem.0", "blocks.3.body.2",
"blocks.3.shortcut.0", "blocks.3.relu", ...): the profile table keys its int8 activation ranges
by them.

int8 has two forms, both from the same int8 weights (symmetric, per output channel; written as
uint8 with zero point 128, see ``_GraphWriter.weight``):

* static int8 (when the variant has calibrated activation ranges, stored in the profile table):
  activations are quantised too (uint8, QDQ format), and ONNX Runtime fuses each
  DequantizeLinear -> Conv -> QuantizeLinear into one integer convolution;
* weight-only int8 (no ranges, e.g. a variant the profiler never saw): weights are stored as
  int8 and dequantised, convolutions run in float32 -- exactly what the torch reference computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from adaspring_ros.core.model.compact import RELU, Conv, Layer, as_compact, quantise_int8

__all__ = ["OPSET", "onnx_graph"]

OPSET = 17
IR_VERSION = 8
# Activation ranges narrower than this are widened (a dead channel must not give scale 0).
_MIN_RANGE = 1e-6
# onnx.proto's TensorProto.DataType of the element types written here.
_DATA_TYPES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3}
_FLOAT = 1
_ATTRIBUTE_INT, _ATTRIBUTE_INTS = 2, 7


# -- protobuf wire format ------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # an int64 as its two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _str(field: int, value: str) -> bytes:
    return _bytes(field, value.encode())


def _message(field: int, parts: Iterable[bytes]) -> bytes:
    return _bytes(field, b"".join(parts))


def _tensor(field: int, name: str, array: np.ndarray) -> bytes:
    """TensorProto: dims (1), data_type (2), name (8), raw_data (9, little-endian)."""
    array = np.asarray(array)
    raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return _message(field, [*(_int(1, d) for d in array.shape),
                            _int(2, _DATA_TYPES[array.dtype]), _str(8, name), _bytes(9, raw)])


def _attribute(name: str, value: int | Sequence[int]) -> bytes:
    """AttributeProto: name (1), type (20), i (3) or ints (8)."""
    if isinstance(value, int):
        return _message(5, [_str(1, name), _int(20, _ATTRIBUTE_INT), _int(3, value)])
    return _message(5, [_str(1, name), _int(20, _ATTRIBUTE_INTS),
                        *(_int(8, v) for v in value)])


def _value_info(field: int, name: str, shape: Sequence[int | str] | None) -> bytes:
    """ValueInfoProto of a float tensor: name (1), type (2) = TypeProto.tensor_type (1) =
    elem_type (1), shape (2) = dims (1) of dim_value (1) or dim_param (2)."""
    tensor = [_int(1, _FLOAT)]
    if shape is not None:
        tensor.append(_message(2, [_message(1, [_str(2, d) if isinstance(d, str) else
                                                 _int(1, d)]) for d in shape]))
    return _message(field, [_str(1, name), _message(2, [_message(1, tensor)])])


# -- the graph -----------------------------------------------------------------------------------
class _GraphWriter:
    """Collects ONNX nodes and initialisers while :func:`onnx_graph` walks a compact variant."""

    def __init__(self, ranges: Mapping[str, Sequence[float]] | None) -> None:
        self.nodes: list[bytes] = []
        self.inits: list[bytes] = []
        self.ranges = ranges
        self.points: list[str] = []   # activation tensors quantised in static int8

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(_tensor(5, name, array))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        """NodeProto: input (1), output (2), name (3), op_type (4), attribute (5)."""
        self.nodes.append(_message(1, [*(_str(1, i) for i in inputs), _str(2, output),
                                       _str(3, output), _str(4, op),
                                       *(_attribute(k, v) for k, v in sorted(attrs.items()))]))
        return output

    def weight(self, name: str, weight: np.ndarray, int8: bool) -> str:
        """A weight initialiser; for int8 its int8 grid and scales behind a DequantizeLinear (a
        compact int8 weight is an int8 grid times a per-output-channel factor, so
        re-quantising it recovers that grid exactly)."""
        w = np.asarray(weight, np.float32)
        if not int8:
            return self.init(name, w)
        q, scale = quantise_int8(w)
        # Stored as uint8 with zero point 128 (the same values): ONNX Runtime's u8s8 integer
        # convolution saturates in int16 on x86 CPUs without VNNI (AVX2: 2 points lost on the
        # int8 variant, 4 on a mixed one, measured on an EPYC), its u8u8 one is exact on every
        # CPU and as fast here (docs/benchmarks.md, "int8 on CPUs without VNNI").
        self.init(f"{name}_q", (q.astype(np.int16) + 128).astype(np.uint8))
        self.init(f"{name}_scale", scale)
        self.init(f"{name}_zp", np.full(len(scale), 128, np.uint8))
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
               ranges: Mapping[str, Sequence[float]] | None = None, probe: bool = False
               ) -> bytes:
    """The serialised ONNX model (opset 17) of a compact variant, written from its weights;
    its graph is named after the config id.

    Args:
        variant: a ``compact.CompactWeights`` (``compact.materialise``) or a torch
            ``CompactNet`` (``ElasticBackbone.materialise``).
        batch: fixed batch size, or None for a dynamic one (batched evaluation).
        ranges: activation (lo, hi) per quantisation point for static int8 of the int8 stages;
            None writes weight-only int8 (and float32 activations).
        probe: also expose every quantisation point as a graph output (for calibration).
    """
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
    outputs = [_value_info(12, "logits", [dim, net.num_classes])]
    if probe:
        outputs += [_value_info(12, p, None) for p in w.points]
    # GraphProto: node (1), name (2), initializer (5), input (11), output (12)
    graph = [*w.nodes, _str(2, cfg.id), *w.inits,
             _value_info(11, "image", [dim, net.in_channels, r, r]), *outputs]
    # ModelProto: ir_version (1), producer_name (2), graph (7), opset_import (8)
    return b"".join([_int(1, IR_VERSION), _str(2, "adaspring_ros"), _message(7, graph),
                     _message(8, [_str(1, ""), _int(2, OPSET)])])
