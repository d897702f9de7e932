"""Measuring variants for the profile table: static costs (MACs, params, peak memory), which
variants to measure (stratified sample, Pareto neighbours), accuracy in an engine, and
round-robin batch-1 timing. ``adaspring profile`` (core/offline/profiling.py) puts them together.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.utils.data as tud
from torch import Tensor, nn

from adaspring_ros.core.data.datasets import FASHION_MNIST_DIR, Dataset
from adaspring_ros.core.data.transforms import InputSpec, preprocess
from adaspring_ros.core.model.bn_stats import variant_bn_stats
from adaspring_ros.core.model.config import CompressionConfig, SearchSpace, StageConfig
from adaspring_ros.core.model.engine import Engine, Runner, make_engine
from adaspring_ros.core.model.profile_table import ProfileEntry
from adaspring_ros.core.model.supernet import CompactBlock, CompactNet, ElasticBackbone
from adaspring_ros.core.offline.evaluate import runner_accuracy
from adaspring_ros.core.offline.task_data import calibration_images, open_data
from adaspring_ros.core.serving.frame_stats import percentile

__all__ = [
    "count_macs",
    "peak_memory_bytes",
    "measure_static",
    "time_round_robin",
    "COLD_START_GAP_MS",
    "COLD_START_METHOD",
    "cold_start_sample",
    "time_cold_start",
    "measure_cold_start",
    "stratified_sample",
    "unique_configs",
    "neighbours",
    "bn_calibration_images",
    "profile_config",
]

_STAGE_FIELDS = ("widths", "depths", "operators", "ranks", "int8")
# The idle gap before each call of the cold-start timing: a 20 Hz camera's frame period, between
# the usual 10 and 30 Hz. The extra cost grows with the gap (a bare loop here: 0.14 ms after
# 33 ms, 0.20 after 50, 0.31 after 100, on a calm machine); the perception node measured about
# 0.1-0.2 ms at 30 Hz and 0.2-0.3 ms at 10 Hz, and one term for both is within the spread of
# either (docs/benchmarks.md, section predictions).
COLD_START_GAP_MS = 50.0
COLD_START_METHOD = (
    f"median over the sampled variants of (p50 of a call after a {COLD_START_GAP_MS:g} ms "
    "sleep) - (p50 of the same variant in back-to-back round-robin), both in alternating "
    "rounds of one run, batch 1")


# -- static costs -------------------------------------------------------------------------------
def _leaf_hooks(net: nn.Module, hook: Callable) -> list:
    return [m.register_forward_hook(hook) for m in net.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def count_macs(net: CompactNet, resolution: int) -> int:
    """Multiply-accumulates of one batch-1 inference (convolutions and linear layers)."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * (module.in_channels // module.groups) * k
        else:
            total += module.in_features * module.out_features

    handles = _leaf_hooks(net, hook)
    try:
        net(torch.zeros(1, net.in_channels, resolution, resolution))
    finally:
        for h in handles:
            h.remove()
    return total


@torch.no_grad()
def peak_memory_bytes(net: CompactNet, resolution: int) -> int:
    """float32 weights + the largest set of activations alive at once in one inference."""
    pinned = 0          # residual inputs held while a block's body runs
    peak = 0

    def block_pre(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        nonlocal pinned
        pinned += inputs[0].numel() * 4

    def block_post(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal pinned
        pinned -= inputs[0].numel() * 4

    def leaf(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal peak
        peak = max(peak, pinned + 4 * (inputs[0].numel() + output.numel()))

    handles = _leaf_hooks(net, leaf)
    for m in net.modules():
        if isinstance(m, CompactBlock):
            handles += [m.register_forward_pre_hook(block_pre),
                        m.register_forward_hook(block_post)]
    try:
        net(torch.zeros(1, net.in_channels, resolution, resolution))
    finally:
        for h in handles:
            h.remove()
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    return weights + peak


# -- which configs ------------------------------------------------------------------------------
def _balanced(choices: Sequence, n: int, rng: np.random.Generator) -> list:
    reps = -(-n // len(choices))
    seq = list(choices) * reps
    return [seq[i] for i in rng.permutation(len(seq))[:n]]


def stratified_sample(space: SearchSpace, n: int, seed: int = 0) -> list[CompressionConfig]:
    """``n`` variants in which every choice of every operator field appears about equally often,
    plus the full, smallest and uniform (same width and depth in every stage, standard conv,
    full rank, float) variants at every resolution: the skeleton of the accuracy/latency front."""
    rng = np.random.default_rng(seed)
    columns = {
        (s, f): _balanced(getattr(space, f), n, rng)
        for s in range(space.num_stages) for f in _STAGE_FIELDS
    }
    resolutions = _balanced(space.resolutions, n, rng)
    configs = [CompressionConfig.full(space), CompressionConfig.smallest(space)]
    for width in space.widths:
        for depth in space.depths:
            for res in space.resolutions:
                stage = StageConfig(width=width, depth=depth, operator=space.operators[-1],
                                    rank=space.ranks[-1], int8=space.int8[-1])
                configs.append(CompressionConfig((stage,) * space.num_stages, res))
    for i in range(n):
        stages = tuple(
            StageConfig(width=columns[s, "widths"][i], depth=columns[s, "depths"][i],
                        operator=columns[s, "operators"][i], rank=columns[s, "ranks"][i],
                        int8=columns[s, "int8"][i])
            for s in range(space.num_stages))
        configs.append(CompressionConfig(stages, resolutions[i]))
    return unique_configs(configs)


def unique_configs(configs: Iterable[CompressionConfig]) -> list[CompressionConfig]:
    """``configs`` without repeats, in first-seen order."""
    seen: dict[str, CompressionConfig] = {}
    for c in configs:
        seen.setdefault(c.id, c)
    return list(seen.values())


def _step(choices: Sequence, value, delta: int):
    i = list(choices).index(value) + delta
    return choices[i] if 0 <= i < len(choices) else None


def neighbours(config: CompressionConfig, space: SearchSpace) -> list[CompressionConfig]:
    """Every variant one operator step away (one field of one stage, or the resolution)."""
    out = []
    for delta in (-1, 1):
        res = _step(space.resolutions, config.resolution, delta)
        if res is not None:
            out.append(CompressionConfig(config.stages, res))
        for s, stage in enumerate(config.stages):
            for f, attr in zip(_STAGE_FIELDS, ("width", "depth", "operator", "rank", "int8"),
                               strict=True):
                value = _step(getattr(space, f), getattr(stage, attr), delta)
                if value is None:
                    continue
                stages = list(config.stages)
                stages[s] = StageConfig(**{**stage.to_dict(), attr: value})
                out.append(CompressionConfig(tuple(stages), config.resolution))
    return out


def bn_calibration_images(n: int, seed: int = 0, root: str | Path = FASHION_MNIST_DIR,
                          card: InputSpec | None = None) -> np.ndarray:
    """``n`` fixed images of the training part of the train split of ``root`` (Fashion-MNIST's
    IDX files or an image folder, decoded for ``card``), never validation or test."""
    return calibration_images(open_data(root), n, seed, card)


# -- measuring one variant ----------------------------------------------------------------------
def measure_static(backbone: ElasticBackbone, config: CompressionConfig,
                   test: Dataset | tud.Dataset,
                   engine: Engine, bn_images: np.ndarray | None = None,
                   serving: Engine | None = None, calib_images: np.ndarray | None = None
                   ) -> tuple[ProfileEntry, Runner]:
    """Accuracy in ``engine`` and the static costs of one variant, and its batch-1 runner
    (in ``serving``, default ``engine``).

    With ``bn_images`` the variant's exact BN statistics are computed first (stored in the
    backbone) and, for int8 variants in an engine that computes in int8, its activation ranges
    (stored in the entry). Latency and energy are left at 0 for :func:`time_round_robin`.
    Images are preprocessed for the backbone's model card.
    """
    if bn_images is not None:
        backbone.variant_bn[config.id] = variant_bn_stats(backbone, config, bn_images)
    net = backbone.materialise(config)
    r = config.resolution
    card = backbone.card
    calib = calib_images if calib_images is not None else bn_images
    if calib is None:  # never the test split: it is for the final measurement only
        calib = bn_calibration_images(256, card=card)
    ranges = engine.calibrate(net, preprocess(calib, r, card))
    accuracy = runner_accuracy(engine.prepare(net, ranges or None, batch=None), test, r,
                               card=card)
    entry = ProfileEntry(
        config=config, accuracy=accuracy, latency_ms_p50=0.0, latency_ms_p95=0.0,
        macs=count_macs(net, r), params=sum(p.numel() for p in net.parameters()),
        storage_bytes=net.storage_bytes, peak_memory_mb=peak_memory_bytes(net, r) / 2**20,
        energy_mj=0.0, int8_ranges={k: (v[0], v[1]) for k, v in ranges.items()},
    )
    return entry, (serving or engine).prepare(net, ranges or None, batch=1)


def time_round_robin(runners: Mapping[str, Runner], images: np.ndarray | None, repeats: int,
                     warmup: int, meter, seed: int = 0, progress: bool = False,
                     frames: Callable[[CompressionConfig], np.ndarray] | None = None,
                     card: InputSpec | None = None) -> dict[str, tuple[list[float], float]]:
    """Batch-1 latencies (ms) and energy per call (mJ) of every runner, timed round-robin.

    Each call follows a call of another variant, in a new shuffled order every round, so no
    variant is timed with the caches warmed by itself (back-to-back timing flatters the small
    variants; docs/benchmarks.md, design measurements). Each variant's input is the first of
    ``images`` preprocessed at its resolution for ``card`` or, with ``frames``,
    ``frames(config)`` (a device
    without the dataset times on synthetic frames: the nets have no data-dependent control flow).
    Calls follow each other with no idle time; a node at a camera's rate idles between frames
    and runs each forward slower still (bench_engines, section "Idle between frames").
    """
    from tqdm import tqdm

    ids = list(runners)
    if frames is None:
        if images is None:
            raise ValueError("time_round_robin needs images or frames")
        inputs = {i: preprocess(images[:1], runners[i].config.resolution, card)
                  for i in ids}
    else:
        inputs = {i: frames(runners[i].config) for i in ids}
    for _ in range(warmup):
        for i in ids:
            runners[i](inputs[i])
    times: dict[str, list[float]] = {i: [] for i in ids}
    joules = dict.fromkeys(ids, 0.0)
    rng = np.random.default_rng(seed)
    for _ in tqdm(range(repeats), desc="round-robin timing", disable=not progress,
                  mininterval=2.0):
        for k in rng.permutation(len(ids)):
            i = ids[k]
            x = inputs[i]
            if meter is not None:
                meter.start()
            t0 = time.perf_counter()
            runners[i](x)
            times[i].append((time.perf_counter() - t0) * 1e3)
            if meter is not None:
                joules[i] += meter.stop().joules
    return {i: (times[i], joules[i] * 1e3 / repeats) for i in ids}


def cold_start_sample(ids_by_latency: Sequence[str], n: int = 16) -> list[str]:
    """``n`` ids spread evenly over a list sorted by latency (its first and last included):
    the variants the cold-start term is measured on."""
    if n <= 0 or not ids_by_latency:
        return []
    if n >= len(ids_by_latency):
        return list(ids_by_latency)
    if n == 1:
        return [ids_by_latency[0]]
    last = len(ids_by_latency) - 1
    return list(dict.fromkeys(ids_by_latency[round(k * last / (n - 1))] for k in range(n)))


def time_cold_start(runners: Mapping[str, Runner],
                    frames: Callable[[CompressionConfig], np.ndarray], rounds: int,
                    gap_ms: float = COLD_START_GAP_MS, seed: int = 0) -> float:
    """The cold-start term of this device, ms: what a forward pass costs on top of its
    round-robin median when it follows an idle gap of ``gap_ms`` (a camera's frame period).

    At camera rates the CPU idles between frames and the next forward starts with cold caches
    and a slower core; the extra time is about the same for every variant (0.1-0.35 ms here
    for variants of 0.09 to 1.3 ms), so it is one additive term, not a ratio. Each round times
    every runner once back to back (round-robin, as the table's latencies) and once after a
    sleep of ``gap_ms``, in shuffled order, so both see the same load. Returns the median over
    the runners of (idle p50 - round-robin p50), at least 0."""
    if rounds < 1 or not runners:
        raise ValueError("time_cold_start needs runners and rounds >= 1")
    ids = list(runners)
    inputs = {i: frames(runners[i].config) for i in ids}
    warm: dict[str, list[float]] = {i: [] for i in ids}
    idle: dict[str, list[float]] = {i: [] for i in ids}
    rng = np.random.default_rng(seed)
    for i in ids:  # warm-up: sessions built, first-call costs paid
        runners[i](inputs[i])
    for _ in range(rounds):
        for k in rng.permutation(len(ids)):
            i = ids[k]
            t0 = time.perf_counter()
            runners[i](inputs[i])
            warm[i].append((time.perf_counter() - t0) * 1e3)
        for k in rng.permutation(len(ids)):
            i = ids[k]
            time.sleep(gap_ms / 1e3)
            t0 = time.perf_counter()
            runners[i](inputs[i])
            idle[i].append((time.perf_counter() - t0) * 1e3)
    extra = [statistics.median(idle[i]) - statistics.median(warm[i]) for i in ids]
    return max(statistics.median(extra), 0.0)


def measure_cold_start(runners: Mapping[str, Runner], ids_by_latency: Sequence[str],
                       frames: Callable[[CompressionConfig], np.ndarray], seed: int = 0,
                       sample: int = 16, rounds: int = 30) -> tuple[float, str]:
    """:func:`time_cold_start` on ``sample`` of the runners spread over ``ids_by_latency``
    (fastest first): the table's ``cold_start_ms`` and its ``meta["cold_start_method"]``."""
    picked = cold_start_sample(ids_by_latency, sample)
    value = time_cold_start({i: runners[i] for i in picked}, frames, rounds, seed=seed)
    return value, f"{COLD_START_METHOD}; {len(picked)} variants, {rounds} rounds"


def profile_config(backbone: ElasticBackbone, config: CompressionConfig, test: Dataset,
                   repeats: int, warmup: int, meter, engine: Engine | None = None,
                   bn_images: np.ndarray | None = None) -> ProfileEntry:
    """Measure one variant alone (static costs, then back-to-back latency): for tests and
    quick looks; ``adaspring profile`` times all variants round-robin instead."""
    engine = engine or make_engine("torch")
    entry, runner = measure_static(backbone, config, test, engine, bn_images)
    (times, energy_mj), = time_round_robin({config.id: runner}, test.images, repeats, warmup,
                                           meter, card=backbone.card).values()
    return replace(entry, latency_ms_p50=statistics.median(times),
                   latency_ms_p95=percentile(times, 95), energy_mj=energy_mj)
