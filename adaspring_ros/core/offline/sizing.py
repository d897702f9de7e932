"""Size the backbone for its device before training it (``adaspring size-backbone`` drives it;
the options are ``SizingOptions``'s).

The paper initialises its backbone with AdaDeep for the target platform; here a backbone is a
full-width channel count per stage, a depth, an input resolution and a stem stride (what the stem
divides the input side by: a large input at stride 2 or 4 costs about what a small one does at
1; by default the strides that bring the first stage to 24..56 px are tried). Every candidate's
full model, with the input channels of ``data`` (3 for colour images), is timed in the engine
it will run on (round-robin on noise frames shaped by the data's card, random weights: latency
does not depend on them) and its MACs counted; the candidates within the latency (and MACs)
budget are trained briefly as plain nets (no weight sharing, the same recipe for all) and scored
on the validation hold-out. The choice is the fastest candidate within ``tolerance_pt`` of the
most accurate one that fits: a full model larger than the accuracy it buys only makes every
variant slower.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from adaspring_ros.core.data.datasets import FASHION_MNIST_DIR
from adaspring_ros.core.model.card import MAX_RESOLUTION, ModelCard
from adaspring_ros.core.model.config import (
    DEFAULT_SPACE,
    CompressionConfig,
    SearchSpace,
    StageConfig,
)
from adaspring_ros.core.model.engine import make_engine
from adaspring_ros.core.model.supernet import build_backbone
from adaspring_ros.core.model.weights import STEM_STRIDES
from adaspring_ros.core.offline.evaluate import evaluate
from adaspring_ros.core.offline.latency import noise_frame
from adaspring_ros.core.offline.profiler import count_macs, time_round_robin
from adaspring_ros.core.offline.recipe import TrainRecipe
from adaspring_ros.core.offline.sampling import sized_space
from adaspring_ros.core.offline.task_data import build_card, open_data, training_sets
from adaspring_ros.core.offline.train import load_train_state, train
from adaspring_ros.core.serving.frame_stats import percentile

__all__ = [
    "WIDTH_RATIOS",
    "TRAINED_LOG",
    "SizingOptions",
    "Candidate",
    "Measured",
    "candidates",
    "stem_strides_for",
    "measure",
    "short_train",
    "load_trained",
    "choose",
    "format_table",
    "size_backbone",
]

WIDTH_RATIOS = (1, 2, 4)  # stage channels = base x ratio, as the shipped 24/48/96


@dataclass(frozen=True)
class SizingOptions:
    """One sizing run; ``adaspring size-backbone`` has one flag per field (``--tolerance-pt``
    for ``tolerance_pt``)."""

    latency_ms: float = math.inf  # budget for the full model's p50 latency in the engine
    max_mmacs: float = math.inf   # budget for the full model's MACs, millions
    engine: str = "onnxruntime"
    threads: int = 1              # engine threads, as on the robot
    bases: tuple[int, ...] = (12, 16, 24, 32)  # first-stage channels (stages x1, x2, x4)
    depths: tuple[int, ...] = (2, 3)            # blocks per stage
    resolutions: tuple[int, ...] = (24, 28)     # input sides
    stem_strides: tuple[int, ...] = ()         # stem strides to try (empty: stem_strides_for)
    input_channels: int = 0       # 1 or 3 (0: from the data, as adaspring train decides)
    repeats: int = 100            # timing rounds
    epochs: int = 2               # short training run per candidate
    subset: int = 20000           # training images per run
    train_threads: int = 2
    tolerance_pt: float = 0.3     # validation points a faster candidate may lose and win
    data: str = str(FASHION_MNIST_DIR)  # Fashion-MNIST's IDX files or an image folder
    out: str = "runs/size-backbone"  # report directory
    progress: bool = True


@dataclass(frozen=True)
class Candidate:
    """One backbone design: full-width channels per stage, blocks per stage, input side, stem
    stride."""

    channels: tuple[int, ...]
    depth: int
    resolution: int
    stem_stride: int = 1

    @property
    def id(self) -> str:
        stride = f"_s{self.stem_stride}" if self.stem_stride != 1 else ""
        return f"c{'-'.join(map(str, self.channels))}_d{self.depth}_r{self.resolution}{stride}"

    def space(self) -> SearchSpace:
        """The space of the backbone the candidate stands for (``adaspring train --max-depth
        D --max-resolution R``): its full network is the candidate."""
        return sized_space(self.depth, self.resolution)

    def full_config(self) -> CompressionConfig:
        """The candidate's full model as a config of the default space."""
        stage = StageConfig(width=1.0, depth=self.depth, operator="conv", rank=1.0, int8=False)
        return CompressionConfig(stages=(stage,) * len(self.channels), resolution=self.resolution)


@dataclass
class Measured:
    candidate: Candidate
    latency_ms_p50: float
    latency_ms_p95: float
    macs: int
    params: int
    val_accuracy: float | None = None  # None: over budget, not trained
    train_cpu_s: float | None = None


def stem_strides_for(resolution: int) -> tuple[int, ...]:
    """The stem strides worth measuring at an input side: the smallest that brings the first
    stage to at most 56 px, and twice it when the first stage then still has 24 px or more
    (28 px: 1; 48: 1, 2; 64: 2; 96: 2, 4; 224: 4)."""
    first = next((s for s in STEM_STRIDES if resolution / s <= 56), STEM_STRIDES[-1])
    more = 2 * first
    return (first, more) if more in STEM_STRIDES and resolution / more >= 24 else (first,)


def candidates(bases: Sequence[int], depths: Sequence[int], resolutions: Sequence[int],
               stem_strides: Sequence[int] = ()) -> list[Candidate]:
    """Every combination (``stem_strides`` empty: those of :func:`stem_strides_for` for each
    resolution); ValueError for a value the space cannot hold."""
    space = DEFAULT_SPACE
    for d in depths:
        if d not in space.depths:
            raise ValueError(f"depth {d} is not in the search space {space.depths}")
    for r in resolutions:
        if not 8 <= r <= MAX_RESOLUTION:
            raise ValueError(f"resolution {r} is not in [8, {MAX_RESOLUTION}] px")
    for s in stem_strides:
        if s not in STEM_STRIDES:
            raise ValueError(f"stem stride {s} is not one of {STEM_STRIDES}")
    if any(b < 4 for b in bases):
        raise ValueError("channel bases must be >= 4 (a quarter width needs one channel)")
    return [Candidate(tuple(b * k for k in WIDTH_RATIOS), d, r, s)
            for b in bases for d in depths for r in resolutions
            for s in (stem_strides or stem_strides_for(r))]


def measure(cands: Sequence[Candidate], engine_name: str, threads: int, repeats: int,
            card: ModelCard, progress: bool = False) -> list[Measured]:
    """Latency of every candidate's full model in ``engine_name``, timed round-robin on noise
    frames shaped by ``card`` (its channels; the candidate's resolution)."""
    engine = make_engine(engine_name, threads)
    runners, static = {}, {}
    for c in cands:
        torch.manual_seed(0)
        net = build_backbone(c.space(), c.channels, card.classes, card.channels,
                             c.stem_stride).eval().materialise(c.full_config())
        static[c.id] = (count_macs(net, c.resolution), sum(p.numel() for p in net.parameters()))
        runners[c.id] = engine.prepare(net, None, batch=1)
    timed = time_round_robin(runners, None, repeats, warmup=10, meter=None, progress=progress,
                             frames=lambda config: noise_frame(card, config.resolution))
    out = []
    for c in cands:
        times, _ = timed[c.id]
        out.append(Measured(c, statistics.median(times), percentile(times, 95),
                            *static[c.id]))
    return out


def short_train(c: Candidate, epochs: int, subset: int, threads: int, data: str,
                seed: int = 0, workdir: Path | None = None,
                keep: Path | None = None, input_channels: int = 0) -> tuple[float, float]:
    """Train ``c``'s full model alone for ``epochs`` -> (validation top-1, CPU seconds).

    With ``workdir`` the run keeps its state there after every epoch and an interrupted run
    resumes from it (the CPU seconds count every part of the run); without, a temporary one.
    With ``keep`` the trained net is written there (+ ``.sha256``): the chosen design's full
    network is where ``adaspring train --init-from`` can start shrinking."""
    with tempfile.TemporaryDirectory(prefix="adaspring-size-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        recipe = TrainRecipe(
            channels=c.channels, fixed_config=c.full_config().id, max_depth=c.depth,
            max_resolution=c.resolution, stem_stride=c.stem_stride,
            input_channels=input_channels, epochs=epochs, subset=subset, threads=threads,
            data=data, seed=seed, workdir=str(work), resume=True,
            out=str(keep or Path(tmp) / "backbone.pt"), progress=False)
        model = train(recipe)
        cpu_s = float(load_train_state(work)["cpu_seconds"])
    _, val = training_sets(open_data(data), model.card, val_size=recipe.val_size, seed=seed)
    model.set_active(c.full_config())
    return evaluate(model.eval(), val, c.resolution, card=model.card), cpu_s


TRAINED_LOG = "trained.jsonl"  # one line per finished training run: a long sizing run resumes


def trained_key(c: Candidate, epochs: int, subset: int) -> str:
    return f"{c.id}_e{epochs}_s{subset}"


def load_trained(path: Path) -> dict[str, tuple[float, float]]:
    """Finished runs of an earlier, interrupted sizing run; a torn or foreign line is skipped."""
    done: dict[str, tuple[float, float]] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            acc, cpu = float(rec["val_accuracy"]), float(rec["train_cpu_s"])
            if isinstance(rec["key"], str) and 0.0 <= acc <= 1.0 and cpu >= 0.0:
                done[rec["key"]] = (acc, cpu)
        except (ValueError, KeyError, TypeError):
            continue
    return done


def within(m: Measured, latency_ms: float, max_mmacs: float) -> bool:
    return m.latency_ms_p50 <= latency_ms and m.macs <= max_mmacs * 1e6


def choose(rows: Sequence[Measured], tolerance_pt: float, latency_ms: float = math.inf,
           max_mmacs: float = math.inf) -> Measured | None:
    """The fastest trained candidate within the budgets and within ``tolerance_pt`` of the best
    validation top-1 among those (so a tighter budget never picks a slower backbone)."""
    trained = [m for m in rows if m.val_accuracy is not None and within(m, latency_ms, max_mmacs)]
    if not trained:
        return None
    best = max(m.val_accuracy for m in trained)
    close = [m for m in trained if (best - m.val_accuracy) * 100 <= tolerance_pt]
    return min(close, key=lambda m: (m.latency_ms_p50, m.macs))


def format_table(rows: Sequence[Measured], chosen: Measured | None) -> str:
    lines = ["| backbone | full-model p50 ms | p95 ms | MMACs | params | val top-1 | "
             "train CPU s |", "|---|---|---|---|---|---|---|"]
    for m in sorted(rows, key=lambda m: m.latency_ms_p50):
        acc = f"{m.val_accuracy * 100:.2f} %" if m.val_accuracy is not None else "over budget"
        cpu = f"{m.train_cpu_s:.0f}" if m.train_cpu_s is not None else ""
        mark = " **chosen**" if chosen is not None and m is chosen else ""
        lines.append(f"| `{m.candidate.id}`{mark} | {m.latency_ms_p50:.3f} | "
                     f"{m.latency_ms_p95:.3f} | {m.macs / 1e6:.2f} | {m.params} | {acc} | {cpu} |")
    return "\n".join(lines)


def plot(rows: Sequence[Measured], chosen: Measured | None, budget_ms: float,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [m for m in rows if m.val_accuracy is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([m.latency_ms_p50 for m in trained], [m.val_accuracy * 100 for m in trained],
               color="tab:blue", label="within budget (trained)")
    for m in trained:
        ax.annotate(m.candidate.id, (m.latency_ms_p50, m.val_accuracy * 100), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if chosen is not None:
        ax.scatter([chosen.latency_ms_p50], [chosen.val_accuracy * 100], s=120,
                   facecolors="none", edgecolors="tab:red", label="chosen")
    if np.isfinite(budget_ms):
        ax.axvline(budget_ms, color="k", linestyle="--", label="latency budget")
    ax.set_xlabel("full-model latency, p50 ms (batch 1)")
    ax.set_ylabel("validation top-1 %, short run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def size_backbone(opts: SizingOptions) -> Measured | None:
    """Time every candidate, train those within the budgets (resuming from ``out``), choose,
    and write the report (sizing.md, sizing.json, sizing.png) to ``out``; returns the chosen
    candidate, or None (after printing the timings) when no candidate meets the budgets.
    ValueError for a candidate grid outside the search space (see ``candidates``)."""
    cands = candidates(opts.bases, opts.depths, opts.resolutions, opts.stem_strides)
    # the data's card (channels, mean/std) before anything is written: DataError if unusable
    card, _ = build_card(open_data(opts.data), tuple(sorted(set(opts.resolutions))),
                         channels=opts.input_channels)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"timing {len(cands)} full models ({card.channels} input channel(s)) in "
          f"{opts.engine} ({opts.threads} thread(s))", flush=True)
    rows = measure(cands, opts.engine, opts.threads, opts.repeats, card, opts.progress)
    fits = [m for m in rows if within(m, opts.latency_ms, opts.max_mmacs)]
    if not fits:
        print(format_table(rows, None))
        return None
    done = load_trained(out / TRAINED_LOG)
    for k, m in enumerate(sorted(fits, key=lambda m: m.latency_ms_p50)):
        key = trained_key(m.candidate, opts.epochs, opts.subset)
        if key in done:
            m.val_accuracy, m.train_cpu_s = done[key]
            print(f"[{k + 1}/{len(fits)}] {m.candidate.id}: trained by an earlier run of this "
                  f"report directory, validation top-1 {m.val_accuracy * 100:.2f} %", flush=True)
            continue
        print(f"[{k + 1}/{len(fits)}] training {m.candidate.id} for {opts.epochs} epoch(s)",
              flush=True)
        m.val_accuracy, m.train_cpu_s = short_train(m.candidate, opts.epochs, opts.subset,
                                                    opts.train_threads, opts.data,
                                                    workdir=out / f"work-{key}",
                                                    keep=out / f"{key}.pt",
                                                    input_channels=opts.input_channels)
        with open(out / TRAINED_LOG, "a") as f:
            f.write(json.dumps({"key": key, "val_accuracy": m.val_accuracy,
                                "train_cpu_s": m.train_cpu_s}) + "\n")
        shutil.rmtree(out / f"work-{key}", ignore_errors=True)  # only once the result is kept
        print(f"    validation top-1 {m.val_accuracy * 100:.2f} %", flush=True)
    chosen = choose(rows, opts.tolerance_pt, opts.latency_ms, opts.max_mmacs)
    table = format_table(rows, chosen)
    print(table)
    c = chosen.candidate
    command = (f"adaspring train --channels {','.join(map(str, c.channels))} "
               f"--max-depth {c.depth} --max-resolution {c.resolution}"
               + (f" --stem-stride {c.stem_stride}" if c.stem_stride != 1 else "")
               + (f" --data {opts.data}" if Path(opts.data) != FASHION_MNIST_DIR else "")
               + (f" --input-channels {opts.input_channels}" if opts.input_channels else ""))
    print(f"chosen: {c.id}; train it with `{command}`")
    kept = out / f"{trained_key(c, opts.epochs, opts.subset)}.pt"
    if kept.exists():   # absent when trained.jsonl names it but its net was not kept
        print(f"its full network trained alone: {kept}; to shrink it instead (the full network "
              f"first, as once-for-all): `{command} --init-from {kept} --warmup-epochs 0`")
    report = {"args": {k: v for k, v in asdict(opts).items() if k != "progress"},
              "chosen": c.id, "train_command": command,
              "rows": [{**asdict(m), "candidate": m.candidate.id} for m in rows]}
    (out / "sizing.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "sizing.md").write_text(table + "\n")
    plot(rows, chosen, opts.latency_ms, out / "sizing.png")
    print(f"report: {out / 'sizing.md'}, {out / 'sizing.json'}, {out / 'sizing.png'}")
    return chosen
