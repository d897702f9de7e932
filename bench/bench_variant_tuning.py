"""Per-variant tuned BN scale/shift: what it buys each variant, on validation (and test).

For the Pareto front of the shipped profile table and the subnets of ``bench_backbone`` (half
width, subnet A, subnet B), the top-1 of each variant materialised from the shipped backbone
(shared affine) and from the tuned one (``adaspring tune-variants``: its own BN scale/shift and
classifier bias, convolutions shared and frozen). Both are compact modules in torch, each with
the variant's exact BN statistics. The tuned backbone is made by this script (into runs/tuned/,
resumable) unless it is already there. Validation is the 5 000-image hold-out of the train split
(every choice of the tuning recipe was made on it); ``--test`` adds the test split, for the final
figure only. Nets trained alone (``bench_backbone``'s: models/baselines/, else runs/bench/) are
added where present.
Writes the ``variant-tuning`` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_variant_tuning --test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from adaspring_ros.cli import main as adaspring
from adaspring_ros.core.data.datasets import load_fashion_mnist, train_val_split
from adaspring_ros.core.data.transforms import preprocess
from adaspring_ros.core.model.bn_stats import variant_bn_stats
from adaspring_ros.core.model.checkpoint import load_backbone
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.engine import make_engine
from adaspring_ros.core.model.profile_table import front_ids
from adaspring_ros.core.offline.evaluate import runner_accuracy
from adaspring_ros.core.offline.profiler import bn_calibration_images, count_macs
from adaspring_ros.core.paths import default_backbone, default_profile_table
from bench.bench_backbone import HALF_WIDTH, SUBNETS, existing_baseline
from bench.report import ROOT, markdown_table, shown, write_section

TUNED = ROOT / "runs" / "tuned"
BENCH_SUBNETS = {HALF_WIDTH: "half width", SUBNETS[0]: "subnet A", SUBNETS[1]: "subnet B"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tuned", default=str(TUNED / "backbone.pt"),
                   help="the tuned backbone (made with the options below if missing)")
    p.add_argument("--epochs", type=int, default=2, help="tuning epochs, if tuning here")
    p.add_argument("--images", type=int, default=20000, help="tuning images, if tuning here")
    p.add_argument("--test", action="store_true", help="also measure on the test split")
    p.add_argument("--engine", default="torch", choices=("torch", "onnxruntime"),
                   help="engine the accuracy is measured in (onnxruntime: int8 stages compute "
                        "in int8 with ranges calibrated on the BN images, as the profiler does)")
    args = p.parse_args(argv)
    table_path = default_profile_table()
    tuned_path = Path(args.tuned)
    if not tuned_path.exists():
        workdir = tuned_path.parent
        rc = adaspring([
            "tune-variants", "--variants-from", str(table_path), "--front-only",
            "--variants", ",".join(BENCH_SUBNETS), "--epochs", str(args.epochs),
            "--images", str(args.images), "--out", str(tuned_path), "--workdir", str(workdir),
            "--resume", "--no-progress"])
        if rc:
            return rc
    results_path = tuned_path.parent / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    per_variant = results.get("variants", {})

    base, tuned = load_backbone(default_backbone()), load_backbone(tuned_path)
    tuning = json.loads(tuned.meta.get("variant_tuning", "{}"))
    if tuning.get("source_sha256") != base.sha256:
        print("warning: the tuned backbone was not tuned from models/backbone.pt",
              file=sys.stderr)
    ids = front_ids(table_path) + list(BENCH_SUBNETS)
    full_id = CompressionConfig.full(base.space).id
    ids = [full_id] + [i for i in dict.fromkeys(ids) if i != full_id]

    full_train = load_fashion_mnist("train")
    _, val_idx = train_val_split(len(full_train), 5000, seed=0)
    splits = {"val": full_train.subset(val_idx)}
    if args.test:
        splits["test"] = load_fashion_mnist("test")
    bn_images = bn_calibration_images(512)
    torch.set_num_threads(2)
    engine = make_engine(args.engine, threads=2)

    def accuracy(model, config) -> dict[str, float]:
        if config.id not in model.variant_bn:      # as the profiler and the tuning compute them
            model.variant_bn[config.id] = variant_bn_stats(model, config, bn_images)
        net, r = model.materialise(config), config.resolution
        ranges = engine.calibrate(net, preprocess(bn_images, r))
        runner = engine.prepare(net, ranges or None, batch=None)
        return {k: 100 * runner_accuracy(runner, d, r) for k, d in splits.items()}

    rows, gains = [], {k: [] for k in splits}
    for config_id in ids:
        config = CompressionConfig.from_id(config_id, base.space)
        before, after = accuracy(base, config), accuracy(tuned, config)
        found = existing_baseline(config_id)
        alone = accuracy(found[0], config) if found else None
        info = per_variant.get(config_id, {})
        name = BENCH_SUBNETS.get(config_id, "full (the teacher)" if config_id == full_id
                                 else "front")
        row = [name, config_id,
               f"{count_macs(base.materialise(config), config.resolution) / 1e6:.2f}"]
        for k in splits:
            delta = after[k] - before[k]
            row += [f"{before[k]:.2f}", f"{after[k]:.2f}", f"{delta:+.2f}"]
            if config_id in tuned.variant_affine:
                gains[k].append(delta)
        row += [" / ".join(f"{alone[k]:.2f}" for k in splits) if alone else "-",
                "yes" if config_id in tuned.variant_affine else "no",
                f"{info['bytes'] / 1024:.1f}" if info.get("bytes") else "-",
                f"{info['cpu_s']:.0f}" if "cpu_s" in info else "-"]
        rows.append(row)
        print(json.dumps({"variant": config_id, "before": before, "after": after,
                          "alone": alone}), flush=True)

    headers = ["variant", "config", "MMACs"]
    for k in splits:
        headers += [f"{k} shared %", f"{k} tuned %", f"{k} gain"]
    headers += ["trained alone % (" + " / ".join(splits) + ")", "tuned kept", "KB", "tuning CPU s"]
    summary = []
    for k, values in gains.items():
        if values:
            summary.append(f"{k}: {statistics.mean(values):+.2f} points on average over the "
                           f"{len(values)} tuned variants (min {min(values):+.2f}, "
                           f"max {max(values):+.2f})")
    targs = tuning.get("args", {})
    body = [
        markdown_table(headers, rows),
        "",
        "- Mean gain, " + "; ".join(summary) + ".",
        f"- Shared: `models/backbone.pt` (`{base.sha256[:12]}`); tuned: `{shown(tuned_path)}` "
        f"(`{tuned.sha256[:12]}`), made by `adaspring tune-variants --variants-from "
        f"{Path(table_path).name} --front-only --variants <the three subnets> --epochs "
        f"{targs.get('epochs', '?')} --images {targs.get('images', '?')} --lr "
        f"{targs.get('lr', '?')} --temperature {targs.get('temperature', '?')}`: each variant's "
        "BN weight/bias and classifier bias, tuned alone on the full network's soft outputs "
        "(KL), convolutions and every shared tensor frozen; a result is kept only if better on "
        "validation. "
        f"CPU time of the whole tuning: {tuning.get('cpu_seconds', 0) / 60:.1f} min "
        "(the teacher's outputs included).",
        f"- Accuracy in {args.engine}"
        + (" (int8 stages compute in int8, activation ranges calibrated on the 512 BN images "
           "of each variant, as the profiler does)" if args.engine == "onnxruntime" else
           " (int8: weights only)")
        + ". Shared and tuned are the same compact module but for the folded BN scale/shift "
        "and classifier bias (same MACs, same latency); each variant uses its exact BN "
        "statistics.",
        "- Validation: the 5 000 held-out training images (the tuning recipe was chosen on "
        "them, and whether to keep each variant's result); the test split"
        + (" (10 000 images) is measured once, for the final figure." if args.test
           else " is not used."),
    ]
    suffix = "" if args.engine == "torch" else f"-{args.engine}"
    write_section("variant-tuning" + suffix,
                  "Per-variant BN scale/shift tuned by distillation (weights shared)"
                  + (f", in {args.engine}" if suffix else ""),
                  ".venv/bin/python -m bench.bench_variant_tuning"
                  + (" --test" if args.test else "")
                  + (f" --engine {args.engine}" if suffix else ""), "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
