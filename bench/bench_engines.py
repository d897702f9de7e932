"""Benchmark of the inference engines side by side: torch eager, ONNX Runtime, OpenVINO.

* batch-1 latency of the full backbone (float32 and static int8) and of the Pareto front of the
  shipped profile table, every (variant, engine) pair timed round-robin in one run (a new
  shuffled order each round, so no pair runs with caches warmed by itself): medians and spreads;
* the speed-ups a robot gets: fastest variant within 1.5 points of full (test split, from the
  table) against full in the same engine and against full in torch eager;
* swap costs: materialise + engine session for profiled variants, and switching to a variant
  already prepared (cache lookup);
* OpenVINO (fp32, the same ONNX graph) when it is installed: measured, not shipped (see text).

Measures and prints; writes the ``engines`` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_engines [--rounds 300] [--front 12]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adaspring_ros.core.data.datasets import load_fashion_mnist
from adaspring_ros.core.data.transforms import preprocess
from adaspring_ros.core.model.checkpoint import load_backbone
from adaspring_ros.core.model.config import CompressionConfig, StageConfig
from adaspring_ros.core.model.engine import make_engine
from adaspring_ros.core.model.onnx_graph import onnx_graph
from adaspring_ros.core.model.profile_table import ProfileTable, fastest_within, pareto_front
from adaspring_ros.core.offline.profiler import bn_calibration_images, time_round_robin
from adaspring_ros.core.paths import default_profile_table
from adaspring_ros.core.serving.server import VariantCache, freeze_heap
from bench.report import markdown_table, spread, write_section


class OpenVinoRunner:
    """The variant's ONNX graph compiled by OpenVINO for the CPU, 1 thread, latency hint."""

    static_int8 = False

    def __init__(self, net, workdir: Path) -> None:
        import openvino as ov

        self.config = net.config
        path = workdir / f"{net.config.id}.onnx"
        path.write_bytes(onnx_graph(net))
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY"})
        self.request = compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        return self.request.get_output_tensor(0).data


def openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__.split("-")[0]


def all_int8(config: CompressionConfig) -> CompressionConfig:
    return CompressionConfig(tuple(StageConfig(**{**s.to_dict(), "int8": True})
                                   for s in config.stages), config.resolution)


def evenly(items: list, n: int) -> list:
    if len(items) <= n:
        return items
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="timed calls per pair")
    parser.add_argument("--front", type=int, default=12, help="Pareto-front variants timed")
    parser.add_argument("--swaps", type=int, default=60, help="profiled variants built")
    parser.add_argument("--gap-calls", type=int, default=120,
                        help="calls per idle gap in the idle-between-frames table")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="adaspring-bench-engines-"))

    torch.set_num_threads(1)   # torch eager as the perception node runs it (fastest at batch 1)
    backbone = load_backbone()
    table = ProfileTable.load(default_profile_table())
    freeze_heap()
    full = CompressionConfig.full(backbone.space)
    best = fastest_within(table.entries, full.id)
    front = [e.config for e in evenly(pareto_front(table.entries), args.front)]
    variants = [full, all_int8(full)] + [c for c in front if c not in (full, all_int8(full))]
    if best is not None and best.config not in variants:
        variants.append(best.config)
    test = load_fashion_mnist("test")
    calib = bn_calibration_images(512)
    ort, torch_engine = make_engine("onnxruntime"), make_engine("torch")
    ov = openvino_version()

    runners = {}
    for config in variants:
        net = backbone.materialise(config)
        entry = table.get(config.id)
        ranges = dict(entry.int8_ranges) if entry and entry.int8_ranges else \
            ort.calibrate(net, preprocess(calib, config.resolution))
        runners[f"torch|{config.id}"] = torch_engine.prepare(net)
        runners[f"onnxruntime|{config.id}"] = ort.prepare(net, ranges or None)
        if ov:
            runners[f"openvino|{config.id}"] = OpenVinoRunner(net, workdir)
    print(f"timing {len(runners)} (engine, variant) pairs round-robin, {args.rounds} rounds ...",
          flush=True)
    timed = time_round_robin(runners, test.images, args.rounds, warmup=20, meter=None,
                             progress=True)
    stats = {k: spread(v[0]) for k, v in timed.items()}

    engines = ["torch", "onnxruntime"] + (["openvino"] if ov else [])
    rows = []
    for config in variants:
        entry = table.get(config.id)
        acc = f"{100 * entry.accuracy:.2f}" if entry else "-"
        label = ("full" if config == full else "full, int8" if config == all_int8(full)
                 else "fastest within 1.5 pt" if best and config == best.config else "front")
        row = [label, f"`{config.id}`", acc]
        for name in engines:
            s = stats[f"{name}|{config.id}"]
            row.append(f"{s['p50']:.3f} ({s['min']:.3f}-{s['p95']:.3f})")
        ratio = stats[f"torch|{config.id}"]["p50"] / stats[f"onnxruntime|{config.id}"]["p50"]
        row.append(f"{ratio:.1f}x")
        rows.append(row)
    headers = ["variant", "config", "top-1 % (ORT, test)"] + \
        [f"{n} p50 ms (min-p95)" for n in engines] + ["torch / ORT"]

    f_ort, f_torch = stats[f"onnxruntime|{full.id}"]["p50"], stats[f"torch|{full.id}"]["p50"]
    fastest_engine = min(engines, key=lambda n: stats[f"{n}|{full.id}"]["p50"])
    headline = [
        f"Full backbone: torch eager {f_torch:.3f} ms, ONNX Runtime {f_ort:.3f} ms "
        f"({f_torch / f_ort:.1f}x)" + (f", OpenVINO {stats[f'openvino|{full.id}']['p50']:.3f} "
                                       "ms" if ov else "") +
        f"; the default engine is {f_ort / stats[f'{fastest_engine}|{full.id}']['p50']:.2f}x "
        f"the fastest ({fastest_engine}).",
    ]
    if best is not None:
        b = stats[f"onnxruntime|{best.id}"]["p50"]
        e_full = table.get(full.id).energy_mj
        headline.append(
            f"Fastest within 1.5 points of full (`{best.id}`, {100 * best.accuracy:.2f} % vs "
            f"{100 * table.get(full.id).accuracy:.2f} %): {b:.3f} ms, {f_ort / b:.1f}x faster "
            f"than full in ONNX Runtime and {f_torch / b:.1f}x faster than full in torch eager "
            f"(measured here side by side); energy per inference (profile table) "
            f"{e_full / best.energy_mj:.1f}x lower than full.")
    full_int8 = table.get(all_int8(full).id)
    if full_int8 is not None:
        headline.append(
            f"int8 on the full backbone: {100 * full_int8.accuracy:.2f} % vs "
            f"{100 * table.get(full.id).accuracy:.2f} % fp32 on the test split "
            f"({100 * (table.get(full.id).accuracy - full_int8.accuracy):+.2f} points lost), "
            f"{f_ort / stats[f'onnxruntime|{all_int8(full).id}']['p50']:.1f}x faster.")

    # -- idle between frames ------------------------------------------------------------------
    # At 30 Hz a robot's CPU idles ~30 ms between frames; the profile table times variants back
    # to back (round-robin). This measures what the idle gap costs each call.
    gaps_ms = (0.0, 2.0, 10.0, 33.0)
    gap_rows = []
    for label, config in (("full", full), ("fastest within 1.5 pt", best.config if best else full),
                          ("smallest", CompressionConfig.smallest(backbone.space))):
        runner = ort.prepare(backbone.materialise(config),
                             dict(table.get(config.id).int8_ranges)
                             if table.get(config.id) else None)
        x = preprocess(test.images[:1], config.resolution)
        row = [label, f"`{config.id}`"]
        for gap in gaps_ms:
            times = []
            for _ in range(args.gap_calls):
                if gap:
                    time.sleep(gap / 1e3)
                t0 = time.perf_counter()
                runner(x)
                times.append((time.perf_counter() - t0) * 1e3)
            row.append(f"{spread(times[5:])['p50']:.3f}")
        gap_rows.append(row)

    # -- swaps --------------------------------------------------------------------------------
    rng = np.random.default_rng(0)
    pick = [table.entries[i] for i in rng.permutation(len(table))[:args.swaps]]
    build = {"torch": [], "onnxruntime": []}
    for _ in range(2):
        for entry in pick:
            for name, engine in (("torch", torch_engine), ("onnxruntime", ort)):
                t0 = time.perf_counter()
                runner = engine.prepare(backbone.materialise(entry.config),
                                        dict(entry.int8_ranges) or None)
                runner(preprocess(test.images[:1], entry.config.resolution))
                build[name].append((time.perf_counter() - t0) * 1e3)
    cache = VariantCache(lambda c: ort.prepare(backbone.materialise(c)), capacity=4)
    other = pick[0].config
    cache.get(full)
    cache.get(other)
    switch = []
    for i in range(2000):
        t0 = time.perf_counter()
        cache.get(other if i % 2 else full)
        switch.append((time.perf_counter() - t0) * 1e3)
    swap_rows = []
    for name, values in build.items():
        s = spread(values)
        swap_rows.append([f"materialise + {name} runner + first forward", len(values),
                          s["p50"], s["p95"], s["max"]])
    s = spread(switch)
    swap_rows.append(["switch to a prepared variant (cache lookup)", len(switch), s["p50"],
                      s["p95"], s["max"]])

    if ov:
        ratios = [stats[f"openvino|{c.id}"]["p50"] / stats[f"onnxruntime|{c.id}"]["p50"]
                  for c in variants]
        ov_note = (
            f"OpenVINO {ov} (pip, optional, not in tools/requirements.txt) runs the same ONNX "
            f"graph in fp32. Its median latency is {min(ratios):.2f}-{max(ratios):.2f}x ONNX "
            f"Runtime's over these {len(variants)} variants (median ratio "
            f"{float(np.median(ratios)):.2f}); ONNX Runtime stays the default because it also "
            "computes static int8 from the same QDQ graph and builds a session in a few ms.")
    else:
        ov_note = "OpenVINO is not installed here; `pip install openvino` adds its column."
    body = "\n\n".join([
        f"Backbone: shipped models/backbone.pt; profile table: shipped, measured in "
        f"{table.engine_name} {table.engine.get('version', '')}. Batch 1, 1 thread per engine, "
        f"a real test image as input, {args.rounds} calls per pair, all pairs round-robin in "
        f"one run on a 2-core machine shared with other work.",
        "\n".join(f"- {line}" for line in headline),
        "### Batch-1 latency by engine (ms)\n\n" + markdown_table(headers, rows),
        ov_note,
        "### Idle between frames (ONNX Runtime, p50 ms)\n\nOne variant called alone with a "
        "sleep before each call, as a node at 30 Hz idles between frames. The profile table "
        "times variants back to back, so the perception node's live forward times sit above it "
        "by about the difference between the 0 and 33 ms columns (section ros_perception, "
        "live vs table): the CPU's caches and power state go cold while it waits.\n\n"
        + markdown_table(["variant", "config"] + [f"gap {g:g} ms" for g in gaps_ms], gap_rows),
        "### Swap costs (ms)\n\nGoals: build p95 <= 20 ms, switch to a prepared variant p95 <= "
        f"2 ms. {args.swaps} profiled variants, built twice each.\n\n" + markdown_table(
            ["what", "n", "p50", "p95", "max"], swap_rows),
    ])
    write_section("engines", "Inference engines side by side (bench_engines)",
                  "python -m bench.bench_engines", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
