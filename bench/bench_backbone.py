"""Benchmark of the self-evolutionary backbone: one set of weights vs nets trained alone.

Side by side in one run, all as compact materialised modules served by ``--engine`` (default:
the perception node's default, ONNX Runtime; int8 stages computing in int8 with activation
ranges calibrated as the profiler does), batch 1, one thread:

* the full backbone;
* the fastest variant within 1.5 points of the full backbone's test top-1 (from the shipped
  profile table), with its latency and energy ratios vs full, and the same for looser
  tolerances (``--points``);
* a hand-crafted compressed net trained alone (fixed half width, full depth);
* subnets trained alone from scratch vs the same subnets taken from the shared weights, and
  the most accurate shared variant of the table at most as slow as each of them;
* materialise time and switch time (``VariantCache`` lookup between two cached variants).

The nets trained alone come from models/baselines/ when its MANIFEST.json lists them (each
file's sha256 checked against the manifest before it is loaded); any other is trained here
(``adaspring train --fixed-config``) into runs/bench/, resumably. ``--baseline-epochs`` says how
long. ``--dry-run`` only finds and checks the files. Nothing here asserts a time: it prints a
table and writes the ``backbone`` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_backbone --baseline-epochs 34 --operator-epochs dwsep=8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from adaspring_ros.cli import main as adaspring
from adaspring_ros.core.data.datasets import load_fashion_mnist
from adaspring_ros.core.energy import DEFAULT_DEVICE, make_meter
from adaspring_ros.core.model.bn_stats import variant_bn_stats
from adaspring_ros.core.model.checkpoint import load_backbone, sha256_of
from adaspring_ros.core.model.config import CompressionConfig, StageConfig
from adaspring_ros.core.model.engine import DEFAULT_ENGINE, ENGINES, Runner, make_engine
from adaspring_ros.core.model.profile_table import (
    fastest_within,
    load_profile_table,
    most_accurate_within,
)
from adaspring_ros.core.model.supernet import ElasticBackbone
from adaspring_ros.core.offline.profiler import (
    bn_calibration_images,
    measure_static,
    time_round_robin,
)
from adaspring_ros.core.offline.recipe import epochs_trained
from adaspring_ros.core.offline.sampling import sample_config
from adaspring_ros.core.paths import default_backbone, default_profile_table
from adaspring_ros.core.serving.server import VariantCache, freeze_heap
from bench.report import ROOT, markdown_table, shown, spread, write_section

HALF_WIDTH = "r28-w50d3ck100f-w50d3ck100f-w50d3ck100f"      # hand-crafted: half width
SUBNETS = ("r20-w50d1ck100f-w50d1ck100f-w50d1ck100f",       # small and shallow
           "r24-w50d2sk100f-w50d2sk100f-w50d2sk100f")       # separable, mid size
RUNS = ROOT / "runs" / "bench"
BASELINES = ROOT / "models" / "baselines"


def most_factorised(space) -> CompressionConfig:
    """The slowest variant to materialise: full size, every conv factorised and quantised."""
    stage = StageConfig(width=space.widths[-1], depth=space.depths[-1], operator="conv",
                        rank=space.ranks[0], int8=True)
    return CompressionConfig(stages=(stage,) * space.num_stages,
                             resolution=space.resolutions[-1])


def shipped_baseline(tag: str) -> Path | None:
    """The file of models/baselines/ for ``alone-<tag>.pt`` if its manifest lists one, after
    checking its sha256 against the manifest; None when the manifest has no such net."""
    manifest = json.loads((BASELINES / "MANIFEST.json").read_text())["files"]
    name = f"alone-{tag}.pt"
    if name not in manifest:
        return None
    path = BASELINES / name
    if not path.is_file():
        raise SystemExit(f"{path} is listed in {BASELINES / 'MANIFEST.json'} but missing")
    digest, expected = sha256_of(path), manifest[name]["sha256"]
    if digest != expected:
        raise SystemExit(f"{path}: sha256 {digest} does not match its manifest's {expected}")
    return path


def existing_baseline(config_id: str) -> tuple[ElasticBackbone, Path] | None:
    """A net trained alone on ``config_id`` that is already there, for any number of epochs:
    one of models/baselines/ (sha256 checked), else the last in runs/bench/; None if neither."""
    for path in sorted(BASELINES.glob(f"alone-{config_id}-e*.pt"), reverse=True):
        shipped = shipped_baseline(path.name.removeprefix("alone-").removesuffix(".pt"))
        if shipped is not None:
            return load_backbone(shipped, verify=False), shipped   # sha256 checked above
    found = sorted(RUNS.glob(f"alone-{config_id}-e*.pt"))
    return (load_backbone(found[-1]), found[-1]) if found else None


def train_alone(config_id: str, epochs: int, retrain: bool, subset: int = 0) -> Path:
    """A backbone trained on ``config_id`` only (cached in runs/bench/)."""
    tag = f"{config_id}-e{epochs}" + (f"-s{subset}" if subset else "")
    out = RUNS / f"alone-{tag}.pt"
    # --out is rewritten after every epoch: a file an interrupted run left is resumed, not used
    finished = out.exists() and epochs_trained(load_backbone(out).meta) == epochs
    if retrain or not finished:
        args = ["--fixed-config", config_id, "--epochs", str(epochs), "--out", str(out),
                "--workdir", str(RUNS / f"work-{tag}"), "--no-progress", "--threads", "2",
                "--resume",
                "--subset", str(subset)]
        if adaspring(["train", *args]) != 0:
            raise RuntimeError(f"training {config_id} alone failed")
    return out


def baseline(config_id: str, epochs: int, retrain: bool, subset: int = 0,
             dry_run: bool = False) -> tuple[ElasticBackbone | None, Path]:
    """The net trained alone on ``config_id`` for ``epochs``, and its file: models/baselines/
    when listed there (unless ``retrain``), else runs/bench/, trained first when not finished.
    ``dry_run``: never train nor load from runs/bench/; (None, the file training writes)."""
    tag = f"{config_id}-e{epochs}" + (f"-s{subset}" if subset else "")
    shipped = None if retrain or subset else shipped_baseline(tag)
    if shipped is not None:
        return load_backbone(shipped, verify=False), shipped   # sha256 checked just above
    if dry_run:
        return None, RUNS / f"alone-{tag}.pt"
    out = train_alone(config_id, epochs, retrain, subset)
    return load_backbone(out), out


def interleaved_latency(nets: dict[str, Runner], rounds: int, calls: int,
                        meter) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Round-robin timing so that machine noise hits every net alike; ms per call, mJ per call."""
    times: dict[str, list[float]] = {k: [] for k in nets}
    joules: dict[str, float] = {k: 0.0 for k in nets}
    gen = torch.Generator().manual_seed(0)
    inputs = {k: torch.randn(1, 1, n.config.resolution, n.config.resolution,
                             generator=gen).numpy() for k, n in nets.items()}
    with torch.inference_mode():
        for name, net in nets.items():
            for _ in range(20):
                net(inputs[name])
        for _ in range(rounds):
            for name, net in nets.items():
                meter.start()
                for _ in range(calls):
                    t0 = time.perf_counter()
                    net(inputs[name])
                    times[name].append((time.perf_counter() - t0) * 1e3)
                joules[name] += meter.stop().joules
    n = rounds * calls
    return times, {k: 1e3 * j / n for k, j in joules.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline-epochs", type=int, default=0,
                   help="epochs of each net trained alone (default: as many as the shared "
                        "backbone was trained)")
    p.add_argument("--operator-epochs", default="", metavar="OP=N",
                   help="nets with OP in every stage get N more epochs alone: the backbone "
                        "had an operator stage (`train --only-operator OP`) of N epochs that "
                        "trained only OP's weights")
    p.add_argument("--retrain", action="store_true", help="retrain the baselines")
    p.add_argument("--train-only", action="store_true", help="train the baselines and stop")
    p.add_argument("--dry-run", action="store_true",
                   help="find the backbone, the profile table and the baselines of "
                        "models/baselines/ (sha256 checked, files loaded), say which "
                        "baselines would be trained, and stop")
    p.add_argument("--baseline-subset", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--engine", default=DEFAULT_ENGINE, choices=ENGINES,
                   help="engine every net is served and measured in (its profile table picks)")
    p.add_argument("--points", default="1.5,3,5",
                   help="accuracy tolerances (points below full) for the fastest-variant rows")
    args = p.parse_args(argv)
    backbone = load_backbone(default_backbone())
    backbone_epochs = epochs_trained(backbone.meta)
    if args.baseline_epochs <= 0:
        if backbone_epochs is None:
            p.error("the backbone does not record how many epochs it was trained in all (it "
                    "continues another file); give --baseline-epochs")
        args.baseline_epochs = backbone_epochs
    extra: dict[str, int] = {}
    if args.operator_epochs:
        op, _, n = args.operator_epochs.partition("=")
        if op not in backbone.space.operators or not n.isdigit():
            p.error(f"--operator-epochs wants OP=N with OP one of {backbone.space.operators}")
        extra[op] = int(n)

    def epochs_alone(config_id: str) -> int:
        operators = {st.operator for st in CompressionConfig.from_id(config_id).stages}
        return args.baseline_epochs + (extra.get(operators.pop(), 0) if len(operators) == 1
                                       else 0)

    if args.train_only or args.dry_run:
        for config_id in (HALF_WIDTH, *SUBNETS):
            epochs = epochs_alone(config_id)
            alone, path = baseline(config_id, epochs, args.retrain, args.baseline_subset,
                                   dry_run=args.dry_run)
            if alone is None:
                print(f"{config_id}: would train {epochs} epochs alone into {shown(path)}")
            else:
                print(f"{config_id}: {shown(path)} ({alone.sha256[:12]}, "
                      f"{epochs_trained(alone.meta)} epochs)")
        if args.dry_run:
            table = load_profile_table(None, args.engine)
            print(f"backbone {default_backbone()} ({backbone.sha256[:12]}, {backbone_epochs} "
                  f"epochs); table {default_profile_table(args.engine)} ({len(table)} variants)")
        return 0

    table = load_profile_table(None, args.engine)
    if table.backbone_sha256 != backbone.sha256:
        print("warning: the profile table was measured on another backbone", file=sys.stderr)
    full_cfg = CompressionConfig.full(backbone.space)
    tolerances = [float(v) for v in args.points.split(",")]
    picks = {pt: fastest_within(table.entries, full_cfg.id, pt) for pt in tolerances}
    if any(e is None for e in picks.values()):
        raise SystemExit("the profile table has no full-backbone entry")
    test = load_fashion_mnist("test")
    bn_images = bn_calibration_images(512)     # as the profiler: BN statistics and int8 ranges

    # name -> (the backbone it is sliced from, config, how it was obtained)
    nets: dict[str, tuple[ElasticBackbone, CompressionConfig, str]] = {
        "full backbone": (backbone, full_cfg, "shared weights"),
    }
    for pt, entry in picks.items():
        nets[f"fastest within {pt:g} pt"] = (backbone, entry.config, "shared weights")
    train_cpu, unprofiled, sources = {}, [], []
    labels = ["hand-crafted half width"] + [f"subnet {'AB'[i]}" for i in range(len(SUBNETS))]
    for label, config_id in zip(labels, (HALF_WIDTH, *SUBNETS), strict=True):
        alone, path = baseline(config_id, epochs_alone(config_id), args.retrain,
                               args.baseline_subset)
        sources.append(shown(path))
        train_cpu[config_id] = float(alone.meta.get("cpu_seconds", 0.0))
        config = CompressionConfig.from_id(config_id)
        nets[f"{label} (alone)"] = (alone, config,
                                    f"trained alone, {epochs_alone(config_id)} epochs")
        if config_id not in backbone.variant_bn:
            backbone.variant_bn[config_id] = variant_bn_stats(backbone, config, bn_images)
        nets[f"{label} (shared)"] = (backbone, config, "shared weights")

    # Accuracy in the engine (batched, 2 threads) and a batch-1 runner on 1 thread each.
    torch.set_num_threads(2)
    eval_engine, engine = make_engine(args.engine, 2), make_engine(args.engine, 1)
    measured, runners = {}, {}

    def measure(name: str) -> None:
        model, config, _ = nets[name]
        measured[name], runners[name] = measure_static(model, config, test, eval_engine, None,
                                                       serving=engine, calib_images=bn_images)

    for name in list(nets):
        measure(name)
    # The dominance question: the best the one file offers at each net's speed or faster, by
    # the table's latency of that config; a config the table lacks gets the table-equivalent
    # latency table_full * t(config) / t(full), timed here round-robin against full.
    torch.set_num_threads(1)
    best_of: dict[str, str] = {}      # "<label> (shared)" -> the row that answers it
    for label, config_id in zip(labels, (HALF_WIDTH, *SUBNETS), strict=True):
        same = table.get(config_id)
        if same is not None:
            budget = same.latency_ms_p50
        else:
            unprofiled.append(config_id)
            pair = {"full": runners["full backbone"], "x": runners[f"{label} (shared)"]}
            t = time_round_robin(pair, bn_images, 100, 10, None)
            budget = (table.get(full_cfg.id).latency_ms_p50 * statistics.median(t["x"][0])
                      / statistics.median(t["full"][0]))
        best = most_accurate_within(table.entries, budget)
        if best is not None:
            best_of[f"{label} (shared)"] = f"best shared at most as slow as {label}"
            nets[best_of[f"{label} (shared)"]] = (backbone, best.config, "shared weights")
    torch.set_num_threads(2)
    for name in best_of.values():
        measure(name)
    torch.set_num_threads(1)
    order = [n for name in nets if name not in best_of.values()
             for n in (name, best_of.get(name)) if n is not None]
    nets = {name: nets[name] for name in order}

    meter = make_meter(DEFAULT_DEVICE)
    times, energy = interleaved_latency(runners, args.rounds, args.calls, meter)

    full_key = "full backbone"
    full_lat = spread(times[full_key])["p50"]
    rows = []
    for name, (_, config, origin) in nets.items():
        entry, s = measured[name], spread(times[name])
        rows.append([
            name, config.id, origin, f"{100 * entry.accuracy:.2f}",
            f"{s['p50']:.3f}", f"{s['p95']:.3f}", f"{s['min']:.3f}-{s['max']:.3f}",
            f"{full_lat / s['p50']:.2f}x", f"{energy[name]:.3f}",
            f"{energy[full_key] / energy[name]:.2f}x",
            f"{entry.macs / 1e6:.2f}", f"{entry.storage_bytes / 1024:.1f}",
        ])

    # Materialise and switch times (1 thread, as on the robot's hot path): profiled variants
    # (with their stored BN statistics), and variants drawn uniformly from the whole space
    # (every operator, low rank and int8 included), plus the most factorised one.
    profiled = [e.config for e in table.entries[:: max(1, len(table) // 40)]]
    gen = torch.Generator().manual_seed(0)
    anywhere = [sample_config(backbone.space, gen, post_training=True)
                for _ in range(60)] + [most_factorised(backbone.space)]
    backbone.materialise(profiled[0])
    freeze_heap()                             # as the perception node does after loading
    mat: dict[str, list[float]] = {"profiled": [], "anywhere": []}
    for _ in range(3):
        for kind, configs in (("profiled", profiled), ("anywhere", anywhere)):
            for config in configs:
                t0 = time.perf_counter()
                backbone.materialise(config)
                mat[kind].append((time.perf_counter() - t0) * 1e3)
    cache = VariantCache(backbone.materialise, capacity=4)
    cache.get(full_cfg)                       # materialised here, off the timed loop
    other = picks[tolerances[-1]].config      # the loosest pick: a variant other than full
    cache.get(other)
    switch = []
    for i in range(2000):
        t0 = time.perf_counter()
        cache.get(other if i % 2 else full_cfg)
        switch.append((time.perf_counter() - t0) * 1e3)
    ms, ma, ss = spread(mat["profiled"]), spread(mat["anywhere"]), spread(switch)

    headers = ["variant", "config", "weights", "top-1 %", "p50 ms", "p95 ms", "min-max ms",
               "speed-up vs full", "energy mJ", "energy gain vs full", "MMACs", "storage KB"]
    body = [
        markdown_table(headers, rows),
        "",
        markdown_table(
            ["operation", "p50 ms", "p95 ms", "max ms", "n"],
            [["materialise(config), profiled variants", f"{ms['p50']:.2f}", f"{ms['p95']:.2f}",
              f"{ms['max']:.2f}", len(mat["profiled"])],
             ["materialise(config), random variants of the whole space + the most factorised",
              f"{ma['p50']:.2f}", f"{ma['p95']:.2f}", f"{ma['max']:.2f}", len(mat["anywhere"])],
             ["switch between two cached variants (VariantCache.get)", f"{ss['p50']:.4f}",
              f"{ss['p95']:.4f}", f"{ss['max']:.4f}", len(switch)]]),
        "",
        f"- Engine: {engine.info.name} {engine.info.version}; int8 stages as the perception "
        "node serves them (activation ranges calibrated on the 512 training images the "
        "profiler uses).",
        f"- Top-1 on the 10k Fashion-MNIST test split, in the engine; latency is batch 1, "
        "1 thread, "
        f"{args.rounds} rounds x {args.calls} calls per net, round-robin so machine noise hits "
        f"all nets alike. Energy: `{meter.method}` (no RAPL in this container).",
        f"- Shared weights: `{backbone.sha256[:12]}` (models/backbone.pt), "
        + (f"trained {backbone_epochs} epochs in all" if backbone_epochs is not None else
           "its epochs in all not recorded in the file") +
        " (recipe and commands in models/README.md); every row marked shared is a slice of "
        "that one file, no retraining, with the variant's own BN statistics (stored in the file "
        "by the profiler; for subnets it did not profile, computed here the same way on 512 "
        "training images) and, for the variants `tune-variants` tuned, their own BN "
        f"scale/shift ({len(backbone.variant_affine)} variants, a few KB each).",
        f"- Trained alone: `adaspring train --fixed-config <id> --epochs {args.baseline_epochs}` "
        + (f" ({args.operator_epochs.replace('=', ': ')} more for the nets with that operator "
           "in every stage, as the backbone's operator stage trained those weights that much "
           "longer)" if extra else "")
        + " (same data and optimiser, one cosine schedule, labels only), CPU time per baseline: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in train_cpu.items())
        + "; files: " + ", ".join(f"`{s}`" for s in sources) + ".",
        f"- Fastest within N pt of full, and the best shared variant at most as slow as each "
        f"net trained alone (by the table's latency of that same config), are picked from the "
        f"shipped profile table ({len(table)} profiled variants; its accuracy is on the test "
        "split, as the runtime search reads it) and re-measured here."
        + (f" Not in the table, so judged by the table's full latency times its latency "
           f"ratio to full timed here (100 round-robin rounds): {', '.join(unprofiled)}."
           if unprofiled else ""),
    ]
    write_section("backbone", "Self-evolutionary backbone vs nets trained alone",
                  ".venv/bin/python -m bench.bench_backbone "
                  f"--baseline-epochs {args.baseline_epochs} --engine {args.engine}"
                  + (f" --operator-epochs {args.operator_epochs}" if extra else ""),
                  "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
