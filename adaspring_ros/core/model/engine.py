"""Inference engines: run a materialised variant in ONNX Runtime (the default) or in torch.

Training and ``materialise`` stay in PyTorch; only inference goes through an engine. On a robot's
CPU eager PyTorch hides most of what the catalogue gives: its per-layer overhead is as large as a
small variant's arithmetic, and it has no int8 convolution. ONNX Runtime runs the same compact
modules several times faster, turns the depthwise-separable operator into a real saving and
int8 into a compute operator (see docs/benchmarks.md, section engines).

The ONNX graph of a variant is written directly from its compact weights (:func:`onnx_graph`):
the topology is fixed (stem, residual blocks, classifier), so no tracer is needed and a swap
stays within a few milliseconds (``torch.onnx.export`` takes 30-140 ms here).

int8 has two forms, both from the same int8 weights (symmetric, per output channel):

* static int8 (when the variant has calibrated activation ranges, stored in the profile table):
  activations are quantised too (uint8, QDQ format), and ONNX Runtime fuses each
  DequantizeLinear -> Conv -> QuantizeLinear into one integer convolution;
* weight-only int8 (no ranges, e.g. a variant the profiler never saw): weights are stored as
  int8 and dequantised, convolutions run in float32 -- exactly what the torch reference computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.profile_table import ProfileTable
from adaspring_ros.core.model.supernet import CompactNet, ElasticBackbone

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "EngineError",
    "EngineInfo",
    "Runner",
    "Engine",
    "TorchEngine",
    "OnnxRuntimeEngine",
    "make_engine",
    "VariantBuilder",
    "onnx_graph",
    "classify_logits",
]

ENGINES = ("onnxruntime", "torch")
DEFAULT_ENGINE = "onnxruntime"
OPSET = 17
# Activation ranges narrower than this are widened (a dead channel must not give scale 0).
_MIN_RANGE = 1e-6


class EngineError(RuntimeError):
    """An engine that is unknown, not installed, or cannot run a variant."""


@dataclass(frozen=True)
class EngineInfo:
    """Which engine measured or serves a variant: recorded in the profile table."""

    name: str
    version: str
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "threads": self.threads}


class Runner(Protocol):
    """One variant, ready to serve: preprocessed float32 (N, 1, R, R) in, logits (N, C) out."""

    config: CompressionConfig
    static_int8: bool

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def classify_logits(logits: np.ndarray) -> tuple[int, float]:
    """Top-1 class and its softmax probability for the first row of a logits batch."""
    row = np.asarray(logits[0], dtype=np.float64)
    index = int(np.argmax(row))
    probs = np.exp(row - row[index])
    return index, float(1.0 / probs.sum())


# -- the ONNX graph of a compact variant ---------------------------------------------------------
def _stage_of_blocks(config: CompressionConfig) -> list[int]:
    return [s for s, stage in enumerate(config.stages) for _ in range(stage.depth)]


def _int8_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 q, float32 scale per output channel) with q * scale == weight for int8 variants.

    A compact int8 weight is an int8 grid times a per-output-channel factor (fake-quantised, then
    BN-folded per output channel), so max-abs re-quantisation recovers that grid exactly.
    """
    flat = weight.reshape(weight.shape[0], -1)
    scale = np.maximum(np.abs(flat).max(axis=1), 1e-12) / 127.0
    q = np.clip(np.rint(flat / scale[:, None]), -127, 127).astype(np.int8)
    return q.reshape(weight.shape), scale.astype(np.float32)


class _GraphWriter:
    """Collects ONNX nodes and initialisers while :func:`onnx_graph` walks a compact net."""

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

    def weight(self, name: str, weight: Tensor, int8: bool) -> str:
        w = weight.detach().numpy().astype(np.float32)
        if not int8:
            return self.init(name, w)
        q, scale = _int8_weight(w)
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

    def conv(self, name: str, conv: nn.Conv2d, x: str, int8: bool) -> str:
        inputs = [x, self.weight(f"{name}.weight", conv.weight, int8)]
        if conv.bias is not None:
            inputs.append(self.init(f"{name}.bias", conv.bias.detach().numpy()))
        k, s, p = conv.kernel_size, conv.stride, conv.padding
        return self.node("Conv", inputs, name, kernel_shape=list(k), strides=list(s),
                         pads=[p[0], p[1], p[0], p[1]], group=conv.groups)

    def sequence(self, prefix: str, layers: nn.Sequential, x: str, int8: bool) -> str:
        """Convs and ReLUs in order; a conv output that feeds another conv is a quant point
        (one whose next layer is a ReLU is quantised after the ReLU instead)."""
        mods = list(layers)
        for i, m in enumerate(mods):
            name = f"{prefix}.{i}"
            if isinstance(m, nn.Conv2d):
                x = self.conv(name, m, x, int8)
                nxt = mods[i + 1] if i + 1 < len(mods) else None
                if isinstance(nxt, nn.Conv2d):
                    x = self.activation(x, int8)
            elif isinstance(m, nn.ReLU):
                x = self.activation(self.node("Relu", [x], name), int8)
            else:
                raise EngineError(f"no ONNX form for {type(m).__name__} at {name}")
        return x


def onnx_graph(net: CompactNet, *, batch: int | None = 1,
               ranges: Mapping[str, Sequence[float]] | None = None, probe: bool = False):
    """The ONNX model (opset 17) of a compact variant, written from its weights.

    Args:
        net: a materialised variant (``ElasticBackbone.materialise``).
        batch: fixed batch size, or None for a dynamic one (batched evaluation).
        ranges: activation (lo, hi) per quantisation point for static int8 of the int8 stages;
            None writes weight-only int8 (and float32 activations).
        probe: also expose every quantisation point as a graph output (for calibration).
    """
    from onnx import TensorProto, helper

    cfg = net.config
    w = _GraphWriter(ranges)
    int8 = [st.int8 for st in cfg.stages]
    x = w.activation("image", int8[0])
    x = w.sequence("stem", net.stem, x, int8[0])
    stage_of = _stage_of_blocks(cfg)
    for b, block in enumerate(net.blocks):
        q = int8[stage_of[b]]
        prefix = f"blocks.{b}"
        body = w.activation(w.sequence(f"{prefix}.body", block.body, x, q), q)
        if isinstance(block.shortcut, nn.Sequential):
            short = w.activation(w.sequence(f"{prefix}.shortcut", block.shortcut, x, q), q)
        else:
            short = x
        added = w.node("Add", [body, short], f"{prefix}.add")
        x = w.activation(w.node("Relu", [added], f"{prefix}.relu"), q)
    pooled = w.node("GlobalAveragePool", [x], "pool")
    flat = w.node("Flatten", [pooled], "flatten", axis=1)
    fc = net.classifier
    w.node("Gemm", [flat, w.weight("classifier.weight", fc.weight, int8[-1]),
                    w.init("classifier.bias", fc.bias.detach().numpy())],
           "logits", transB=1)
    r = cfg.resolution
    dim = batch if batch is not None else "N"
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [dim, 1, r, r])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             [dim, fc.out_features])]
    if probe:
        outputs += [helper.make_tensor_value_info(p, TensorProto.FLOAT, None) for p in w.points]
    graph = helper.make_graph(w.nodes, cfg.id, inputs, outputs, w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="adaspring_ros")
    model.ir_version = 8
    return model


# -- engines -------------------------------------------------------------------------------------
class Engine:
    """Makes :class:`Runner` s for compact variants; ``info`` goes into the profile table."""

    name = ""

    def __init__(self, threads: int = 1) -> None:
        if int(threads) < 1:
            raise EngineError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(self.name, self.version, self.threads)

    @property
    def version(self) -> str:
        raise NotImplementedError

    def prepare(self, net: CompactNet, ranges: Mapping[str, Sequence[float]] | None = None,
                batch: int | None = 1) -> Runner:
        raise NotImplementedError

    def calibrate(self, net: CompactNet, x: np.ndarray, batch_size: int = 256
                  ) -> dict[str, list[float]]:
        """Activation (lo, hi) of every quantisation point over preprocessed images ``x``."""
        return {}


class TorchRunner:
    """The reference: the compact torch module itself (int8 = weight-only, float32 compute)."""

    static_int8 = False

    def __init__(self, net: CompactNet) -> None:
        self.net = net.eval()
        self.config = net.config

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.net(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


class TorchEngine(Engine):
    name = "torch"

    @property
    def version(self) -> str:
        return torch.__version__

    def prepare(self, net: CompactNet, ranges: Mapping[str, Sequence[float]] | None = None,
                batch: int | None = 1) -> TorchRunner:
        return TorchRunner(net)


class OnnxRuntimeRunner:
    """A variant in an ONNX Runtime session (one intra-op thread pool of ``threads``)."""

    def __init__(self, session: Any, config: CompressionConfig, static_int8: bool) -> None:
        self.session = session
        self.config = config
        self.static_int8 = static_int8
        self._input = session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: np.ascontiguousarray(x, np.float32)})[0]


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"

    def __init__(self, threads: int = 1) -> None:
        super().__init__(threads)
        try:
            import onnxruntime
        except ImportError as exc:
            raise EngineError(
                "engine 'onnxruntime' is not installed (pip install onnxruntime onnx); "
                "engine 'torch' needs nothing more") from exc
        self.ort = onnxruntime

    @property
    def version(self) -> str:
        return self.ort.__version__

    def _options(self):
        opts = self.ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Idle worker threads must not spin: on a 2-core robot they would steal the CPU from the
        # rest of the pipeline between frames (and cost energy).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return opts

    def session(self, model) -> Any:
        try:
            return self.ort.InferenceSession(model.SerializeToString(), self._options(),
                                             providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types
            raise EngineError(f"ONNX Runtime cannot load {model.graph.name}: {exc}") from exc

    def prepare(self, net: CompactNet, ranges: Mapping[str, Sequence[float]] | None = None,
                batch: int | None = 1) -> OnnxRuntimeRunner:
        static = ranges is not None and any(st.int8 for st in net.config.stages)
        model = onnx_graph(net, batch=batch, ranges=ranges if static else None)
        return OnnxRuntimeRunner(self.session(model), net.config, static)

    def calibrate(self, net: CompactNet, x: np.ndarray, batch_size: int = 256
                  ) -> dict[str, list[float]]:
        if not any(st.int8 for st in net.config.stages):
            return {}
        model = onnx_graph(net, batch=None, probe=True)
        session = self.session(model)
        names = [o.name for o in session.get_outputs()[1:]]
        lo = {n: math.inf for n in names}
        hi = {n: -math.inf for n in names}
        for i in range(0, len(x), batch_size):
            outs = session.run(names, {"image": np.ascontiguousarray(x[i:i + batch_size])})
            for n, v in zip(names, outs, strict=True):
                lo[n] = min(lo[n], float(v.min()))
                hi[n] = max(hi[n], float(v.max()))
        return {n: [lo[n], hi[n]] for n in names}


def make_engine(name: str = DEFAULT_ENGINE, threads: int = 1) -> Engine:
    """The engine called ``name`` (one of :data:`ENGINES`); EngineError if unknown/missing."""
    if name == "onnxruntime":
        return OnnxRuntimeEngine(threads)
    if name == "torch":
        return TorchEngine(threads)
    raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


class VariantBuilder:
    """What a node serves for a config: materialise, then a runner of ``engine``, with the
    table's int8 activation ranges when the engine computes in int8.

    The table must come from the same engine (ProfileError otherwise): without its ranges an
    int8 variant would still run, but in float32, not as profiled.
    """

    def __init__(self, backbone: ElasticBackbone, engine: Engine,
                 table: ProfileTable | None = None) -> None:
        self.backbone = backbone
        self.engine = engine
        self.ranges: dict[str, dict] = {}
        if table is not None and engine.name == "onnxruntime":
            table.require_engine(engine.name)
            self.ranges = {e.id: dict(e.int8_ranges) for e in table.entries if e.int8_ranges}

    def __call__(self, config: CompressionConfig) -> Runner:
        return self.engine.prepare(self.backbone.materialise(config), self.ranges.get(config.id))
