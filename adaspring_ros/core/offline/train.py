"""Train every variant of the backbone at once (``adaspring train`` drives it).

Recipe (once-for-all / BigNAS style, sized for a CPU; the options are ``TrainRecipe``'s):

1. ``warmup_epochs`` of the full network alone, then channels are sorted by importance
   (``ElasticBackbone.reorder_channels``) so that narrow variants keep the strongest filters.
2. Sandwich-rule epochs: every step trains the largest variant on the labels, then the smallest
   (its operator alternating between steps) and ``random_subnets`` random students (seeded
   ``torch.Generator``, see sampling.py) on the largest one's softened predictions (in-place
   distillation); gradients are summed, one optimizer step.
3. BN statistics: every switchable-BN row keeps the running average of the variants that used it
   during training; the profiler then stores the exact statistics of each profiled variant
   (``model.bn_stats.variant_bn_stats``) in the checkpoint, so ``materialise`` needs no data.

``init_from`` continues from a trained backbone (progressive shrinking, as once-for-all): the
students learn from a frozen copy of that file's full network, and the full network itself keeps
learning the labels. A full network trained alone (``fixed_config`` of the full config, as
``adaspring size-backbone`` keeps each candidate) has its channels sorted before the first step.
``only_operator`` (with ``init_from``) is an operator stage: only the weights private to that
operator's units learn (freezing.py), every student runs it in every stage, and the full
network only teaches. ``fixed_config`` trains one variant alone from scratch (the baselines of
the benchmarks).

The data (``data``) is Fashion-MNIST's IDX files or an image folder (task_data.py): training
uses the train split minus a fixed validation hold-out (a folder: its validation split), the
test split is never touched here. The backbone's model card is built from the data before any
step (channels, mean/std, classes, provenance) and saved with every file; Fashion-MNIST keeps
its grey recipe (flips and 2-pixel shifts), an image folder is streamed by the DataLoader's
worker processes and augmented for photos (augment.py). A resumable state is written to
``workdir`` after every epoch, and the current backbone (+ ``.sha256``) to ``out``. Each epoch's
record logs the median and 90th percentile of the summed gradient's L2 norm before any
clipping: what a ``clip_grad`` would cut.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data as tud
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from adaspring_ros.core.data.datasets import DataError, Dataset
from adaspring_ros.core.data.transforms import preprocess_tensor as preprocess
from adaspring_ros.core.model.card import ModelCard
from adaspring_ros.core.model.checkpoint import (
    atomic_save,
    backbone_checkpoint,
    backbone_from_checkpoint,
    save_backbone,
)
from adaspring_ros.core.model.config import CompressionConfig, SearchSpace
from adaspring_ros.core.model.supernet import ElasticBackbone, build_backbone
from adaspring_ros.core.offline.distributed import (
    Ranks,
    average_buffers,
    check_same,
    joined,
    summed,
)
from adaspring_ros.core.offline.evaluate import evaluate
from adaspring_ros.core.offline.freezing import freeze_all_but, restore_frozen_buffers
from adaspring_ros.core.offline.loader import BatchAugment, train_loader
from adaspring_ros.core.offline.losses import student_distillation
from adaspring_ros.core.offline.optim import lr_at, sgd_optimizer
from adaspring_ros.core.offline.precision import Precision, resolve_amp, resolve_device, to_cpu
from adaspring_ros.core.offline.recipe import (
    TrainRecipe,
    epochs_trained,
    initial_backbone,
    train_meta,
    trained_alone,
)
from adaspring_ros.core.offline.sampling import (
    sample_student,
    sized_space,
    smallest_trained,
    student_pool,
    with_operator,
)
from adaspring_ros.core.offline.task_data import (
    augmentation,
    build_card,
    open_data,
    training_sets,
)
from adaspring_ros.core.paths import default_backbone

__all__ = ["TRAIN_STATE", "load_train_state", "train"]

TRAIN_STATE = "last.pt"  # in the workdir: the run after its last finished epoch
AUTO_WORKERS = min(4, max(1, (os.cpu_count() or 2) - 1))  # an image folder's loader processes


def load_train_state(workdir: str | Path) -> dict | None:
    """The resumable state a run keeps in ``workdir`` (weights, optimiser, epoch, history,
    ``cpu_seconds`` of every part of the run), or None if it has none yet."""
    path = Path(workdir) / TRAIN_STATE
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _inputs(images: np.ndarray, resolution: int, device: torch.device,
            card: ModelCard | None) -> Tensor:
    """THE preprocessing for the backbone's card (on the CPU), then to the device the network
    computes on."""
    return preprocess(images, resolution, card).to(device, non_blocking=True)


def _train_step(model: ElasticBackbone, images: np.ndarray, labels: Tensor,
                configs: Sequence[CompressionConfig], label_smoothing: float,
                student_label_weight: float = 0.0, teacher: Tensor | None = None,
                distill_loss: str = "kl", train_largest: bool = True,
                student_images: np.ndarray | None = None, net: nn.Module | None = None,
                precision: Precision | None = None) -> Tensor:
    """Forward/backward of each config (the first is the largest); returns its label loss
    (detached).

    Students learn from the largest variant's predictions (or from ``teacher``, the
    probabilities of a frozen network, when given) through ``distill_loss`` (KL(p || q) or
    AlphaNet's adaptive alpha-divergence), mixed with the labels at ``student_label_weight``
    (0: pure distillation). ``train_largest=False`` (``teacher`` required): every config is a
    student; the returned loss is then the first student's. ``student_images`` (the same
    images without augmentation): the students see these, the largest variant ``images``, and
    its in-place predictions for the students are taken on ``student_images``.

    ``net`` is what computes the forward passes: ``model`` itself (the default) or its
    DistributedDataParallel wrapper, which averages each backward's gradients over the ranks;
    ``model.set_active`` picks the variant either way. ``precision``: autocast and loss scaling
    (none by default); inputs go to the device of ``labels``."""
    if not train_largest and teacher is None:
        raise ValueError("train_largest=False: every config is a student, so a teacher is needed")
    forward = net if net is not None else model
    precision = precision or Precision(labels.device)
    device = labels.device
    teacher_loss: Tensor | None = None
    for k, config in enumerate(configs):
        model.set_active(config)
        largest = k == 0 and train_largest
        seen = images if largest or student_images is None else student_images
        with precision.autocast():
            logits = forward(_inputs(seen, config.resolution, device, model.card))
            if largest:
                loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
                if teacher is None and student_images is None:
                    teacher = logits.detach().float().softmax(1)
                elif teacher is None and len(configs) > 1:
                    with torch.no_grad():
                        teacher = forward(_inputs(student_images, config.resolution, device,
                                                  model.card)).float().softmax(1)
                teacher_loss = loss.detach()
            else:  # distillation from the largest variant (in place) or the frozen network
                loss = student_distillation(logits, teacher, distill_loss)
                if student_label_weight > 0:
                    loss = (1.0 - student_label_weight) * loss + student_label_weight * \
                        F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
                if k == 0:
                    teacher_loss = loss.detach()
        precision.backward(loss)
    return teacher_loss


def _step_configs(space: SearchSpace, step: int, gen: torch.Generator, sandwich: bool,
                  full: CompressionConfig, smallest: CompressionConfig,
                  pool: Sequence[CompressionConfig], r: TrainRecipe
                  ) -> list[CompressionConfig]:
    """The variants of one step, largest (or, in an operator stage, smallest) first: the full
    network alone in the warm-up; then the sandwich, its random students drawn from ``gen``,
    which every rank seeds alike and so draws alike."""
    if sandwich and r.only_operator:
        return [smallest] + [
            with_operator(sample_student(space, gen, r.uniform_subnets, pool, r.pool_share),
                          r.only_operator)
            for _ in range(r.random_subnets)]
    if sandwich:
        low = smallest_trained(space, space.operators[step % len(space.operators)])
        return [full, low] + [sample_student(space, gen, r.uniform_subnets, pool, r.pool_share)
                              for _ in range(r.random_subnets)]
    return [full]


def _validate(model: ElasticBackbone, val_set: Dataset | tud.Dataset, full: CompressionConfig,
              smallest: CompressionConfig) -> dict[str, float]:
    """Validation top-1 of the full and the smallest variant (the full one left active)."""
    model.set_active(full)
    val_full = evaluate(model, val_set, full.resolution, card=model.card)
    model.set_active(smallest)
    val_small = evaluate(model, val_set, smallest.resolution, card=model.card)
    model.set_active(full)
    return {"val_full": val_full, "val_smallest": val_small}


def _on_cpu(model: ElasticBackbone) -> ElasticBackbone:
    """``model`` itself when it is on the CPU, else a CPU copy of it (what is saved)."""
    if all(t.device.type == "cpu" for t in model.state_dict().values()):
        return model
    return backbone_from_checkpoint(to_cpu(backbone_checkpoint(model)))


def train(recipe: TrainRecipe, ranks: Ranks | None = None) -> ElasticBackbone:
    """Run ``recipe`` (resuming from its workdir when ``resume``); returns the trained backbone,
    also written to ``recipe.out`` with its provenance.

    ``ranks``: this process's place in a distributed run (distributed.py; one process by
    default). Each rank trains its share of every global batch and, once the run's process
    group is joined, through DistributedDataParallel, which averages the gradients over the
    ranks (without a process group, the rank's share alone: what it contributes to a step).
    Rank 0 alone shows progress, evaluates, logs and writes."""
    from tqdm import tqdm

    ranks = ranks or Ranks()
    r = recipe
    if not r.out:
        r = replace(r, out=str(default_backbone()))
    if r.fixed_config:
        # A baseline trained alone: one variant on the labels, no sandwich, no distillation,
        # no channel sorting (so "full" and "smallest" below both mean that variant).
        r = replace(r, warmup_epochs=r.epochs)
    device = resolve_device(r.device, ranks.local_rank if ranks.distributed else None)
    r = replace(r, device=str(device), amp=resolve_amp(r.amp, device))
    say = print if ranks.is_main else _silent
    torch.set_num_threads(r.threads)
    space = sized_space(r.max_depth, r.max_resolution, r.resolutions)
    # The data and its card before anything is written: DataError if they cannot be used.
    data = open_data(r.data)
    workers = r.workers if r.workers >= 0 else 0 if data.folder is None else AUTO_WORKERS
    card, data = build_card(data, space.resolutions, channels=r.input_channels,
                            resize=r.resize, interpolation=r.interpolation, mirror=r.mirror,
                            seed=r.seed, workers=workers)
    train_set, val_set = training_sets(data, card, val_size=r.val_size, subset=r.subset,
                                       seed=r.seed, workers=workers)
    if data.folder is not None:
        say(f"data: {data.describe()}; card: {card.channels} channel(s), mean "
            f"{list(card.mean)}, std {list(card.std)}", file=sys.stderr)
    loader = train_loader(train_set, ranks, r.batch_size, r.seed, workers)
    torch.manual_seed(r.seed)
    model = build_backbone(space, r.channels, card.classes, card.channels, r.stem_stride)
    model.card = card
    if r.zero_init_residual:
        model.zero_init_residual()
    frozen: ElasticBackbone | None = None
    prior_epochs: int | None = 0
    if r.init_from:
        frozen = initial_backbone(r.init_from, space, r.channels, r.stem_stride)
        if (frozen.in_channels, frozen.classes) != (model.in_channels, model.classes):
            raise DataError(f"--init-from {r.init_from} was trained on {frozen.in_channels}-"
                            f"channel images of the classes {list(frozen.classes)}, not on "
                            f"{model.in_channels}-channel images of {list(model.classes)}")
        prior_epochs = epochs_trained(frozen.meta)          # None: the file does not say
        start = frozen if frozen.space == space else frozen.with_resolutions(space.resolutions)
        model.load_state_dict(start.state_dict())
        if trained_alone(frozen.meta):
            model.reorder_channels()    # a permutation: the full network's function is kept
        frozen.set_active(CompressionConfig.full(frozen.space))
        frozen.to(device)
    operator = r.only_operator
    if operator:
        trainable = freeze_all_but(model, operator)
        say(f"operator stage: {len(trainable)} {operator} tensors learn, the rest is frozen",
            file=sys.stderr)

    workdir = Path(r.workdir)
    if ranks.is_main:
        workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / TRAIN_STATE
    start_epoch, history, cpu_seconds = 0, [], 0.0
    state = load_train_state(workdir) if r.resume else None
    if state is not None:
        model = backbone_from_checkpoint(state["backbone"], str(state_path))
        if model.card != card:
            say(f"the data's card differs from the one {state_path} was trained with; the "
                "run keeps that one", file=sys.stderr)
            card = model.card
        if operator:
            freeze_all_but(model, operator)
    model.to(device).train()
    precision = Precision(device, r.amp)
    optimizer = sgd_optimizer(model, r.lr, r.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        precision.load_state_dict(state.get("scaler", {}))
        start_epoch, history = int(state["epoch"]), json.loads(state["history"])
        cpu_seconds = float(state.get("cpu_seconds", 0.0))
        say(f"resumed from {state_path} after epoch {start_epoch}", file=sys.stderr)
    # Each backward pass's gradients are averaged over the ranks; a variant leaves the blocks
    # and units it does not use without gradient, hence find_unused_parameters. BN running
    # statistics stay per rank during an epoch and are averaged at its end (distributed.py).
    net = DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True, forward_sync_buffers=False) if joined() else model

    steps_per_epoch = math.ceil(len(train_set) / r.batch_size)
    total_steps = steps_per_epoch * r.epochs
    full, smallest = CompressionConfig.full(space), smallest_trained(space, space.operators[-1])
    if operator:
        smallest = smallest_trained(space, operator)
    pool = student_pool(space, r.students, r.students_from)
    if pool:
        say(f"student pool: {len(pool)} variants, drawn with probability {r.pool_share}",
            file=sys.stderr)
    if r.fixed_config:
        full = smallest = CompressionConfig.from_id(r.fixed_config, space)
    max_norm = r.clip_grad if r.clip_grad > 0 else math.inf
    photo_or_grey = augmentation(data, card, r.crop_scale)
    for epoch in range(start_epoch, r.epochs):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        sandwich = epoch >= r.warmup_epochs
        if epoch == r.warmup_epochs and r.warmup_epochs > 0:
            model.reorder_channels()
        # Per-epoch seeds make a resumed run draw exactly what an uninterrupted one would, and
        # every rank draw what the others do.
        loader.batch_sampler.sampler.set_epoch(epoch)
        augment = BatchAugment(r.seed, epoch, len(train_set), ranks, photo_or_grey)
        gen = torch.Generator().manual_seed(r.seed * 100_003 + epoch)
        bar = tqdm(loader, total=len(loader),
                   desc=f"epoch {epoch + 1}/{r.epochs}" + (" sandwich" if sandwich else ""),
                   disable=not (r.progress and ranks.is_main), mininterval=2.0)
        running = 0.0
        grad_norms: list[Tensor] = []
        for i, (batch, batch_labels) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, r.lr, warmup=steps_per_epoch // 2)
            configs = _step_configs(space, i, gen, sandwich, full, smallest, pool, r)
            images = augment(batch)
            # the students regularised by the largest variant's predictions only (BigNAS)
            clean = batch if r.augment_largest_only else None
            labels = torch.from_numpy(batch_labels).to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            teacher = None
            if frozen is not None and (operator or len(configs) > 1):
                with torch.no_grad(), precision.autocast():
                    teacher = frozen(_inputs(images if clean is None else clean,
                                             frozen.active.resolution, device, card)
                                     ).float().softmax(1)
            loss = float(_train_step(model, images, labels, configs, r.label_smoothing,
                                     r.student_label_weight, teacher, r.distill_loss,
                                     train_largest=not operator, student_images=clean,
                                     net=net, precision=precision))
            # the norm before clipping, logged per epoch: what a clip_grad value would cut
            grad_norms.append(precision.clip_and_step(optimizer, list(model.parameters()),
                                                      max_norm))
            running = loss if i == 0 else 0.98 * running + 0.02 * loss
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)
        bar.close()
        loop_s = time.perf_counter() - wall0
        average_buffers(model)
        if operator:
            restore_frozen_buffers(model, frozen, operator)
        check_same("the variants and augmentation drawn",
                   gen.get_state().numpy().tobytes() + repr(augment.rng.bit_generator.state)
                   .encode())
        val = _validate(model, val_set, full, smallest) if ranks.is_main else {}
        cpu_seconds += summed(time.process_time() - cpu0)
        running = summed(running) / ranks.world_size     # the loss of every rank's share
        if not ranks.is_main:
            continue
        norms = torch.stack(grad_norms).double().cpu().numpy() if grad_norms else np.zeros(1)
        norms = norms[np.isfinite(norms)] if np.isfinite(norms).any() else np.zeros(1)
        record = {"epoch": epoch + 1, "loss": round(running, 4), **val,
                  "wall_s": round(time.perf_counter() - wall0, 1),
                  "cpu_s_total": round(cpu_seconds, 1),
                  "train_images_per_s": round(len(train_set) / loop_s, 1),
                  "grad_norm_p50": round(float(np.median(norms)), 3),
                  "grad_norm_p90": round(float(np.percentile(norms, 90)), 3)}
        if hasattr(train_set, "failures"):  # files of a folder that failed to decode
            record["decode_failures"] = int(train_set.failures.value)
        history.append(record)
        print(json.dumps(record), flush=True)
        saved = _on_cpu(model)
        atomic_save({"backbone": backbone_checkpoint(saved, card=card),
                     "optimizer": to_cpu(optimizer.state_dict()),
                     "scaler": precision.state_dict(), "epoch": epoch + 1,
                     "history": json.dumps(history), "cpu_seconds": cpu_seconds}, state_path)
        save_backbone(saved, r.out, train_meta(r, history, cpu_seconds, prior_epochs,
                                               ranks.world_size), card)

    model.eval()
    model.set_active(full)
    if ranks.is_main:
        digest = save_backbone(_on_cpu(model), r.out,
                               train_meta(r, history, cpu_seconds, prior_epochs,
                                          ranks.world_size), card)
        print(f"wrote {r.out} (sha256 {digest}); CPU time {cpu_seconds / 60:.1f} min",
              flush=True)
    return model


def _silent(*args, **kwargs) -> None:
    """What a rank other than 0 prints: nothing."""
