"""Variant tuning: a per-variant BN scale/shift, distilled from the full network
(``adaspring tune-variants`` drives it; the options are ``TuneOptions``'s).

Every variant of the backbone shares its convolutions, and also the affine parameters of its
batch norms, which the sandwich rule pulls towards the average of all variants. This gives each
chosen variant (e.g. the Pareto front of a profile table) its own BN weight/bias per unit and its
own classifier bias, tuned for that variant alone with every convolution and the classifier
weight frozen: the variant learns the full network's soft outputs (KL divergence at
``temperature``) on images of the training part of the split, normalised with its exact stored
statistics (``variant_bn``, computed like the profiler does when missing). What is stored per
variant is ``2 * channels`` floats per unit plus ``num_classes`` (a few KB; ``variant_affine`` in
the backbone file); they fold into the convs at ``materialise`` like the shared ones, so latency
is unchanged and the weights stay shared.

Tuning starts from the shared parameters (the untuned variant exactly) and, by default, keeps
the result only when it is more accurate on the validation hold-out (``keep_worse`` keeps
every result). The test split is never used here. The statistics used to normalise stay the
ones stored (measured with the shared affine upstream, as ``model.bn_stats.variant_bn_stats``
always measures them), so recomputing them on the same images reproduces the tuned variant
exactly.

Resumable: the state after each variant goes to ``<workdir>/state.pt`` (``resume``), and the
backbone with every variant tuned so far is written to ``out`` (+ ``.sha256``) each time.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from adaspring_ros.core.data.datasets import FASHION_MNIST_DIR
from adaspring_ros.core.data.transforms import preprocess_tensor as preprocess
from adaspring_ros.core.model.bn_stats import variant_bn_stats
from adaspring_ros.core.model.checkpoint import atomic_save, load_backbone, save_backbone
from adaspring_ros.core.model.config import CompressionConfig, ConfigError
from adaspring_ros.core.model.profile_table import front_ids
from adaspring_ros.core.model.supernet import ElasticBackbone
from adaspring_ros.core.offline.evaluate import evaluate
from adaspring_ros.core.offline.losses import distillation_loss
from adaspring_ros.core.offline.optim import lr_at
from adaspring_ros.core.offline.task_data import (
    calibration_images,
    check_classes,
    open_data,
    tuning_sets,
    tuning_split,
)

__all__ = [
    "TuneOptions",
    "TuningStateMismatch",
    "initial_affine",
    "teacher_logits",
    "tune_variant",
    "tuning_split",
    "tune_variants",
]


@dataclass(frozen=True)
class TuneOptions:
    """One tuning run; ``adaspring tune-variants`` has one flag per field (``--keep-worse`` for
    ``keep_worse``). Empty strings mean "none", except ``backbone`` (empty: models/backbone.pt).
    """

    backbone: str = ""
    variants_from: str = ""       # a profile table whose variants to tune
    front_only: bool = False      # only that table's Pareto front
    variants: tuple[str, ...] = ()  # more config ids
    epochs: int = 2               # passes over the tuning images
    images: int = 20000           # tuning images from the training part of the split (0: all)
    batch_size: int = 256
    lr: float = 1e-2              # Adam, cosine decay to zero
    temperature: float = 1.0      # distillation temperature
    bn_images: int = 512          # training images for the BN statistics of variants lacking them
    val_size: int = 0             # first N validation images to measure on (0: all)
    keep_worse: bool = False      # keep a tuned variant even if less accurate on validation
    out: str = "runs/tuned/backbone.pt"
    workdir: str = "runs/tuned"   # resumable state and results.json
    resume: bool = False          # continue from <workdir>/state.pt
    threads: int = 1
    seed: int = 0
    data: str = str(FASHION_MNIST_DIR)  # the backbone's task: IDX files or an image folder
    progress: bool = True

    def provenance(self) -> dict:
        """The options as the command line gave them (ids comma-separated), for the meta."""
        out = {k: v for k, v in asdict(self).items() if k != "progress"}
        out["variants"] = ",".join(self.variants)
        return out


class TuningStateMismatch(ValueError):
    """A resumable tuning state that belongs to another backbone or another recipe."""


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
        return torch.cat([model(preprocess(images[i:i + batch_size], config.resolution,
                                           model.card))
                          for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)
        model.active = was_active


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
                         "first (model.bn_stats.variant_bn_stats)")
    if len(images) != len(teacher):
        raise ValueError(f"{len(images)} images but {len(teacher)} teacher outputs")
    params = {n: t.clone().requires_grad_(True) for n, t in initial_affine(model, config).items()}
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    was_training, was_active = model.training, model.active
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
                x = preprocess(images[idx.numpy()], config.resolution, model.card)
                loss = distillation_loss(model(x), teacher[idx], temperature)
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


def tune_variants(opts: TuneOptions) -> dict:
    """Tune every variant ``opts`` names (the full network excepted: it is the teacher), keep
    each result that validates better, write the tuned backbone, the state and results.json;
    returns the results per config id. TuningStateMismatch when ``resume`` finds the state of
    another backbone or recipe."""
    from tqdm import tqdm

    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    cpu0 = time.process_time()
    model = load_backbone(opts.backbone or None)
    data = open_data(opts.data)        # before anything is written: DataError if unusable
    check_classes(data, model.card)
    source_sha = model.sha256
    space = model.space
    full = CompressionConfig.full(space)
    ids: list[str] = []
    if opts.variants_from:
        ids += front_ids(opts.variants_from, opts.front_only)
    ids += list(opts.variants)
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

    workdir = Path(opts.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / "state.pt"
    recipe = {k: getattr(opts, k) for k in ("epochs", "images", "batch_size", "lr",
                                            "temperature", "bn_images", "seed")}
    results: dict[str, dict] = {}
    restored_bn: dict[str, dict[str, Tensor]] = {}
    cpu_before = 0.0
    if opts.resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("source_sha256") != source_sha:
            raise TuningStateMismatch(f"{state_path} was tuned from another backbone; remove "
                                      "it or drop --resume")
        if json.loads(state.get("recipe", "{}")) != recipe:
            raise TuningStateMismatch(
                f"{state_path} was tuned with {state.get('recipe')}, not {recipe}; use the same "
                "options, another --workdir, or drop --resume")
        results = json.loads(state["results"])
        for cid, bn in state["variant_bn"].items():
            model.variant_bn[cid] = restored_bn[cid] = bn
        for cid, affine in state["variant_affine"].items():
            model.variant_affine[cid] = affine
        cpu_before = float(state["cpu_seconds"])
        print(f"resumed from {state_path}: {len(results)} variant(s) done", file=sys.stderr)

    images, val = tuning_sets(data, model.card, opts.images, opts.seed, opts.val_size)

    # BN statistics for variants the profiler did not store (as the profiler computes them).
    added_bn: dict[str, dict[str, Tensor]] = dict(restored_bn)
    missing = [c for c in configs if c.id not in model.variant_bn]
    if missing:
        bn_images = calibration_images(data, opts.bn_images, opts.seed, model.card)
        for config in missing:
            model.variant_bn[config.id] = variant_bn_stats(model, config, bn_images)
            added_bn[config.id] = model.variant_bn[config.id]
    if full.id not in model.variant_bn:
        print("warning: the full network has no stored BN statistics; the teacher uses the "
              "training rows", file=sys.stderr)
    teacher_path = workdir / f"teacher-{source_sha[:12]}-{len(images)}-{opts.seed}.pt"
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
            "source_sha256": source_sha, "args": opts.provenance(),
            "tuned": sorted(model.variant_affine), "cpu_seconds": round(cpu_total, 1)})
        save_backbone(model, opts.out, meta)
        (workdir / "results.json").write_text(json.dumps(
            {"source_sha256": source_sha, "tuning_images": len(images),
             "validation_images": len(val), "cpu_seconds": round(cpu_total, 1),
             "variants": results}, indent=1) + "\n")

    todo = [c for c in configs if c.id not in results]
    outer = tqdm(todo, desc="variants", disable=not opts.progress)
    for k, config in enumerate(outer):
        v0 = time.process_time()
        model.variant_affine.pop(config.id, None)
        before = evaluate(model.materialise(config), val, config.resolution, card=model.card)
        _, kl = tune_variant(model, config, images, teacher, opts.epochs, opts.batch_size,
                             opts.lr, opts.temperature, opts.seed, opts.progress,
                             f"{k + 1}/{len(todo)} {config.id}")
        after = evaluate(model.materialise(config), val, config.resolution, card=model.card)
        kept = after > before or opts.keep_worse
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
              f"wrote {opts.out}", flush=True)
    return results
