"""Time an accuracy table's variants on this device: ``adaspring profile --latency-only``.

A profile has two lifetimes. Accuracy, int8 calibration ranges and the static costs (MACs,
params, storage, memory) belong to the backbone and need the data: ``adaspring profile
--accuracy-only`` measures them once, where the data is (core/offline/profiling.py). Latency and
energy belong to a device kind: this stage measures them on each one from the backbone and that
accuracy table alone, and reads no dataset.

Each variant is timed on a seeded noise frame shaped by the model card (its channels, the
variant's resolution; pixels uniform in 0..255, normalised with the card's mean/std): the nets
have no data-dependent control flow, and int8 variants quantise with the ranges stored in the
table, so the input's content does not change the work. Timing is round-robin among all the
variants, batch 1, ``threads`` engine threads, as in the one-shot profile.

Before timing, the backbone's sha256 must be the accuracy table's ``backbone_sha256`` (it holds
the BN statistics of every profiled variant), the table must be of the engine asked for and of
the backbone's model card. The table written holds both measurements and records where the
accuracies came from (``meta["accuracy_from"]``: the file, its sha256, machine, engine).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from adaspring_ros.core.energy import make_meter
from adaspring_ros.core.model.card import ModelCard
from adaspring_ros.core.model.checkpoint import load_backbone, sha256_of, write_checksum
from adaspring_ros.core.model.engine import make_engine
from adaspring_ros.core.model.profile_table import (
    MEASUREMENTS,
    ProfileEntry,
    ProfileError,
    ProfileTable,
    pareto_front,
)
from adaspring_ros.core.offline.profiler import (
    cold_start_sample,
    measure_cold_start,
    time_round_robin,
)
from adaspring_ros.core.offline.profiling import (
    BackboneMismatch,
    ProfileOptions,
    device_record,
    plot_pareto,
    print_summary,
)
from adaspring_ros.core.paths import default_backbone, default_profile_table
from adaspring_ros.core.serving.frame_stats import percentile

__all__ = ["noise_frame", "profile_latency", "profile_cold_start", "LATENCY_METHOD"]

LATENCY_METHOD = ("batch 1, round-robin among all variants (each call after another variant), "
                  "a seeded noise frame shaped by the model card as input")
# Meta of the accuracy table that describes its own timing run, not this one.
_TIMING_META = ("latency_repeats", "warmup", "latency_method", "pareto_front",
                "profiling_cpu_s", "profiling_wall_s", "created", "cold_start_method")


def noise_frame(card: ModelCard, resolution: int, seed: int = 0) -> np.ndarray:
    """One preprocessed float32 frame (1, channels, resolution, resolution): uniform 0..255
    pixels normalised with the card's mean/std, the same for a given (seed, resolution)."""
    rng = np.random.default_rng([seed, resolution])
    pixels = rng.integers(0, 256, (1, card.channels, resolution, resolution)) / 255.0
    mean = np.asarray(card.mean).reshape(1, -1, 1, 1)
    std = np.asarray(card.std).reshape(1, -1, 1, 1)
    return ((pixels - mean) / std).astype(np.float32)


def _entries_to_time(table: ProfileTable, front_only: bool, where: str) -> list[ProfileEntry]:
    """Every entry or, with ``front_only``, the table's Pareto front: by its own latencies,
    else the front of the machine that measured the accuracies (``meta["pareto_front"]``)."""
    if not front_only:
        return list(table.entries)
    if table.has_latency:
        return pareto_front(table.entries)
    ids = table.meta.get("pareto_front") or []
    entries = [e for e in map(table.get, ids) if e is not None]
    if not entries:
        raise ProfileError(f"{where} names no Pareto front (meta 'pareto_front'): time every "
                           "variant (drop --front-only)")
    return entries


def profile_latency(opts: ProfileOptions) -> ProfileTable:
    """Time the variants of the accuracy table ``opts.accuracy_from`` (every one, or its front
    with ``front_only``) on this machine in ``opts.engine``; write the complete table to
    ``opts.out`` (+ ``.sha256``; the plot only when ``opts.plot`` names one) and return it.

    BackboneMismatch when the backbone is not the one the accuracies were measured on;
    ProfileError when the table is of another engine or model card. A different version of the
    same engine is a warning on stderr: the accuracies (int8 rounding above all) were measured
    with the other one.
    """
    from tqdm import tqdm

    wall0, cpu0 = time.perf_counter(), time.process_time()
    source = Path(opts.accuracy_from)
    out = Path(opts.out)
    accuracy = ProfileTable.load(source, need_latency=False)
    backbone_path = Path(opts.backbone or default_backbone())
    backbone = load_backbone(backbone_path)
    if accuracy.backbone_sha256 != backbone.sha256:
        raise BackboneMismatch(
            f"adaspring profile --latency-only: {source} was measured on backbone "
            f"{accuracy.backbone_sha256[:12]}, not {backbone_path} ({backbone.sha256[:12]}); "
            "use the backbone the accuracy run re-saved")
    accuracy.require_card(backbone.card)
    engine = make_engine(opts.engine, opts.threads)
    accuracy.require_engine(engine.name)
    version = accuracy.engine.get("version")
    if version and version != engine.version:
        print(f"adaspring profile: warning: {source} was measured in {engine.name} {version}, "
              f"this machine has {engine.version}; accuracies (int8 rounding above all) may "
              "differ slightly here", file=sys.stderr)
    entries = _entries_to_time(accuracy, opts.front_only, str(source))
    runners = {e.id: engine.prepare(backbone.materialise(e.config), dict(e.int8_ranges) or None)
               for e in tqdm(entries, desc="prepare variants", disable=not opts.progress,
                             mininterval=2.0)}
    torch.set_num_threads(1)
    meter = make_meter(opts.device_profile)
    timed = time_round_robin(
        runners, None, opts.repeats, opts.warmup, meter, opts.seed, opts.progress,
        frames=lambda config: noise_frame(backbone.card, config.resolution, opts.seed))
    timed_entries = sorted(
        (replace(e, latency_ms_p50=statistics.median(timed[e.id][0]),
                 latency_ms_p95=percentile(timed[e.id][0], 95), energy_mj=timed[e.id][1])
         for e in entries), key=lambda e: e.latency_ms_p50)
    cold_ms, cold_method = measure_cold_start(
        runners, [e.id for e in timed_entries],
        lambda config: noise_frame(backbone.card, config.resolution, opts.seed), opts.seed,
        rounds=opts.cold_start_rounds)
    table = ProfileTable(
        space=accuracy.space,
        entries=timed_entries,
        backbone_sha256=backbone.sha256,
        device=device_record(opts),
        engine=engine.info.to_dict(),
        energy_method=meter.method,
        card=accuracy.card,
        measured=MEASUREMENTS,
        cold_start_ms=cold_ms,
        meta={
            **{k: v for k, v in accuracy.meta.items() if k not in _TIMING_META},
            "accuracy_from": {"file": str(source), "sha256": sha256_of(source),
                              "machine": accuracy.device.get("machine", ""),
                              "engine": accuracy.engine,
                              "created": accuracy.meta.get("created", "")},
            "latency_repeats": opts.repeats, "warmup": opts.warmup,
            "latency_method": LATENCY_METHOD,
            "cold_start_method": cold_method,
            "variants_timed": "pareto front" if opts.front_only else "all",
            "pareto_front": [e.id for e in pareto_front(timed_entries)],
            "profiling_cpu_s": round(time.process_time() - cpu0, 1),
            "profiling_wall_s": round(time.perf_counter() - wall0, 1),
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    table.save(out)
    write_checksum(out)
    print(f"wrote {out} ({len(table)} variants timed in {table.meta['profiling_wall_s']} s, "
          f"{len(table.meta['pareto_front'])} on this device's front)")
    if opts.plot:
        plot_pareto(table, opts.plot)
        print(f"wrote {opts.plot}")
    print_summary(table)
    return table


def profile_cold_start(opts: ProfileOptions) -> ProfileTable:
    """Measure this device's cold-start term (``profiler.time_cold_start``) for the latency
    table ``opts.out`` (default: the shipped table of ``opts.engine``) and add it to that file:
    ``cold_start_ms`` and ``meta["cold_start_method"]``, every other byte as it was (a table of
    an older schema stays of that schema). For a table timed before the term was measured; run
    it on the device kind the table was timed on (another machine is a warning on stderr).
    BackboneMismatch / ProfileError as :func:`profile_latency`."""
    out = Path(opts.out or default_profile_table(opts.engine))
    table = ProfileTable.load(out)
    backbone_path = Path(opts.backbone or default_backbone())
    backbone = load_backbone(backbone_path)
    if table.backbone_sha256 != backbone.sha256:
        raise BackboneMismatch(
            f"adaspring profile --cold-start-only: {out} was measured on backbone "
            f"{table.backbone_sha256[:12]}, not {backbone_path} ({backbone.sha256[:12]})")
    engine = make_engine(opts.engine, opts.threads)
    table.require_engine(engine.name)
    machine = device_record(opts)["machine"]
    if table.device.get("machine") not in (None, machine):
        print(f"adaspring profile: warning: {out} was timed on {table.device['machine']!r}, "
              f"this is {machine!r}", file=sys.stderr)
    by_latency = [e.id for e in sorted(table.entries, key=lambda e: e.latency_ms_p50)]
    picked = cold_start_sample(by_latency)
    runners = {i: engine.prepare(backbone.materialise(table.get(i).config),
                                 dict(table.get(i).int8_ranges) or None) for i in picked}
    torch.set_num_threads(1)
    cold_ms, method = measure_cold_start(
        runners, picked,
        lambda config: noise_frame(backbone.card, config.resolution, opts.seed), opts.seed,
        rounds=opts.cold_start_rounds)
    raw = json.loads(out.read_text())
    raw["cold_start_ms"] = cold_ms
    raw.setdefault("meta", {})["cold_start_method"] = (
        f"{method}; added by adaspring profile --cold-start-only on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, entries as timed before")
    table = ProfileTable.from_dict(raw)
    out.write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")  # as ProfileTable.save
    write_checksum(out)
    print(f"wrote {out}: cold_start_ms {cold_ms:.3f} ({len(picked)} variants; the table's "
          "latencies are unchanged)")
    return table
