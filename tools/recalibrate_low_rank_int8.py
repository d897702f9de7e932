"""Fit a profile table's int8 activation ranges to the backbone's low-rank factors again.

A static int8 graph quantises the activations between the two convolutions of a factorised
(low-rank) int8 stage with ranges calibrated once, stored in the profile table. Those
activations depend on the sign of each factor's basis vector, which ``compact.low_rank_factors``
fixes; a table calibrated on factors of other signs (another LAPACK build chose them) holds
ranges that do not fit, and such a variant then serves several points below its table accuracy.
This re-measures, for exactly the variants with a factorised int8 stage, their int8 ranges and
their accuracy, as ``adaspring profile`` does (the profiler's ``measure_static``, the same 512
training images, the whole test split), and the table's Pareto front; latency, energy and every
other entry stay as measured.

    .venv/bin/python tools/recalibrate_low_rank_int8.py [--table models/profile_table.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from adaspring_ros.core import paths
from adaspring_ros.core.data.datasets import load_fashion_mnist
from adaspring_ros.core.model.checkpoint import load_backbone, write_checksum
from adaspring_ros.core.model.engine import make_engine
from adaspring_ros.core.model.profile_table import ProfileEntry, ProfileTable, pareto_front
from adaspring_ros.core.offline.profiler import bn_calibration_images, measure_static


def factorised_int8(entry: ProfileEntry) -> bool:
    """Whether the variant's static int8 graph quantises between two low-rank factors."""
    return bool(entry.int8_ranges) and any(s.rank < 1 and s.int8 for s in entry.config.stages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default=str(paths.default_profile_table()))
    parser.add_argument("--backbone", default=str(paths.default_backbone()))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    table = ProfileTable.load(args.table)
    table.require_engine("onnxruntime")   # the engine that computes in static int8
    backbone = load_backbone(args.backbone)
    if table.backbone_sha256 != backbone.sha256:
        raise SystemExit(f"{args.table} was measured on backbone {table.backbone_sha256[:12]}, "
                         f"not {backbone.sha256[:12]}")
    torch.set_num_threads(args.threads)
    engine = make_engine("onnxruntime", args.threads)
    test = load_fashion_mnist("test")
    calib = bn_calibration_images(512)   # the profiler's: the BN images of its default run
    start = time.process_time()
    entries, changes = [], []
    for entry in table.entries:
        if factorised_int8(entry):
            fresh, _ = measure_static(backbone, entry.config, test, engine, None,
                                      calib_images=calib)
            changes.append(100 * (fresh.accuracy - entry.accuracy))
            entry = replace(entry, accuracy=fresh.accuracy, int8_ranges=fresh.int8_ranges)
        entries.append(entry)
    cpu_s = round(time.process_time() - start, 1)
    meta = {**table.meta, "pareto_front": [e.id for e in pareto_front(entries)],
            "recalibrated_low_rank_int8": {
        "variants": len(changes), "cpu_s": cpu_s,
        "command": "python tools/recalibrate_low_rank_int8.py",
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}
    replace(table, entries=entries, meta=meta).save(args.table)
    write_checksum(Path(args.table))
    if changes:
        print(f"{len(changes)} variants re-measured in {cpu_s} CPU s: accuracy moved "
              f"{min(changes):+.2f} to {max(changes):+.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
