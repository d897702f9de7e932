"""Benchmark of training: throughput on the CPU with 1 and 2 processes side by side, and the
wall time of each stage of the shipped recipe per device.

* throughput (training images/s over an epoch's training loop, startup, validation and saving
  left out): the sandwich stage at the recipe's global batch of 128, as 1 process x 1 thread,
  1 process x 2 threads and ``torchrun --nproc-per-node 2`` x 1 thread, each a fresh command,
  interleaved over ``--repeats`` short runs: median, min, max;
* each kind of step of the shipped chain (``SHIPPED_CHAIN`` in core/offline/recipe.py: the
  full-network warm-up, the sandwich, shrinking from a frozen teacher, the student pool, the
  operator stage) timed on the CPU, 1 process x 1 thread, -> the wall time of every stage at
  its epochs (55,000 training images an epoch);
* on a GPU, when one is present, the same kinds measured at the recipe's batch and at the GPU
  chain's (tools/gpu_recipe.py); without one, "not measured: no GPU lent", and a model of one
  H200: the host's cost of a step, measured here as the CPU step time at a batch of 4 (Python,
  dispatch and tiny kernels: what a GPU waits on), plus the step's FLOPs (counted here) at 5 %
  of the H200's dense bf16 peak (989 TFLOP/s). It is the estimate tools/gpu_recipe.py is sized
  by; the GPU row replaces it once measured.

Short runs include their first steps, where every new tensor shape builds its kernels, so the
rates are a little below a long run's. Measures and prints; writes the ``training`` section of
docs/benchmarks.md.

    .venv/bin/python -m bench.bench_training [--repeats 3] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import fields, replace
from unittest import mock

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from adaspring_ros.core.data.transforms import preprocess_tensor as preprocess
from adaspring_ros.core.model.checkpoint import load_backbone
from adaspring_ros.core.offline import train as trainer
from adaspring_ros.core.offline.augment import flip_and_shift
from adaspring_ros.core.offline.recipe import (
    GPU_BATCH,
    SHIPPED_CHAIN,
    TrainRecipe,
    recipe_options,
)
from adaspring_ros.core.offline.train import train
from bench.report import ROOT, markdown_table, spread, write_section

BATCH = 128                     # the shipped recipe's global batch
EPOCH_IMAGES = 55_000           # Fashion-MNIST's training split minus the validation hold-out
H200_BF16_FLOPS = 989e12        # dense bf16 peak, NVIDIA's H200 datasheet
GPU_EFFICIENCY = 0.05           # share of that peak assumed for these small convolutions
BACKBONE = ROOT / "models" / "backbone.pt"
TABLE = ROOT / "models" / "profile_table.json"
LAYOUTS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2),
           ("2 processes x 1 thread (torchrun)", 2, 1))


def kinds() -> dict[str, TrainRecipe]:
    """Every kind of step of the shipped chain, by name, as a recipe (stages that repeat one
    are left out): the first stage's warm-up epoch and its sandwich epochs, then each later
    stage continuing the shipped backbone and drawing students from the shipped table."""
    first = SHIPPED_CHAIN[0]
    out = {"warm-up": first.recipe(warmup_epochs=1), "sandwich": first.recipe(warmup_epochs=0)}
    for stage in SHIPPED_CHAIN[1:]:
        out.setdefault(stage.name.rstrip("0123456789"), stage.recipe(
            init_from=str(BACKBONE), students_from=str(TABLE) if stage.pool else ""))
    return out


def short(recipe: TrainRecipe, steps: int, batch: int, threads: int, workdir: str,
          device: str = "cpu") -> TrainRecipe:
    """``recipe`` cut to one epoch of ``steps`` steps at ``batch``."""
    return replace(recipe, epochs=1, subset=steps * batch, batch_size=batch, val_size=100,
                   threads=threads, device=device, progress=False, out=f"{workdir}/bb.pt",
                   workdir=workdir)


def stage_seconds(rates: dict[str, float], epoch_scale: float = 1.0) -> list[tuple[str, float]]:
    """Wall seconds of each stage of the chain from the images/s of each kind of step."""
    rows = []
    for stage in SHIPPED_CHAIN:
        name = stage.name.rstrip("0123456789")
        if stage.continues:
            seconds = stage.epochs * EPOCH_IMAGES / rates[name]
        else:       # one warm-up epoch, then the sandwich
            seconds = EPOCH_IMAGES * (1 / rates["warm-up"] + (stage.epochs - 1) / rates[name])
        rows.append((stage.name, seconds * epoch_scale))
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_run(recipe: TrainRecipe, processes: int, threads: int, steps: int) -> float:
    """Training images/s of one short ``adaspring train`` command (torchrun for several
    processes), from its epoch record."""
    with tempfile.TemporaryDirectory(prefix="adaspring-bench-train-") as tmp:
        launcher = [sys.executable, "-m", "adaspring_ros.cli"] if processes == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
            "--master-port", str(_free_port()), "-m", "adaspring_ros.cli"]
        run = short(recipe, steps, BATCH, threads, tmp)
        argv = [*launcher, "train", *recipe_options(run, [
            f.name for f in fields(TrainRecipe) if getattr(run, f.name) != f.default])]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
        records = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        return float(records[-1]["train_images_per_s"])


class _OpCount(TorchDispatchMode):
    """Counts the aten operations dispatched (forward, backward, optimiser)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def in_process_run(recipe: TrainRecipe, steps: int, batch: int, device: str = "cpu",
                   count: bool = False) -> dict[str, float]:
    """images/s of a short in-process run of ``steps`` steps at ``batch``, 1 thread, and with
    ``count`` (which slows the run down) its aten ops, FLOPs and preprocessing calls."""
    calls = 0

    def counted(*args, **kwargs):
        nonlocal calls
        calls += 1
        return preprocess(*args, **kwargs)

    with tempfile.TemporaryDirectory(prefix="adaspring-bench-train-") as tmp:
        run = short(recipe, steps, batch, 1, tmp, device)
        ops, flops = _OpCount(), FlopCounterMode(display=False)
        if count:
            with ops, flops, mock.patch.object(trainer, "preprocess", counted):
                train(run)
        else:
            train(run)
        rate = json.loads(load_backbone(f"{tmp}/bb.pt").meta["history"])[-1]
        return {"rate": float(rate["train_images_per_s"]), "ops": ops.ops,
                "flops": float(flops.get_total_flops()), "calls": calls}


def data_us_per_image() -> tuple[float, float]:
    """Microseconds per 28 px image of THE preprocessing (at full resolution, the costliest
    the recipe asks for but a resize) and of the flip-and-shift augmentation, 1 thread."""
    images = np.random.default_rng(0).integers(0, 256, (1024, 28, 28), dtype=np.uint8)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(5):
        preprocess(images, 28)
    t1 = time.perf_counter()
    for _ in range(5):
        flip_and_shift(images, rng)
    t2 = time.perf_counter()
    return (t1 - t0) / 5 / 1024 * 1e6, (t2 - t1) / 5 / 1024 * 1e6


def step_model(recipe: TrainRecipe, steps: int, data_us: tuple[float, float]
               ) -> dict[str, float]:
    """The host's cost of a step: fixed (ms, the CPU step at a batch of 4) and per image (µs,
    the step's preprocessing calls and augmentation); and the step's aten ops and FLOPs per
    image, as the difference of a ``steps + 1``-step and a 1-step run (validation and setup
    cancel out)."""
    fixed = 4 / in_process_run(recipe, steps, 4)["rate"] * 1000
    one, more = (in_process_run(recipe, n, 4, count=True) for n in (1, steps + 1))
    calls = (more["calls"] - one["calls"]) / steps
    return {"host_ms": fixed, "host_us_per_image": calls * data_us[0] + data_us[1],
            "ops": (more["ops"] - one["ops"]) / steps,
            "flops_per_image": (more["flops"] - one["flops"]) / (steps * 4)}


def h200_step_ms(model: dict[str, float], batch: int) -> float:
    """The modelled H200 step: the host's cost (as on this CPU, 1 thread), then the FLOPs at
    the assumed efficiency (in sequence, no overlap: conservative)."""
    return model["host_ms"] + model["host_us_per_image"] * batch / 1000 + \
        model["flops_per_image"] * batch / (GPU_EFFICIENCY * H200_BF16_FLOPS) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="short runs of each process layout, interleaved")
    parser.add_argument("--steps", type=int, default=4, help="training steps of a short run")
    parser.add_argument("--gpu-batch", type=int, default=GPU_BATCH,
                        help="the GPU chain's global batch (tools/gpu_recipe.py)")
    parser.add_argument("--gpu-scale", type=float, default=3.0,
                        help="the GPU chain's epochs as a multiple of the shipped chain's")
    args = parser.parse_args(argv)
    load0, wall0 = os.getloadavg(), time.perf_counter()
    recipes = kinds()

    samples: dict[str, list[float]] = {name: [] for name, _, _ in LAYOUTS}
    for _ in range(args.repeats):
        for name, processes, threads in LAYOUTS:
            samples[name].append(command_run(recipes["sandwich"], processes, threads,
                                             args.steps))
            print(f"{name}: {samples[name][-1]:.1f} images/s", flush=True)
    base = spread(samples[LAYOUTS[0][0]])["p50"]
    rows = [(name, *(spread(v)[k] for k in ("p50", "min", "max")), spread(v)["p50"] / base)
            for name, v in samples.items()]
    throughput = markdown_table(
        ["layout (sandwich, batch 128)", "images/s p50", "min", "max", "x 1 process"], rows)

    cpu_rates = {k: in_process_run(r, args.steps, BATCH)["rate"] for k, r in recipes.items()}
    data_us = data_us_per_image()
    models = {k: step_model(r, args.steps, data_us) for k, r in recipes.items()}
    gpu = torch.cuda.is_available()
    gpu_rates = {k: in_process_run(r, args.steps, args.gpu_batch, device="cuda")["rate"]
                 for k, r in recipes.items()} if gpu else {}
    h200 = {k: args.gpu_batch / (h200_step_ms(m, args.gpu_batch) / 1000)
            for k, m in models.items()}
    kind_rows = [(k, cpu_rates[k], f"{m['host_ms']:.0f}", f"{m['host_us_per_image']:.0f}",
                  f"{m['ops']:.0f}", f"{m['flops_per_image'] / 1e6:.0f}",
                  f"{h200_step_ms(m, args.gpu_batch):.0f}", h200[k],
                  gpu_rates.get(k, "not measured: no GPU lent")) for k, m in models.items()]
    kinds_table = markdown_table(
        ["kind of step", "CPU images/s (batch 128)", "host ms/step", "host µs/image",
         "aten ops/step", "MFLOP/image", f"H200 model ms/step (batch {args.gpu_batch})",
         "H200 model images/s", "GPU measured images/s"], kind_rows)
    cpu_stages = dict(stage_seconds(cpu_rates))
    h200_stages = dict(stage_seconds(h200, args.gpu_scale))
    gpu_stages = dict(stage_seconds(gpu_rates, args.gpu_scale)) if gpu else {}
    stage_rows = [(s.name, s.epochs, cpu_stages[s.name] / 60, s.epochs * args.gpu_scale,
                   h200_stages[s.name] / 60,
                   f"{gpu_stages[s.name] / 60:.1f}" if gpu else "not measured: no GPU lent")
                  for s in SHIPPED_CHAIN]
    epochs = sum(s.epochs for s in SHIPPED_CHAIN)
    stage_rows.append(("all", epochs, sum(cpu_stages.values()) / 60, epochs * args.gpu_scale,
                       sum(h200_stages.values()) / 60,
                       f"{sum(gpu_stages.values()) / 60:.1f}" if gpu else "-"))
    stages_table = markdown_table(
        ["stage", "epochs", "CPU min (measured rate, 1 thread)",
         f"GPU chain epochs (x{args.gpu_scale:g}, batch {args.gpu_batch})",
         "H200 min (model)", "GPU min (measured rate)"], stage_rows)
    load1 = os.getloadavg()
    where = f"measured on {torch.cuda.get_device_name()}" if gpu else "not measured: no GPU lent"
    body = (
        f"Throughput of the sandwich stage at the recipe's global batch ({args.repeats} short "
        f"runs of {args.steps} steps per layout, interleaved, each a fresh command; training "
        f"loop only):\n\n{throughput}\n\n"
        f"Each kind of step of the shipped chain on the CPU (1 process x 1 thread), and the "
        f"model of one H200: the host's cost of a step as on this CPU (fixed: the step at a "
        f"batch of 4; per image: THE preprocessing of each of the step's "
        f"forward passes, {data_us[0]:.1f} µs an image, and the augmentation, "
        f"{data_us[1]:.1f} µs), then the step's FLOPs at {GPU_EFFICIENCY:.0%} of "
        f"{H200_BF16_FLOPS / 1e12:.0f} TFLOP/s (dense bf16), in sequence:\n\n"
        f"{kinds_table}\n\n"
        f"Wall time of each stage of the chain (an epoch is {EPOCH_IMAGES:,} images):\n\n"
        f"{stages_table}\n\n"
        f"GPU: {where}. Load average before / after: {load0[0]:.2f} / {load1[0]:.2f} on "
        f"{os.cpu_count()} CPUs (a shared machine: other work ran beside it); "
        f"{time.perf_counter() - wall0:.0f} s in all.")
    write_section("training", "Training throughput and the cost of each recipe stage "
                  "(bench_training)",
                  f"python -m bench.bench_training --repeats {args.repeats} --steps {args.steps}",
                  body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
