"""Profile a trained backbone: measure variants of it -> the profile table (``adaspring profile``
drives it; the options are ``ProfileOptions``'s).

The space holds ~12M configs, far too many to measure, so the profiler measures

1. a stratified sample: every operator field (each stage's width, depth, operator, rank, int8 and
   the resolution) cycles through all its choices in shuffled balanced order, so every choice of
   every operator appears about ``sample / len(choices)`` times; plus the full, the smallest and
   the "uniform" variants (every stage at the same width and depth);
2. refinement around the accuracy/latency Pareto front of what was measured: one-step neighbours
   (one operator moved by one choice) of each front member, ``refine`` of them per round.

Before a variant is measured, the exact BN statistics of that whole variant are computed on
``bn_images`` training images of ``data``, the backbone's own task
(``model.bn_stats.variant_bn_stats``, never test images), and stored in the backbone
(``variant_bn``); the backbone file is re-saved with them at the end, so the table's
``backbone_sha256`` is the file that holds every profiled variant's statistics.

For each variant (all on the compact, materialised module, run in ``engine``, the engine the
perception node will serve it in; the table records the engine, its version and thread count):

* int8 calibration (ONNX Runtime): activation ranges on the same training images, stored in the
  entry, so int8 stages compute in int8 and a swap needs no data;
* accuracy: top-1 in the engine on the *test* split of ``data`` (Fashion-MNIST's, or an image
  folder's: never used for training or tuning), preprocessed for the backbone's model card;
* latency: batch-1 wall time with 1 engine thread, median and p95, timed round-robin among all
  variants (each call follows another variant's, as frames follow other work on a robot);
* MACs: counted by forward hooks on every Conv2d/Linear (exact for this architecture);
* params and storage bytes (int8 weights count 1 byte + a float32 scale per output channel);
* peak memory: resident float32 weights + the largest set of activations alive at once during one
  inference, from the shapes forward hooks see (a residual block's input stays alive across its
  body). Measured analytically because the CPU allocator exposes no peak counter and RSS deltas
  of a few hundred KB are noise;
* energy: ``energy.make_meter`` — RAPL where readable, else CPU time x device power model.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from adaspring_ros.core.data.datasets import FASHION_MNIST_DIR, DataError
from adaspring_ros.core.data.transforms import preprocess
from adaspring_ros.core.energy import DEFAULT_DEVICE, describe_machine, make_meter
from adaspring_ros.core.model.checkpoint import load_backbone, save_backbone, write_checksum
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.engine import DEFAULT_ENGINE, Runner, make_engine
from adaspring_ros.core.model.profile_table import (
    ProfileEntry,
    ProfileError,
    ProfileTable,
    fastest_within,
    pareto_front,
)
from adaspring_ros.core.offline.profiler import (
    measure_cold_start,
    measure_static,
    neighbours,
    stratified_sample,
    time_round_robin,
    unique_configs,
)
from adaspring_ros.core.offline.task_data import (
    calibration_images,
    check_classes,
    open_data,
    test_set,
)
from adaspring_ros.core.paths import default_backbone, default_profile_table
from adaspring_ros.core.serving.frame_stats import percentile

__all__ = ["BackboneMismatch", "ProfileOptions", "profile", "plot_pareto", "print_summary",
           "device_record"]


class BackboneMismatch(ProfileError):
    """A table (to extend, or to take accuracies from) measured on another backbone."""


@dataclass(frozen=True)
class ProfileOptions:
    """One profiling run; ``adaspring profile`` has one flag per field (``--bn-images`` for
    ``bn_images``). Empty paths mean the shipped ones (models/backbone.pt,
    models/profile_table.json, pareto.png beside the table) or, for the others, none."""

    backbone: str = ""
    out: str = ""                 # the profile table
    plot: str = ""
    sample: int = 200             # stratified random variants
    refine: int = 40              # Pareto-neighbour variants measured per refinement round
    rounds: int = 2               # refinement rounds
    engine: str = DEFAULT_ENGINE  # measured (and served) in this inference engine
    compare_table: str = ""       # also draw this table's Pareto front (another engine)
    plot_only: bool = False       # only redraw the plot of ``out``
    accuracy_only: bool = False   # accuracy, int8 ranges, static costs: no latency recorded
    latency_only: bool = False    # time accuracy_from's variants here, read no data (latency.py)
    accuracy_from: str = ""       # with latency_only: the accuracy table
    front_only: bool = False      # with latency_only: only its Pareto front
    cold_start_only: bool = False  # only the cold-start term of the table ``out`` (latency.py)
    extend: bool = False          # keep the variants of ``out``, refine, time all again
    remeasure_tuned: bool = False  # with extend: measure the tuned variants' accuracy again
    variants_from: str = ""       # measure this table's variants instead of a fresh sample
    repeats: int = 60             # timed batch-1 runs per variant (round-robin)
    warmup: int = 10
    cold_start_rounds: int = 30   # rounds of the cold-start term (each: every sample idles 50 ms)
    test_size: int = 0            # first N test images (0: all)
    bn_images: int = 512          # training images for each variant's BN statistics (0: keep)
    eval_threads: int = 2         # threads of the batched accuracy pass
    threads: int = 1              # engine threads of the batch-1 latency, as served
    device_profile: str = DEFAULT_DEVICE  # power model used when RAPL is unreadable
    data: str = str(FASHION_MNIST_DIR)  # the backbone's task: IDX files or an image folder
    seed: int = 0
    progress: bool = True


def plot_pareto(table: ProfileTable, path: str | Path, highlight: dict[str, str] | None = None,
                compare: ProfileTable | None = None) -> None:
    """Accuracy vs median latency: every entry (left) and the region of the front (right);
    with ``compare``, the front of another engine's table in grey on both panels.

    The right panel exists because a few very lossy variants stretch the accuracy axis so far
    that the front, which is what the runtime search picks from, looks flat on the left one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lat = [e.latency_ms_p50 for e in table.entries]
    acc = [100 * e.accuracy for e in table.entries]
    front = pareto_front(table.entries)
    front_lat = [e.latency_ms_p50 for e in front]
    front_acc = [100 * e.accuracy for e in front]
    top = max(acc) + 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    for ax, bottom in zip(axes, (max(0.0, min(acc) - 2), min(front_acc) - 1.5), strict=True):
        ax.scatter(lat, acc, s=9, alpha=0.45, label=f"profiled variants ({len(table)})")
        ax.plot(front_lat, front_acc, "-o", ms=3, color="C3",
                label=f"Pareto front, {table.engine_name} ({len(front)})")
        if compare is not None:
            other = pareto_front(compare.entries)
            ax.plot([e.latency_ms_p50 for e in other], [100 * e.accuracy for e in other],
                    "-s", ms=3, color="0.45", alpha=0.8,
                    label=f"Pareto front, {compare.engine_name} ({len(other)})")
        for label, config_id in (highlight or {}).items():
            e = table.get(config_id)
            if e is not None:
                ax.scatter([e.latency_ms_p50], [100 * e.accuracy], s=60, marker="*", zorder=5)
                ax.annotate(label, (e.latency_ms_p50, 100 * e.accuracy), fontsize=8,
                            xytext=(4, -10), textcoords="offset points")
        ax.set_xscale("log")
        # Plain numbers (0.2, 0.5, 1, 2, 5 ms) instead of overlapping powers of ten.
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("batch-1 latency, median (ms, 1 thread, round-robin, log scale)")
        every = lat + ([e.latency_ms_p50 for e in compare.entries] if compare else [])
        ax.set_xlim(min(every) / 1.15, max(every) * 1.4)  # room for the labels of the extremes
        ax.set_ylim(bottom, top)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 on the test split (%)")
    axes[0].set_title("every profiled variant", fontsize=9)
    axes[1].set_title("near the front (zoomed)", fontsize=9)
    axes[1].legend(loc="upper left", fontsize=8)
    fig.suptitle("AdaSpring backbone: variants from one set of weights", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def profile(opts: ProfileOptions) -> ProfileTable:
    """Measure the variants ``opts`` asks for, write the table (+ ``.sha256``) and its plot,
    print a summary; returns the table. BackboneMismatch when ``extend`` meets a table measured
    on another backbone (or on the one a tuned backbone came from, without
    ``remeasure_tuned``).

    With ``accuracy_only`` the table holds accuracies, int8 ranges and static costs, and no
    latency or energy (``measured == ("accuracy",)``, no plot): the refinement still walks this
    machine's quick timing, whose front is kept as ``meta["pareto_front"]``. Each device kind
    then times it with ``latency.profile_latency`` (``latency_only``), which this function does
    not do."""
    from tqdm import tqdm

    backbone_path = Path(opts.backbone or default_backbone())
    out = Path(opts.out or default_profile_table())
    plot = Path(opts.plot or out.with_name("pareto.png"))
    compare = ProfileTable.load(opts.compare_table) if opts.compare_table else None
    if opts.plot_only:
        table = ProfileTable.load(out)
        plot_pareto(table, plot, _highlights(table), compare)
        print(f"wrote {plot}")
        print_summary(table)
        return table
    backbone = load_backbone(backbone_path)
    space, card = backbone.space, backbone.card
    try:
        data = open_data(opts.data)
        check_classes(data, card)
        test = test_set(data, card, opts.test_size)
        bn_images = calibration_images(data, opts.bn_images, opts.seed, card) \
            if opts.bn_images else None
        calib_images = bn_images if bn_images is not None else \
            calibration_images(data, 512, opts.seed, card)
    except DataError as exc:
        raise ProfileError(f"adaspring profile: --data {opts.data}: {exc}") from exc
    if not len(test):
        raise ProfileError(f"adaspring profile: --data {opts.data} has no test images")
    bn_before = set(backbone.variant_bn)
    meter = make_meter(opts.device_profile)
    engine = make_engine(opts.engine, opts.threads)
    eval_engine = make_engine(opts.engine, opts.eval_threads)
    torch.set_num_threads(opts.eval_threads)
    cpu0, wall0 = time.process_time(), time.perf_counter()

    measured: dict[str, ProfileEntry] = {}
    runners: dict[str, Runner] = {}

    def measure(configs: list[CompressionConfig], desc: str) -> None:
        todo = [c for c in configs if c.id not in measured]
        for config in tqdm(todo, desc=desc, disable=not opts.progress, mininterval=2.0):
            measured[config.id], runners[config.id] = measure_static(
                backbone, config, test, eval_engine, bn_images, serving=engine,
                calib_images=calib_images)
        # Latencies of everything so far (the refinement walks the front they make).
        timed = time_round_robin(runners, calib_images, max(5, opts.repeats // 4), 2, meter,
                                 opts.seed, card=card)
        for i, (times, energy_mj) in timed.items():
            measured[i] = replace(measured[i], latency_ms_p50=statistics.median(times),
                                  latency_ms_p95=percentile(times, 95), energy_mj=energy_mj)

    previous = None
    tuned: set[str] = set()
    if opts.extend:
        previous = ProfileTable.load(out)
        previous.require_engine(engine.name)
        if previous.backbone_sha256 not in (backbone.sha256, _tuned_from(backbone)):
            raise BackboneMismatch(
                f"adaspring profile --extend: {out} was measured on backbone "
                f"{previous.backbone_sha256[:12]}, not {backbone.sha256[:12]}"
                + (" or the one it was tuned from" if opts.remeasure_tuned else ""))
        if previous.backbone_sha256 != backbone.sha256 and not opts.remeasure_tuned:
            raise BackboneMismatch(f"adaspring profile --extend: {backbone_path} was tuned "
                                   "from the backbone of the table: add --remeasure-tuned")
        tuned = set(backbone.variant_affine) if opts.remeasure_tuned else set()
        for entry in tqdm(previous.entries, desc="prepare profiled variants",
                          disable=not opts.progress, mininterval=2.0):
            if entry.id in tuned:  # its stored BN statistics stay (the tuning used them)
                fresh, runners[entry.id] = measure_static(
                    backbone, entry.config, test, eval_engine, None, serving=engine,
                    calib_images=calib_images)
                measured[entry.id] = replace(fresh, latency_ms_p50=entry.latency_ms_p50,
                                             latency_ms_p95=entry.latency_ms_p95,
                                             energy_mj=entry.energy_mj)
                continue
            measured[entry.id] = entry
            if opts.repeats:  # else nothing is timed again (and rounds is 0)
                runners[entry.id] = engine.prepare(backbone.materialise(entry.config),
                                                   dict(entry.int8_ranges) or None)
    elif opts.variants_from:
        measure([e.config for e in ProfileTable.load(opts.variants_from).entries], "variants")
    else:
        measure(stratified_sample(space, opts.sample, opts.seed), "variants")
    rng = np.random.default_rng(opts.seed + 1)
    for round_ in range(opts.rounds):
        candidates = unique_configs(n for e in pareto_front(list(measured.values()))
                             for n in neighbours(e.config, space))
        candidates = [c for c in candidates if c.id not in measured]
        if not candidates:
            break
        pick = rng.permutation(len(candidates))[:opts.refine]
        measure([candidates[i] for i in pick], f"Pareto refinement {round_ + 1}")
    torch.set_num_threads(1)
    # extend with repeats 0 keeps every latency of the table (nothing else was measured).
    timed = time_round_robin(runners, calib_images, opts.repeats, opts.warmup, meter, opts.seed,
                             opts.progress, card=card) \
        if opts.repeats and not opts.accuracy_only else {}
    for i, (times, energy_mj) in timed.items():
        measured[i] = replace(measured[i], latency_ms_p50=statistics.median(times),
                              latency_ms_p95=percentile(times, 95), energy_mj=energy_mj)

    entries = sorted(measured.values(), key=lambda e: e.latency_ms_p50)
    cold_ms = previous.cold_start_ms if previous is not None else None
    cold_meta = {}
    if timed:
        cold_ms, method = measure_cold_start(
            runners, [e.id for e in entries if e.id in runners],
            lambda config: preprocess(calib_images[:1], config.resolution, card), opts.seed,
            rounds=opts.cold_start_rounds)
        cold_meta = {"cold_start_method": method}
    front = [e.id for e in pareto_front(entries)]
    if opts.accuracy_only:  # the quick timings only steered the refinement
        entries = [replace(e, latency_ms_p50=0.0, latency_ms_p95=0.0, energy_mj=0.0)
                   for e in entries]
        timing = {"latency_method": "not measured: adaspring profile --latency-only on each "
                                    "device kind; pareto_front is this machine's, from the "
                                    "quick timing that steered the refinement"}
    else:
        timing = {"latency_repeats": opts.repeats, "warmup": opts.warmup,
                  "latency_method": "batch 1, round-robin among all variants (each call after "
                                    "another variant), a real training image as input"}
    if set(backbone.variant_bn) != bn_before:
        meta = dict(getattr(backbone, "meta", {}))
        meta["variant_bn"] = (f"exact BN statistics of {len(backbone.variant_bn)} profiled "
                              f"variants on {len(bn_images)} training images")
        backbone.sha256 = save_backbone(backbone, backbone_path, meta)
    table = ProfileTable(
        space=space,
        entries=entries,
        backbone_sha256=backbone.sha256,
        device=device_record(opts),
        engine=engine.info.to_dict(),
        energy_method="" if opts.accuracy_only else meter.method,
        card=backbone.card,
        measured=("accuracy",) if opts.accuracy_only else ("accuracy", "latency"),
        cold_start_ms=cold_ms,
        meta={
            **(previous.meta if opts.extend else {}),
            "sample": previous.meta.get("sample") if opts.extend else opts.sample,
            "refine": opts.refine, "rounds": opts.rounds,
            "test_images": len(test), **timing, **cold_meta,
            "int8_method": "static: per-channel symmetric int8 weights, per-tensor uint8 "
                           "activations calibrated (min/max) on the BN training images"
                           if opts.engine == "onnxruntime" else "weight-only int8",
            "memory_method": "float32 weights + peak live activations from forward hooks",
            "macs_method": "forward hooks on Conv2d/Linear",
            "pareto_front": front,
            **({"remeasured_tuned": sorted(tuned & set(measured))} if tuned else {}),
            "profiling_cpu_s": round(time.process_time() - cpu0, 1),
            "profiling_wall_s": round(time.perf_counter() - wall0, 1),
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    table.save(out)
    write_checksum(out)
    if opts.accuracy_only:
        full = table.get(CompressionConfig.full(space).id)
        print(f"wrote {out} ({len(table)} variants, accuracy only"
              + (f"; full {full.accuracy:.4f})" if full else ")"))
    else:
        plot_pareto(table, plot, _highlights(table), compare)
        print(f"wrote {out} ({len(table)} variants, {len(front)} on the front) and {plot}")
        print_summary(table)
    print(json.dumps({k: table.meta[k] for k in ("profiling_cpu_s", "profiling_wall_s")}))
    return table


def device_record(opts: ProfileOptions) -> dict[str, object]:
    """What a table records of the machine it was measured on."""
    return {"machine": describe_machine(), "threads": opts.threads, "torch": torch.__version__,
            "power_model": opts.device_profile}


def print_summary(table: ProfileTable, points: Sequence[float] = (0.5, 1.5, 3.0, 5.0)) -> None:
    """The full network and the fastest variant within each tolerance, as models/README lists."""
    f = table.get(CompressionConfig.full(table.space).id)
    if f is None:
        return
    print(f"full {f.accuracy:.4f} @ {f.latency_ms_p50:.3f} ms, {f.energy_mj:.2f} mJ")
    for pt in points:
        best = fastest_within(table.entries, f.id, pt)
        if best is not None:
            print(f"fastest within {pt:g} pt: {best.id} {best.accuracy:.4f} @ "
                  f"{best.latency_ms_p50:.3f} ms ({f.latency_ms_p50 / best.latency_ms_p50:.2f}x), "
                  f"{best.energy_mj:.2f} mJ ({f.energy_mj / best.energy_mj:.2f}x)")


def _tuned_from(backbone) -> str | None:
    """The sha256 of the backbone ``adaspring tune-variants`` tuned this one from, if any."""
    try:
        return json.loads(backbone.meta["variant_tuning"])["source_sha256"]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _highlights(table: ProfileTable) -> dict[str, str]:
    full = CompressionConfig.full(table.space)
    out = {"full": full.id}
    best = fastest_within(table.entries, full.id)
    if best is not None:
        out["fastest within 1.5 pt"] = best.id
    return out
