"""Size the backbone for its device before training it: ``adaspring size-backbone``.

The paper initialises its backbone with AdaDeep for the target platform; here a backbone is a
full-width channel count per stage, a depth and an input resolution. Every candidate's full model
is timed in the engine it will run on (round-robin, random weights: latency does not depend on
them) and its MACs counted; the candidates within the latency (and MACs) budget are trained
briefly as plain nets (no weight sharing, the same recipe for all) and scored on the validation
hold-out. The choice is the fastest candidate within ``tolerance_pt`` of the most accurate one
that fits: a full model larger than the accuracy it buys only makes every variant slower.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from adaspring_ros.core.data.datasets import FASHION_MNIST_DIR, load_fashion_mnist, train_val_split
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig, StageConfig
from adaspring_ros.core.model.engine import make_engine
from adaspring_ros.core.model.supernet import build_backbone
from adaspring_ros.core.offline.profiler import count_macs, time_round_robin
from adaspring_ros.core.serving.frame_stats import percentile

WIDTH_RATIOS = (1, 2, 4)  # stage channels = base x ratio, as the shipped 24/48/96


@dataclass(frozen=True)
class Candidate:
    """One backbone design: full-width channels per stage, blocks per stage, input side."""

    channels: tuple[int, ...]
    depth: int
    resolution: int

    @property
    def id(self) -> str:
        return f"c{'-'.join(map(str, self.channels))}_d{self.depth}_r{self.resolution}"

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


def candidates(bases: Sequence[int], depths: Sequence[int],
               resolutions: Sequence[int]) -> list[Candidate]:
    space = DEFAULT_SPACE
    for d in depths:
        if d not in space.depths:
            raise ValueError(f"depth {d} is not in the search space {space.depths}")
    for r in resolutions:
        if r not in space.resolutions:
            raise ValueError(f"resolution {r} is not in the search space {space.resolutions}")
    if any(b < 4 for b in bases):
        raise ValueError("channel bases must be >= 4 (a quarter width needs one channel)")
    return [Candidate(tuple(b * k for k in WIDTH_RATIOS), d, r)
            for b in bases for d in depths for r in resolutions]


def measure(cands: Sequence[Candidate], engine_name: str, threads: int, repeats: int,
            images: np.ndarray, progress: bool = False) -> list[Measured]:
    """Latency of every candidate's full model in ``engine_name``, timed round-robin."""
    engine = make_engine(engine_name, threads)
    runners, static = {}, {}
    for c in cands:
        torch.manual_seed(0)
        net = build_backbone(DEFAULT_SPACE, c.channels).eval().materialise(c.full_config())
        static[c.id] = (count_macs(net, c.resolution), sum(p.numel() for p in net.parameters()))
        runners[c.id] = engine.prepare(net, None, batch=1)
    timed = time_round_robin(runners, images, repeats, warmup=10, meter=None, progress=progress)
    out = []
    for c in cands:
        times, _ = timed[c.id]
        out.append(Measured(c, statistics.median(times), percentile(times, 95),
                            *static[c.id]))
    return out


def short_train(c: Candidate, epochs: int, subset: int, threads: int, data: str,
                seed: int = 0, workdir: Path | None = None,
                keep: Path | None = None) -> tuple[float, float]:
    """Train ``c``'s full model alone for ``epochs`` -> (validation top-1, CPU seconds).

    With ``workdir`` the run keeps its state there after every epoch and an interrupted run
    resumes from it (the CPU seconds count every part of the run); without, a temporary one.
    With ``keep`` the trained net is written there (+ ``.sha256``): the chosen design's full
    network is where ``adaspring train --init-from`` can start shrinking."""
    from adaspring_ros.core.offline.train import build_parser, evaluate, load_train_state, train

    with tempfile.TemporaryDirectory(prefix="adaspring-size-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        args = build_parser().parse_args([
            "--channels", ",".join(map(str, c.channels)), "--fixed-config", c.full_config().id,
            "--max-depth", str(c.depth), "--max-resolution", str(c.resolution),
            "--epochs", str(epochs), "--subset", str(subset), "--threads", str(threads),
            "--data", data, "--seed", str(seed), "--workdir", str(work), "--resume",
            "--out", str(keep or Path(tmp) / "backbone.pt"), "--no-progress"])
        model = train(args)
        cpu_s = float(load_train_state(work)["cpu_seconds"])
    full_train = load_fashion_mnist("train", data)
    _, val_idx = train_val_split(len(full_train), min(args.val_size, len(full_train) // 5),
                                 seed=seed)
    model.set_active(c.full_config())
    return evaluate(model.eval(), full_train.subset(val_idx), c.resolution), cpu_s


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


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adaspring size-backbone", description=__doc__.split("\n")[0])
    p.add_argument("--latency-ms", type=float, default=float("inf"),
                   help="budget for the full model's p50 latency in the engine, ms (none)")
    p.add_argument("--max-mmacs", type=float, default=float("inf"),
                   help="budget for the full model's MACs, millions (none)")
    p.add_argument("--engine", default="onnxruntime", help="onnxruntime or torch")
    p.add_argument("--threads", type=int, default=1, help="engine threads, as on the robot")
    p.add_argument("--bases", type=_ints, default=[12, 16, 24, 32],
                   help="first-stage channels to try (stages are x1, x2, x4)")
    p.add_argument("--depths", type=_ints, default=[2, 3], help="blocks per stage to try")
    p.add_argument("--resolutions", type=_ints, default=[24, 28], help="input sides to try")
    p.add_argument("--repeats", type=int, default=100, help="timing rounds")
    p.add_argument("--epochs", type=int, default=2, help="short training run per candidate")
    p.add_argument("--subset", type=int, default=20000, help="training images per run")
    p.add_argument("--train-threads", type=int, default=2)
    p.add_argument("--tolerance-pt", type=float, default=0.3,
                   help="validation points a faster candidate may lose to the best and win")
    p.add_argument("--data", default=str(FASHION_MNIST_DIR))
    p.add_argument("--out", default="runs/size-backbone", help="report directory")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def cli_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("latency_ms", "max_mmacs", "tolerance_pt"):
        if not getattr(args, name) >= 0:
            print(f"adaspring size-backbone: --{name.replace('_', '-')} must be >= 0",
                  file=sys.stderr)
            return 2
    if args.epochs < 1 or args.repeats < 1 or args.subset < 0:
        print("adaspring size-backbone: --epochs and --repeats must be >= 1, --subset >= 0",
              file=sys.stderr)
        return 2
    try:
        cands = candidates(args.bases, args.depths, args.resolutions)
    except ValueError as exc:
        print(f"adaspring size-backbone: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = load_fashion_mnist("test", args.data).images[:64]  # inputs for timing only
    print(f"timing {len(cands)} full models in {args.engine} ({args.threads} thread(s))",
          flush=True)
    rows = measure(cands, args.engine, args.threads, args.repeats, images, args.progress)
    fits = [m for m in rows if within(m, args.latency_ms, args.max_mmacs)]
    if not fits:
        print(format_table(rows, None))
        print("adaspring size-backbone: no candidate meets the budgets", file=sys.stderr)
        return 1
    done = load_trained(out / TRAINED_LOG)
    for k, m in enumerate(sorted(fits, key=lambda m: m.latency_ms_p50)):
        key = trained_key(m.candidate, args.epochs, args.subset)
        if key in done:
            m.val_accuracy, m.train_cpu_s = done[key]
            print(f"[{k + 1}/{len(fits)}] {m.candidate.id}: trained by an earlier run of this "
                  f"report directory, validation top-1 {m.val_accuracy * 100:.2f} %", flush=True)
            continue
        print(f"[{k + 1}/{len(fits)}] training {m.candidate.id} for {args.epochs} epoch(s)",
              flush=True)
        m.val_accuracy, m.train_cpu_s = short_train(m.candidate, args.epochs, args.subset,
                                                    args.train_threads, args.data,
                                                    workdir=out / f"work-{key}",
                                                    keep=out / f"{key}.pt")
        with open(out / TRAINED_LOG, "a") as f:
            f.write(json.dumps({"key": key, "val_accuracy": m.val_accuracy,
                                "train_cpu_s": m.train_cpu_s}) + "\n")
        shutil.rmtree(out / f"work-{key}", ignore_errors=True)  # only once the result is kept
        print(f"    validation top-1 {m.val_accuracy * 100:.2f} %", flush=True)
    chosen = choose(rows, args.tolerance_pt, args.latency_ms, args.max_mmacs)
    table = format_table(rows, chosen)
    print(table)
    c = chosen.candidate
    command = (f"adaspring train --channels {','.join(map(str, c.channels))} "
               f"--max-depth {c.depth} --max-resolution {c.resolution}")
    print(f"chosen: {c.id}; train it with `{command}`")
    kept = out / f"{trained_key(c, args.epochs, args.subset)}.pt"
    if kept.exists():   # absent when an earlier version of this command trained it
        print(f"its full network trained alone: {kept}; to shrink it instead (the full network "
              f"first, as once-for-all): `{command} --init-from {kept} --warmup-epochs 0`")
    report = {"args": {k: v for k, v in vars(args).items() if k != "progress"},
              "chosen": c.id, "train_command": command,
              "rows": [{**asdict(m), "candidate": m.candidate.id} for m in rows]}
    (out / "sizing.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "sizing.md").write_text(table + "\n")
    plot(rows, chosen, args.latency_ms, out / "sizing.png")
    print(f"report: {out / 'sizing.md'}, {out / 'sizing.json'}, {out / 'sizing.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
