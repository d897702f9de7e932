"""Inference engines: run a materialised variant in ONNX Runtime (the default) or in torch.

Training stays in PyTorch; inference goes through an engine. On a robot's CPU eager PyTorch hides
most of what the catalogue gives: its per-layer overhead is as large as a small variant's
arithmetic, and it has no int8 convolution. ONNX Runtime runs the same compact variants several
times faster, turns the depthwise-separable operator into a real saving and int8 into a compute
operator (see docs/benchmarks.md, section engines).

An engine prepares a :class:`Runner` from a compact variant: ``compact.CompactWeights`` (what a
torch-free serving process materialises) or a torch ``CompactNet``. ONNX Runtime runs the graph
``onnx_graph`` writes from the arrays (static int8 with the profile table's activation ranges,
weight-only int8 without); torch, the reference, lives in ``torch_engine`` and is imported only
when asked for, so that this module, and a process serving with ONNX Runtime, never load torch.
The interface both implement is ``engine_base``'s (re-exported here).
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any, Mapping, Sequence

import numpy as np

from adaspring_ros.core.model.compact import as_compact
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.engine_base import Engine, EngineError, EngineInfo, Runner, Variant
from adaspring_ros.core.model.onnx_graph import onnx_graph

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "EngineError",
    "EngineInfo",
    "Runner",
    "Engine",
    "OnnxRuntimeEngine",
    "make_engine",
    "classify_logits",
]

ENGINES = ("onnxruntime", "torch")
DEFAULT_ENGINE = "onnxruntime"


def classify_logits(logits: np.ndarray) -> tuple[int, float]:
    """Top-1 class and its softmax probability for the first row of a logits batch."""
    row = np.asarray(logits[0], dtype=np.float64)
    index = int(np.argmax(row))
    probs = np.exp(row - row[index])
    return index, float(1.0 / probs.sum())


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
    threads_fixed_at_build = True  # a session's thread pool is made with it

    def __init__(self, threads: int = 1) -> None:
        super().__init__(threads)
        try:
            import onnxruntime
        except ImportError as exc:
            if importlib.util.find_spec("onnxruntime") is not None:
                raise EngineError(f"engine 'onnxruntime' is installed but does not import: "
                                  f"{exc}") from exc
            raise EngineError(
                "engine 'onnxruntime' is not installed (pip install onnxruntime); "
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
        # No memory arena per session: a node keeps several sessions (its variant cache) and
        # each arena holds on to its peak; these small graphs run as fast without one
        # (the full variant: a median 1.1 ms either way here), and 300 swaps end 10 MB lighter.
        opts.enable_cpu_mem_arena = False
        # Idle worker threads must not spin: on a 2-core robot they would steal the CPU from the
        # rest of the pipeline between frames (and cost energy).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return opts

    def session(self, model: bytes, name: str) -> Any:
        """A session of a serialised ONNX model (``onnx_graph``); ``name`` for the error."""
        try:
            return self.ort.InferenceSession(model, self._options(),
                                             providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types
            raise EngineError(f"ONNX Runtime cannot load {name}: {exc}") from exc

    def prepare(self, variant: Variant, ranges: Mapping[str, Sequence[float]] | None = None,
                batch: int | None = 1) -> OnnxRuntimeRunner:
        net = as_compact(variant)
        static = ranges is not None and any(st.int8 for st in net.config.stages)
        model = onnx_graph(net, batch=batch, ranges=ranges if static else None)
        return OnnxRuntimeRunner(self.session(model, net.config.id), net.config, static)

    def calibrate(self, variant: Variant, x: np.ndarray, batch_size: int = 256
                  ) -> dict[str, list[float]]:
        net = as_compact(variant)
        if not any(st.int8 for st in net.config.stages):
            return {}
        model = onnx_graph(net, batch=None, probe=True)
        session = self.session(model, net.config.id)
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
        # Imported on demand: torch is the reference, and a process serving with ONNX Runtime
        # must not pay its memory and start-up.
        from adaspring_ros.core.model.torch_engine import TorchEngine

        return TorchEngine(threads)
    raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
