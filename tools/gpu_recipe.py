"""Train the shipped Fashion-MNIST chain on one GPU at several times its epochs, within a time
budget, then profile the result.

    python -m tools.gpu_recipe OUT [--budget 540] [--max-scale 4] [--data DIR]
    make gpu-recipe OUT=DIR                       (the same, from the checkout's root)
    python -m tools.gpu_recipe OUT --smoke        (a tiny end-to-end run, CPU or GPU: ~2 min)

The chain is models/README.md's six stages (``SHIPPED_CHAIN``: sandwich, shrinking, student
pool, operator stage, pool, operator stage; 42 epochs) with every stage's epochs multiplied,
at a global batch of ``GPU_BATCH`` (1024) with the learning rates scaled linearly from the
recipe's batch of 128, bf16 autocast, the student pools drawn from the shipped table.

Sizing. bench/bench_training.py (docs/benchmarks.md, section *Training throughput*) measured
each kind of step on a 2-vCPU Xeon (the sandwich: 77 images/s at batch 128, 1 thread; the
42-epoch chain: ~405 CPU-minutes) and models one H200 from those measurements: the host's cost
of a step as on that CPU (Python, dispatch and tiny kernels: 32-100 ms a step; preprocessing
and augmentation: 5-11 us an image), then the step's FLOPs (284-882 MFLOP an image) at 5 % of
the H200's 989 TFLOP/s dense bf16, in sequence. The GPU waits on its host, so that
conservative model puts the 42-epoch chain at ~4.0 min at batch 1024 and three times its
epochs at ~12 min; a host twice as fast as that Xeon (a GPU server's usual CPU) brings 3x to
~7 min. The multiple is therefore
measured, not assumed: the script first times a few steps of each kind of step on the device
(~30 s), then takes the largest multiple (at most ``--max-scale``, in steps of 0.5, at least
0.5) whose chain fits what the budget leaves after the profile's reserve. Every stage writes
its backbone after each epoch and runs under the remaining time, so a wrong estimate costs the
last stages, never the run's results. No GPU was available when this was written: the GPU path
has not yet run end to end; ``--smoke`` has, on the CPU.

Writes under OUT: ``gpu_recipe.log`` (every command and its output), ``summary.json``
(device, calibration, multiple, each stage's epochs, wall time and last validation record),
``<stage>/backbone.pt`` (+ ``.sha256``, and ``last.pt`` to resume: run the same command again),
``backbone.pt`` (+ ``.sha256``: the last stage that finished at least one epoch) and
``profile_table.json`` + ``pareto.png`` (that backbone's profile, ONNX Runtime, of the shipped
table's Pareto front and the three bench subnets). The sharing gap against nets trained alone
for as many epochs is ``bench_backbone``'s (not run here: the baselines need training too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from adaspring_ros.core.data.datasets import FASHION_MNIST_DIR
from adaspring_ros.core.model.profile_table import ProfileTable, pareto_front
from adaspring_ros.core.offline.recipe import (
    BENCH_SUBNETS,
    GPU_BATCH,
    SHIPPED_CHAIN,
    TrainRecipe,
    recipe_options,
    scaled_lr,
)
from bench.bench_training import TABLE, in_process_run, kinds, stage_seconds

ROOT = Path(__file__).resolve().parent.parent
STAGE_OVERHEAD_S = 20.0     # a stage command's start, data loading and per-epoch validation


class Run:
    """The run's folder, its log and its clock."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.deadline = out, time.monotonic() + budget_s
        out.mkdir(parents=True, exist_ok=True)
        self.log_path = out / "gpu_recipe.log"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, line: str) -> None:
        print(line, flush=True)
        with open(self.log_path, "a") as log:
            log.write(line + "\n")

    def command(self, argv: list[str], timeout: float) -> bool:
        """Run ``argv`` (output into the log) for at most ``timeout`` s; whether it finished."""
        self.say("$ " + " ".join(argv))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                            os.environ.get("PYTHONPATH", "")])}
        with open(self.log_path, "a") as log:
            try:
                done = subprocess.run(argv, cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                self.say(f"cut after {timeout:.0f} s (the budget's deadline)")
                return False
        if done.returncode:
            self.say(f"exit status {done.returncode}")
        return done.returncode == 0


def calibrate(device: str, batch: int, steps: int) -> dict[str, float]:
    """Training images/s of each kind of step on ``device`` at ``batch`` (short runs in this
    process; the first, discarded, warms the device up)."""
    recipes = kinds()
    in_process_run(recipes["warm-up"], 2, batch, device)
    return {k: in_process_run(r, steps, batch, device)["rate"] for k, r in recipes.items()}


def pick_scale(rates: dict[str, float], seconds: float, max_scale: float) -> float:
    """The largest multiple of the chain's epochs (0.5 steps) whose training fits ``seconds``."""
    scale = max_scale
    while scale > 0.5:
        total = sum(s for _, s in stage_seconds(rates, scale)) + STAGE_OVERHEAD_S * len(
            SHIPPED_CHAIN)
        if total <= seconds:
            break
        scale -= 0.5
    return scale


def stage_recipe(i: int, epochs: int, args: argparse.Namespace, out: Path) -> TrainRecipe:
    """Stage ``i`` of the chain as this run trains it."""
    stage = SHIPPED_CHAIN[i]
    more = {"epochs": epochs, "batch_size": args.batch, "device": args.device,
            "lr": scaled_lr(stage.recipe().lr, args.batch), "threads": args.threads,
            "data": args.data, "out": str(out / stage.name / "backbone.pt"),
            "workdir": str(out / stage.name), "resume": True, "progress": False,
            "init_from": str(out / SHIPPED_CHAIN[i - 1].name / "backbone.pt") if i else "",
            "students_from": str(TABLE) if stage.pool else ""}
    if args.smoke:
        more.update(subset=256, channels=(8, 16, 32), val_size=500)
    return stage.recipe(**more)


def profile_variants(path: Path) -> Path:
    """The shipped table cut to its Pareto front and the bench subnets, written to ``path``:
    the variants re-profiled on the new backbone."""
    table = ProfileTable.load(TABLE)
    keep = {e.id for e in pareto_front(table.entries)} | set(BENCH_SUBNETS)
    replace(table, entries=[e for e in table.entries if e.id in keep]).save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder for the log, the checkpoints and the table")
    p.add_argument("--budget", type=float, default=540.0,
                   help="seconds for everything (calibration, training, profile)")
    p.add_argument("--profile-reserve", type=float, default=90.0,
                   help="seconds kept for the profile")
    p.add_argument("--max-scale", type=float, default=4.0,
                   help="at most this multiple of the shipped chain's epochs")
    p.add_argument("--batch", type=int, default=GPU_BATCH, help="global batch")
    p.add_argument("--device", default="auto", help="as adaspring train --device")
    p.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1),
                   help="CPU threads (preprocessing, profile accuracy pass)")
    p.add_argument("--data", default=str(FASHION_MNIST_DIR),
                   help="Fashion-MNIST IDX folder (train and t10k files)")
    p.add_argument("--smoke", action="store_true",
                   help="one epoch of each stage on 256 images, narrow channels, a tiny "
                        "profile: the plumbing end to end in a couple of minutes")
    args = p.parse_args(argv)
    if args.smoke:
        args.batch = 32
    run = Run(args.out.resolve(), args.budget)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU)"
    run.say(f"gpu_recipe: GPU {gpu}, torch {torch.__version__}, budget {args.budget:.0f} s")

    rates = calibrate(args.device, args.batch, 2 if args.smoke else 6)
    run.say(f"calibration (images/s at batch {args.batch}): {json.dumps(rates)}")
    scale = 1.0 if args.smoke else pick_scale(
        rates, run.left() - args.profile_reserve, args.max_scale)
    summary = {"gpu": gpu, "torch": torch.__version__, "batch": args.batch,
               "calibration_images_per_s": rates, "scale": scale, "stages": []}
    run.say(f"scale x{scale:g} of the shipped chain's epochs")

    last: Path | None = None
    for i, stage in enumerate(SHIPPED_CHAIN):
        epochs = 1 if args.smoke else max(1, round(stage.epochs * scale))
        recipe = stage_recipe(i, epochs, args, run.out)
        left = run.left() - args.profile_reserve
        if left < STAGE_OVERHEAD_S:
            run.say(f"stage {stage.name}: no time left, the chain stops here")
            break
        changed = [f.name for f in fields(TrainRecipe) if getattr(recipe, f.name) != f.default]
        t0 = time.monotonic()
        finished = run.command([sys.executable, "-m", "adaspring_ros.cli", "train",
                                *recipe_options(recipe, changed)], left)
        out = Path(recipe.out)
        record = {"stage": stage.name, "epochs": epochs, "wall_s": round(time.monotonic() - t0),
                  "finished": finished}
        if out.exists():
            last = out
            history = json.loads(torch.load(out, weights_only=True)["meta"]["history"])
            record["last_epoch"] = history[-1] if history else None
        summary["stages"].append(record)
        run.say(json.dumps(record))
        if not finished:
            break
    if last is None:
        run.say("no stage finished an epoch: nothing to profile")
        (run.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        return 1
    for suffix in ("", ".sha256"):
        shutil.copyfile(f"{last}{suffix}", run.out / f"backbone.pt{suffix}")

    with tempfile.TemporaryDirectory(prefix="adaspring-gpu-recipe-") as tmp:
        variants = profile_variants(Path(tmp) / "variants.json")
        tiny = ["--test-size", "200", "--bn-images", "32", "--repeats", "2"] if args.smoke \
            else ["--repeats", "30"]
        profiled = run.command([
            sys.executable, "-m", "adaspring_ros.cli", "profile", "--backbone",
            str(run.out / "backbone.pt"), "--variants-from", str(variants), "--rounds", "0",
            "--eval-threads", str(args.threads), "--data", args.data, "--no-progress",
            "--out", str(run.out / "profile_table.json"), "--plot", str(run.out / "pareto.png"),
            *tiny], max(1.0, run.left()))
    summary["profiled"] = profiled
    (run.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    run.say(f"done: {run.out} ({'profiled' if profiled else 'not profiled'}), "
            f"{args.budget - run.left():.0f} s")
    return 0 if profiled else 1


if __name__ == "__main__":
    sys.exit(main())
