"""``adaspring tune-variants``: a per-variant BN scale/shift, distilled from the full network.

Every variant of the backbone shares its convolutions, and also the affine parameters of its
batch norms, which the sandwich rule pulls towards the average of all variants. This gives each
chosen variant (e.g. the Pareto front of a profile table) its own BN weight/bias per unit and its
own classifier bias, tuned for that variant alone with every convolution and the classifier
weight frozen: the variant learns the full network's soft outputs (KL divergence at
``--temperature``) on images of the training part of the split, normalised with its exact stored
statistics (``variant_bn``, computed like the profiler does when missing). What is stored per
variant is ``2 * channels`` floats per unit plus ``num_classes`` (a few KB; ``variant_affine`` in
the backbone file); they fold into the convs at ``materialise`` like the shared ones, so latency
is unchanged and the weights stay shared.

Tuning starts from the shared parameters (the untuned variant exactly) and, by default, keeps
the result only when it is more accurate on the validation hold-out (``--keep-worse`` keeps
every result). The test split is never used here. The statistics used to normalise stay the
ones stored (measured with the shared affine upstream, as ``training.variant_bn_stats`` always
measures them), so recomputing them on the same images reproduces the tuned variant exactly.

Resumable: the state after each variant goes to ``<workdir>/state.pt`` (``--resume``), and the
backbone with every variant tuned so far is written to ``--out`` (+ ``.sha256``) each time.

    adaspring tune-variants --variants-from models/profile_table.json --front-only \\
        --out runs/tuned/backbone.pt --workdir runs/tuned
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from adaspring_ros.core.data.datasets import (
    FASHION_MNIST_DIR,
    Dataset,
    load_fashion_mnist,
    train_val_split,
)
from adaspring_ros.core.data.transforms import preprocess_tensor as preprocess
from adaspring_ros.core.model.checkpoint import atomic_save, load_backbone, save_backbone
from adaspring_ros.core.model.config import CompressionConfig, ConfigError
from adaspring_ros.core.model.supernet import ElasticBackbone
from adaspring_ros.core.offline.train import evaluate, lr_at, variant_bn_stats

__all__ = [
    "initial_affine",
    "teacher_logits",
    "distillation_loss",
    "tune_variant",
    "front_ids",
    "cli_main",
]


def initial_affine(model: ElasticBackbone, config: CompressionConfig) -> dict[str, Tensor]:
    """The shared BN weight/bias of every unit ``config`` uses, (2, C) each, and the shared
    classifier bias: the starting point of tuning (the untuned variant exactly).

    The units are those with stored statistics (``variant_bn``), i.e. exactly the ones the
    variant runs; raises KeyError if the variant has none.
    """
    stats = model.variant_bn[config.id]
    modules = dict(model.named_modules())
    out = {}
    for name, s in stats.items():
        bn = modules[name].bn
        c = s.shape[1]
        out[name] = torch.stack([bn.weight[:c], bn.bias[:c]]).detach().clone()
    out["classifier"] = model.classifier.bias.detach().clone()
    return out


@torch.no_grad()
def teacher_logits(model: ElasticBackbone, images: np.ndarray, config: CompressionConfig,
                   batch_size: int = 500) -> Tensor:
    """Logits of ``config`` (the teacher, normally the full network) on uint8 ``images``."""
    was_training, was_active = model.training, model.active
    model.eval()
    model.set_active(config)
    try:
        return torch.cat([model(preprocess(images[i:i + batch_size], config.resolution))
                          for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)
        model.active = was_active


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) of the softened outputs, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1),
                    reduction="batchmean", log_target=True) * (t * t)


def tune_variant(model: ElasticBackbone, config: CompressionConfig, images: np.ndarray,
                 teacher: Tensor, epochs: int = 2, batch_size: int = 256, lr: float = 1e-2,
                 temperature: float = 1.0, seed: int = 0, progress: bool = False,
                 desc: str = "") -> tuple[dict[str, Tensor], float]:
    """Tune ``config``'s own BN weight/bias and classifier bias on ``images`` -> ``teacher``.

    Only those tensors change: every parameter and buffer of ``model`` is left bit-identical
    (they are frozen; BN runs in eval mode with the variant's stored statistics). Adam with a
    cosine schedule, no weight decay. The result is stored in ``model.variant_affine`` and
    returned with the mean distillation loss of the last epoch.
    """
    from tqdm import tqdm

    config = config.validated(model.space)
    if config.id not in model.variant_bn:
        raise ValueError(f"{config.id} has no stored BN statistics (variant_bn): compute them "
                         "first (training.variant_bn_stats)")
    if len(images) != len(teacher):
        raise ValueError(f"{len(images)} images but {len(teacher)} teacher outputs")
    params = {n: t.clone().requires_grad_(True) for n, t in initial_affine(model, config).items()}
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    was_training, was_active = model.training, model.active
    x_all = preprocess(images, config.resolution)
    optimizer = torch.optim.Adam(list(params.values()), lr=lr)
    steps = math.ceil(len(images) / batch_size)
    total = steps * epochs
    gen = torch.Generator().manual_seed(seed)
    last = 0.0
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        model.eval()
        model.set_active(config)
        model.variant_affine[config.id] = params
        bar = tqdm(total=total, desc=desc or config.id, disable=not progress, mininterval=2.0,
                   leave=False)
        for epoch in range(epochs):
            order = torch.randperm(len(images), generator=gen)
            running, n = 0.0, 0
            for i in range(steps):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(epoch * steps + i, total, lr)
                idx = order[i * batch_size:(i + 1) * batch_size]
                loss = distillation_loss(model(x_all[idx]), teacher[idx], temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += float(loss.detach()) * len(idx)
                n += len(idx)
                bar.update(1)
                bar.set_postfix(kl=f"{running / n:.4f}", refresh=False)
            last = running / max(1, n)
        bar.close()
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
        model.active = was_active
    tuned = {n: t.detach().clone() for n, t in params.items()}
    model.variant_affine[config.id] = tuned
    return tuned, last


def front_ids(table_path: str | Path, front_only: bool = True) -> list[str]:
    """Config ids of a profile table: its Pareto front (by latency) or every variant."""
    from adaspring_ros.core.model.profile_table import ProfileTable
    from adaspring_ros.core.offline.profiler import pareto_front

    table = ProfileTable.load(table_path)
    entries = pareto_front(table.entries) if front_only else list(table.entries)
    return [e.id for e in sorted(entries, key=lambda e: e.latency_ms_p50)]


def tuning_split(num_items: int, n_images: int, seed: int = 0, val_size: int = 5000
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(tuning indices, validation indices) of a train split of ``num_items``: the tuning images
    are a seeded draw of ``n_images`` (0: all) from the training part of the split training
    used (``data.train_val_split`` with seed 0), so never a validation image."""
    train_idx, val_idx = train_val_split(num_items, val_size, seed=0)
    if 0 < n_images < len(train_idx):
        train_idx = np.sort(np.random.default_rng(seed).choice(train_idx, n_images,
                                                               replace=False))
    return train_idx, val_idx


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from adaspring_ros.core.offline.profiler import bn_calibration_images

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cpu0 = time.process_time()
    model = load_backbone(args.backbone or None)
    source_sha = model.sha256
    space = model.space
    full = CompressionConfig.full(space)
    ids: list[str] = []
    if args.variants_from:
        ids += front_ids(args.variants_from, args.front_only)
    ids += [v for v in args.variants.split(",") if v]
    configs, seen = [], set()
    for config_id in ids:
        config = CompressionConfig.from_id(config_id, space)
        if config.id == full.id:
            continue        # the teacher itself
        if config.id not in seen:
            seen.add(config.id)
            configs.append(config)
    if not configs:
        raise ConfigError("no variants to tune (give --variants-from and/or --variants)")

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / "state.pt"
    recipe = {k: getattr(args, k) for k in ("epochs", "images", "batch_size", "lr",
                                            "temperature", "bn_images", "seed")}
    results: dict[str, dict] = {}
    restored_bn: dict[str, dict[str, Tensor]] = {}
    cpu_before = 0.0
    if args.resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("source_sha256") != source_sha:
            raise SystemExit(f"{state_path} was tuned from another backbone; remove it or drop "
                             "--resume")
        if json.loads(state.get("recipe", "{}")) != recipe:
            raise SystemExit(f"{state_path} was tuned with {state.get('recipe')}, not {recipe}; "
                             "use the same options, another --workdir, or drop --resume")
        results = json.loads(state["results"])
        for cid, bn in state["variant_bn"].items():
            model.variant_bn[cid] = restored_bn[cid] = bn
        for cid, affine in state["variant_affine"].items():
            model.variant_affine[cid] = affine
        cpu_before = float(state["cpu_seconds"])
        print(f"resumed from {state_path}: {len(results)} variant(s) done", file=sys.stderr)

    full_train = load_fashion_mnist("train", args.data)
    tune_idx, val_idx = tuning_split(len(full_train), args.images, args.seed)
    images, val = full_train.images[tune_idx], full_train.subset(val_idx)
    if args.val_size:
        val = Dataset(val.images[:args.val_size], val.labels[:args.val_size], val.classes)

    # BN statistics for variants the profiler did not store (as the profiler computes them).
    added_bn: dict[str, dict[str, Tensor]] = dict(restored_bn)
    missing = [c for c in configs if c.id not in model.variant_bn]
    if missing:
        bn_images = bn_calibration_images(args.bn_images, args.seed, args.data)
        for config in missing:
            model.variant_bn[config.id] = variant_bn_stats(model, config, bn_images)
            added_bn[config.id] = model.variant_bn[config.id]
    if full.id not in model.variant_bn:
        print("warning: the full network has no stored BN statistics; the teacher uses the "
              "training rows", file=sys.stderr)
    teacher_path = workdir / f"teacher-{source_sha[:12]}-{len(images)}-{args.seed}.pt"
    if teacher_path.exists():
        teacher = torch.load(teacher_path, map_location="cpu", weights_only=True)
    else:
        teacher = teacher_logits(model, images, full)
        atomic_save(teacher, teacher_path)

    def save_state(cpu_total: float) -> None:
        done = {cid for cid in results}
        atomic_save({"source_sha256": source_sha, "recipe": json.dumps(recipe),
                      "results": json.dumps(results),
                      "variant_bn": {c: model.variant_bn[c] for c in added_bn if c in done},
                      "variant_affine": {c: model.variant_affine[c] for c in done
                                         if c in model.variant_affine},
                      "cpu_seconds": cpu_total}, state_path)
        meta = dict(getattr(model, "meta", {}))
        meta["variant_tuning"] = json.dumps({
            "source_sha256": source_sha, "args": {k: v for k, v in vars(args).items()
                                                  if k != "progress"},
            "tuned": sorted(model.variant_affine), "cpu_seconds": round(cpu_total, 1)})
        save_backbone(model, args.out, meta)
        (workdir / "results.json").write_text(json.dumps(
            {"source_sha256": source_sha, "tuning_images": len(images),
             "validation_images": len(val), "cpu_seconds": round(cpu_total, 1),
             "variants": results}, indent=1) + "\n")

    todo = [c for c in configs if c.id not in results]
    outer = tqdm(todo, desc="variants", disable=not args.progress)
    for k, config in enumerate(outer):
        v0 = time.process_time()
        model.variant_affine.pop(config.id, None)
        before = evaluate(model.materialise(config), val, config.resolution)
        _, kl = tune_variant(model, config, images, teacher, args.epochs, args.batch_size,
                             args.lr, args.temperature, args.seed, args.progress,
                             f"{k + 1}/{len(todo)} {config.id}")
        after = evaluate(model.materialise(config), val, config.resolution)
        kept = after > before or args.keep_worse
        if not kept:
            model.variant_affine.pop(config.id)
        n_floats = sum(t.numel() for t in model.variant_affine.get(config.id, {}).values())
        results[config.id] = {"val_before": before, "val_after": after, "kept": kept,
                              "kl": round(kl, 5), "bytes": 4 * n_floats,
                              "cpu_s": round(time.process_time() - v0, 1)}
        print(json.dumps({"variant": config.id, **results[config.id]}), flush=True)
        save_state(cpu_before + time.process_time() - cpu0)
    cpu_total = cpu_before + time.process_time() - cpu0
    save_state(cpu_total)
    if results:
        gains = [100 * (r["val_after"] - r["val_before"]) for r in results.values()]
        print(f"tuned {len(results)} variant(s): validation top-1 {np.mean(gains):+.2f} points "
              f"on average (min {min(gains):+.2f}, max {max(gains):+.2f}); kept "
              f"{sum(r['kept'] for r in results.values())}; CPU time {cpu_total / 60:.1f} min; "
              f"wrote {args.out}", flush=True)
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adaspring tune-variants",
                                description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="", help="default: models/backbone.pt")
    p.add_argument("--variants-from", default="", help="a profile table whose variants to tune")
    p.add_argument("--front-only", action="store_true",
                   help="only the table's Pareto front (accuracy vs latency)")
    p.add_argument("--variants", default="", help="more config ids, comma-separated")
    p.add_argument("--epochs", type=int, default=2, help="passes over the tuning images")
    p.add_argument("--images", type=int, default=20000,
                   help="tuning images drawn from the training part of the split (0: all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam, cosine decay to zero")
    p.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    p.add_argument("--bn-images", type=int, default=512,
                   help="training images for the BN statistics of variants that lack them")
    p.add_argument("--val-size", type=int, default=0,
                   help="first N validation images to measure on (0: all 5000)")
    p.add_argument("--keep-worse", action="store_true",
                   help="keep a tuned variant even if it is less accurate on validation")
    p.add_argument("--out", default="runs/tuned/backbone.pt", help="the tuned backbone file")
    p.add_argument("--workdir", default="runs/tuned", help="resumable state and results.json")
    p.add_argument("--resume", action="store_true", help="continue from <workdir>/state.pt")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(FASHION_MNIST_DIR))
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def cli_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.temperature <= 0:
        print("adaspring tune-variants: --epochs, --batch-size, --lr and --temperature must be "
              "positive", file=sys.stderr)
        return 2
    if not args.variants_from and not args.variants:
        print("adaspring tune-variants: give --variants-from <table> and/or --variants <ids>",
              file=sys.stderr)
        return 2
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
