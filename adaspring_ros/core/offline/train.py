"""``adaspring train``: train every variant of the backbone at once.

Recipe (once-for-all / BigNAS style, sized for a CPU):

1. ``--warmup-epochs`` of the full network alone, then channels are sorted by importance
   (``ElasticBackbone.reorder_channels``) so that narrow variants keep the strongest filters.
2. Sandwich-rule epochs: every step trains the largest variant on the labels, then the smallest
   (its operator alternating between steps) and ``--random-subnets`` random variants (seeded
   ``torch.Generator``) on the largest one's softened predictions (in-place distillation);
   gradients are summed, one optimizer step. Only the operators that own weights are sampled
   (width, depth, conv/dwsep, resolution); low rank and int8 are applied to the trained weights
   afterwards (see ``sample_config``).
3. BN statistics: every switchable-BN row keeps the running average of the variants that used it
   during training; the profiler then stores the exact statistics of each profiled variant
   (``variant_bn_stats``) in the checkpoint, so ``materialise`` needs no data.

``--uniform-subnets P``, ``--student-label-weight W``, ``--distill-loss alpha``,
``--clip-grad NORM``, ``--augment-largest-only`` and ``--zero-init-residual`` are recipe
variants (``bench/bench_recipes.py`` compares them; models/README.md says which the shipped
backbone used). Each epoch's record logs the median and 90th percentile of the summed
gradient's L2 norm before any clipping (``grad_norm_p50``, ``grad_norm_p90``): what a
``--clip-grad`` value would cut.

``--init-from FILE`` continues from a trained backbone instead of a fresh one (progressive
shrinking, as once-for-all: the full network is trained first, then the variants are trained
from it): the students learn from a frozen copy of that file's full network, which a sandwich
run from scratch only has at its end, and the full network itself keeps learning the labels.
Use it with ``--warmup-epochs 0`` (the channels are already sorted) and a smaller ``--lr``.
The file may also be the full network trained alone (``--fixed-config`` of the full config, as
``adaspring size-backbone`` keeps each candidate): its channels were never sorted, so they are
sorted before the first step, and the shrinking starts from the full network exactly as
once-for-all orders it (the full network first, every smaller variant after).

``--students-from TABLE`` / ``--students IDS`` give a student pool: with probability
``--pool-share`` a random student is one of the pool (the Pareto front of a profile table, the
variants the search can actually pick, in their full-rank float form) instead of a draw from the
whole space, whose 55,296 trained forms each get almost no step of their own otherwise.

``--only-operator OP`` (with ``--init-from``) is an operator stage after shrinking: only the
weights private to OP's units (e.g. the depthwise and pointwise weights of "dwsep" and their BN)
learn, everything the other operators use is frozen bit for bit (parameters and BN rows), so the
variants without OP come out identical. Every student, pool members included, runs OP in every
stage; the full network is not trained, it only teaches (the frozen copy of the file).

``--fixed-config ID`` instead trains one variant alone from scratch (the baselines of the
benchmark). Training uses the train split minus a fixed validation hold-out
(``data.train_val_split``); the test split is never touched here. A resumable state is written
every epoch (``--resume``) and the current backbone (+ ``.sha256``) is written to ``--out`` after
every epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaspring_ros.core.data.datasets import (
    FASHION_MNIST_DIR,
    Dataset,
    load_fashion_mnist,
    load_image_folder,
    train_val_split,
)
from adaspring_ros.core.data.transforms import preprocess_tensor as preprocess
from adaspring_ros.core.model.checkpoint import (
    atomic_save,
    backbone_checkpoint,
    backbone_from_checkpoint,
    save_backbone,
)
from adaspring_ros.core.model.config import (
    DEFAULT_SPACE,
    CompressionConfig,
    SearchSpace,
    StageConfig,
)
from adaspring_ros.core.model.operators import ElasticConvBN
from adaspring_ros.core.model.supernet import ElasticBackbone, build_backbone

__all__ = [
    "sample_config",
    "sample_uniform_config",
    "sample_student",
    "student_pool",
    "trained_form",
    "smallest_trained",
    "with_operator",
    "freeze_all_but",
    "restore_frozen_buffers",
    "evaluate",
    "variant_bn_stats",
    "alpha_divergence",
    "adaptive_alpha_loss",
    "train",
    "cli_main",
]


# -- variant sampling ---------------------------------------------------------------------------
def _pick(choices: Sequence, gen: torch.Generator):
    return choices[int(torch.randint(len(choices), (1,), generator=gen))]


def _sample_stage(space: SearchSpace, gen: torch.Generator, post: Callable) -> StageConfig:
    return StageConfig(width=_pick(space.widths, gen), depth=_pick(space.depths, gen),
                       operator=_pick(space.operators, gen), rank=post(space.ranks),
                       int8=post(space.int8))


def sample_config(space: SearchSpace, gen: torch.Generator,
                  post_training: bool = False) -> CompressionConfig:
    """A random variant, drawn from ``gen`` only (never the global RNG).

    Width, depth, operator and resolution are uniform over the space. By default (training) rank
    and int8 stay at full rank / float: they are post-training operators (truncated SVD and
    quantisation of trained weights), so training never sees them and the supernet's weights are
    shaped only by the variants that own weights. Sampling them (straight-through) costs the
    full-precision subnets accuracy for the same epochs (docs/benchmarks.md, design
    measurements). ``post_training=True``
    draws them uniformly too: a variant of the whole space.
    """
    def post(choices: Sequence):
        return _pick(choices, gen) if post_training else choices[-1]

    stages = tuple(_sample_stage(space, gen, post) for _ in range(space.num_stages))
    return CompressionConfig(stages=stages, resolution=_pick(space.resolutions, gen))


def sample_uniform_config(space: SearchSpace, gen: torch.Generator) -> CompressionConfig:
    """A random variant whose stages all make the same width / depth / operator choice (the
    kind of variant a slimmable network trains); full rank, float, random resolution."""
    stage = _sample_stage(space, gen, lambda choices: choices[-1])
    return CompressionConfig(stages=(stage,) * space.num_stages,
                             resolution=_pick(space.resolutions, gen))


def sample_student(space: SearchSpace, gen: torch.Generator,
                   uniform_fraction: float = 0.0,
                   pool: Sequence[CompressionConfig] = (), pool_share: float = 0.0
                   ) -> CompressionConfig:
    """A random sandwich student: with probability ``pool_share`` one of ``pool`` (the
    variants the search can pick), else with probability ``uniform_fraction`` a stage-uniform
    variant, else one of the whole training space. With neither, the generator is consumed
    exactly as ``sample_config`` alone does, so the shipped recipe draws the same students."""
    if pool and pool_share > 0 and float(torch.rand(1, generator=gen)) < pool_share:
        return _pick(pool, gen)
    if uniform_fraction > 0 and float(torch.rand(1, generator=gen)) < uniform_fraction:
        return sample_uniform_config(space, gen)
    return sample_config(space, gen)


def trained_form(space: SearchSpace, config: CompressionConfig) -> CompressionConfig:
    """The variant whose weights training shapes for ``config``: full rank and float in every
    stage (low rank and int8 are applied to the trained weights afterwards)."""
    return replace(config, stages=tuple(replace(s, rank=space.ranks[-1], int8=space.int8[-1])
                                        for s in config.stages))


def student_pool(space: SearchSpace, ids: Sequence[str], table_path: str = ""
                 ) -> list[CompressionConfig]:
    """The distinct trained forms of ``ids`` and of the Pareto front of the profile table at
    ``table_path`` (if given), the full network left out (it is the teacher)."""
    if table_path:
        from adaspring_ros.core.offline.tuning import front_ids

        ids = [*front_ids(table_path), *ids]
    full, pool = CompressionConfig.full(space), {}
    for config_id in ids:
        config = trained_form(space, CompressionConfig.from_id(config_id, space))
        if config.id != full.id:
            pool.setdefault(config.id, config)
    return list(pool.values())


def _ids(csv: str) -> list[str]:
    return [v for v in csv.split(",") if v]


def with_operator(config: CompressionConfig, operator: str) -> CompressionConfig:
    """``config`` with ``operator`` in every stage."""
    return replace(config, stages=tuple(replace(s, operator=operator) for s in config.stages))


def _private_to(name: str, operator: str) -> bool:
    """Whether a parameter or buffer belongs to ``operator``'s units only (``ElasticBlock``
    keeps one unit pair per operator under ``units.<operator>``)."""
    return f".units.{operator}." in name


def freeze_all_but(model: ElasticBackbone, operator: str) -> list[str]:
    """Freeze every parameter but those of ``operator``'s units; returns the names left
    trainable (refused if there are none: the space has no such operator)."""
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(_private_to(name, operator))
        if p.requires_grad:
            trainable.append(name)
    if not trainable:
        raise ValueError(f"the backbone has no units of operator {operator!r}")
    return trainable


def restore_frozen_buffers(model: ElasticBackbone, source: ElasticBackbone, operator: str
                           ) -> None:
    """Copy back the BN rows of every module outside ``operator``'s units from ``source``:
    training mode updates the running statistics of the frozen stem and shortcuts too."""
    mine = dict(model.named_buffers())
    for name, buf in source.named_buffers():
        if not _private_to(name, operator):
            mine[name].copy_(buf)


def smallest_trained(space: SearchSpace, operator: str) -> CompressionConfig:
    """The sandwich rule's smallest variant: narrowest, shallowest, lowest resolution, with
    ``operator`` in every stage (the trainer alternates it so both unit sets get the bound)."""
    stage = StageConfig(width=space.widths[0], depth=space.depths[0], operator=operator,
                        rank=space.ranks[-1], int8=space.int8[-1])
    return CompressionConfig(stages=(stage,) * space.num_stages,
                             resolution=space.resolutions[0])


# -- data ---------------------------------------------------------------------------------------
def _augment(images: np.ndarray, rng: np.random.Generator, shift: int = 2) -> np.ndarray:
    """Random horizontal flip and a random translation of up to ``shift`` pixels (uint8)."""
    n, h, w = images.shape[:3]
    flip = rng.random(n) < 0.5
    images = np.where(flip[:, None, None], images[:, :, ::-1], images)
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift)))
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, resolution: int, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (compact or elastic in its active variant) on ``data``."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for idx in _batches(len(data), batch_size, None):
            logits = model(preprocess(data.images[idx], resolution))
            correct += int((logits.argmax(1) == torch.from_numpy(data.labels[idx])).sum())
    finally:
        model.train(was_training)
    return correct / max(1, len(data))


@torch.no_grad()
def variant_bn_stats(model: ElasticBackbone, config: CompressionConfig, images: np.ndarray,
                     batch_size: int = 256) -> dict[str, Tensor]:
    """Exact BN statistics of one whole variant: unit name -> (2, C) mean / unbiased var.

    The per-choice rows of a switchable BN average over every upstream context the row was
    trained in, which costs a narrow or mixed variant many points; the statistics of the variant
    itself (what BN recalibration in once-for-all computes) restore them. The supernet is not
    modified: BNs run with momentum 0 (batch statistics, no tracking) and hooks read their input.
    """
    units = {n: m for n, m in model.named_modules() if isinstance(m, ElasticConvBN)}
    moments: dict[str, list] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            x = inputs[0].double()
            acc = moments.setdefault(name, [0, 0.0, 0.0])
            acc[0] += x.numel() // x.shape[1]
            acc[1] = acc[1] + x.sum((0, 2, 3))
            acc[2] = acc[2] + (x * x).sum((0, 2, 3))
        return hook

    handles = [u.bn.register_forward_hook(hook_for(n)) for n, u in units.items()]
    saved = [(u.bn, u.bn.momentum) for u in units.values()]
    was_training, was_active = model.training, model.active
    try:
        for bn, _ in saved:
            bn.momentum = 0.0
        model.train()
        model.set_active(config)
        for i in range(0, len(images), batch_size):
            model(preprocess(images[i:i + batch_size], config.resolution))
    finally:
        for h in handles:
            h.remove()
        for bn, momentum in saved:
            bn.momentum = momentum
        model.train(was_training)
        model.active = was_active
    out = {}
    for name, (n, s, sq) in moments.items():
        mean = s / n
        var = (sq - n * mean * mean) / max(1, n - 1)
        out[name] = torch.stack([mean, var.clamp_min(0.0)]).float()
    return out


# -- training -----------------------------------------------------------------------------------
def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        # BN affine parameters and biases are not weight-decayed (standard ResNet practice).
        (no_decay if p.ndim == 1 else decay).append(p)
    return torch.optim.SGD([
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ], lr=lr, momentum=0.9, nesterov=True)


def lr_at(step: int, total: int, base: float, warmup: int = 0) -> float:
    """Linear warm-up (``warmup`` steps) then cosine decay to zero at ``total``, per step."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1.0 + math.cos(math.pi * min(1.0, progress)))


def alpha_divergence(student_logits: Tensor, teacher_prob: Tensor, alpha: float,
                     clip: float = 5.0) -> tuple[Tensor, Tensor]:
    """Per-sample alpha-divergence D_alpha(p || q) of the student ``q`` from the teacher ``p``,
    and a surrogate whose gradient (through the student only) is that of D_alpha.

    D_alpha = sum_i q_i f(p_i / q_i) with f(t) = (t^alpha - 1) / (alpha (alpha - 1)); alpha = 1 is
    KL(p || q), the usual distillation loss, which averages over the teacher's modes; negative
    alpha penalises a student that is confident where the teacher is not. The importance weights
    (p/q)^alpha are clipped at ``clip`` so that one near-zero student probability cannot blow up
    the gradient (AlphaNet, Wang et al. 2021).
    """
    log_q = student_logits.log_softmax(1)
    q = log_q.detach().exp()
    p = teacher_prob.detach()
    if abs(alpha - 1.0) < 1e-6:
        value = (p * (p.clamp_min(1e-12).log() - log_q.detach())).sum(1)
        rho = p / q
    else:
        weight = (p / q).pow(alpha).clamp(max=clip)
        base = 1.0 / (alpha * (alpha - 1.0))
        value = (q * (weight - 1.0)).sum(1) * base
        rho = weight / alpha + base
    # d/dlogits sum_i q_i f(p_i/q_i) = -sum_i q_i rho_i dlog q_i with rho = t^alpha/alpha + base.
    surrogate = -(q * rho * log_q).sum(1)
    return value, surrogate


def adaptive_alpha_loss(student_logits: Tensor, teacher_prob: Tensor, alpha_min: float = -1.0,
                        alpha_max: float = 1.0, clip: float = 5.0) -> Tensor:
    """AlphaNet's distillation loss: per sample, the larger of D_alpha_min and D_alpha_max, so
    the student is pushed both to cover the teacher's modes and not to be over-confident;
    batch mean of the matching surrogate (its value is not the divergence, its gradient is)."""
    low, low_grad = alpha_divergence(student_logits, teacher_prob, alpha_min, clip)
    high, high_grad = alpha_divergence(student_logits, teacher_prob, alpha_max, clip)
    return torch.where(low > high, low_grad, high_grad).mean()


DISTILL_LOSSES = ("kl", "alpha")


def _train_step(model: ElasticBackbone, images: np.ndarray, labels: Tensor,
                configs: Sequence[CompressionConfig], label_smoothing: float,
                student_label_weight: float = 0.0, teacher: Tensor | None = None,
                distill_loss: str = "kl", train_largest: bool = True,
                student_images: np.ndarray | None = None) -> float:
    """Forward/backward of each config (the first is the largest); returns its label loss.

    Students learn from the largest variant's predictions (or from ``teacher``, the
    probabilities of a frozen network, when given) through ``distill_loss`` (KL(p || q) or
    AlphaNet's adaptive alpha-divergence), mixed with the labels at ``student_label_weight``
    (0: pure distillation). ``train_largest=False`` (``teacher`` required): every config is a
    student; the returned loss is then the first student's. ``student_images`` (the same
    images without augmentation): the students see these, the largest variant ``images``, and
    its in-place predictions for the students are taken on ``student_images``."""
    if not train_largest and teacher is None:
        raise ValueError("train_largest=False: every config is a student, so a teacher is needed")
    teacher_loss = 0.0
    for k, config in enumerate(configs):
        model.set_active(config)
        largest = k == 0 and train_largest
        seen = images if largest or student_images is None else student_images
        logits = model(preprocess(seen, config.resolution))
        if largest:
            loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
            if teacher is None and student_images is None:
                teacher = logits.detach().softmax(1)
            elif teacher is None and len(configs) > 1:
                with torch.no_grad():
                    teacher = model(preprocess(student_images, config.resolution)).softmax(1)
            teacher_loss = float(loss.detach())
        else:  # distillation from the largest variant (in place) or the frozen network
            if distill_loss == "alpha":
                loss = adaptive_alpha_loss(logits, teacher)
            else:
                loss = F.kl_div(logits.log_softmax(1), teacher, reduction="batchmean")
            if student_label_weight > 0:
                loss = (1.0 - student_label_weight) * loss + student_label_weight * \
                    F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
            if k == 0:
                teacher_loss = float(loss.detach())
        loss.backward()
    return teacher_loss


def sized_space(max_depth: int, max_resolution: int) -> SearchSpace:
    """The default space cut to a backbone of at most ``max_depth`` blocks per stage and
    ``max_resolution`` input pixels (``adaspring size-backbone`` picks them for a device)."""
    space = DEFAULT_SPACE
    if max_depth not in space.depths or max_resolution not in space.resolutions:
        raise ValueError(f"max depth must be one of {space.depths} and max resolution one of "
                         f"{space.resolutions}, got {max_depth} and {max_resolution}")
    return replace(space, depths=tuple(d for d in space.depths if d <= max_depth),
                   resolutions=tuple(r for r in space.resolutions if r <= max_resolution))


TRAIN_STATE = "last.pt"  # in --workdir: the run after its last finished epoch


def load_train_state(workdir: str | Path) -> dict | None:
    """The resumable state a run keeps in ``workdir`` (weights, optimiser, epoch, history,
    ``cpu_seconds`` of every part of the run), or None if it has none yet."""
    path = Path(workdir) / TRAIN_STATE
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def train(args: argparse.Namespace) -> ElasticBackbone:
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    if args.image_folder:
        full_train = load_image_folder(args.image_folder)
    else:
        full_train = load_fashion_mnist("train", args.data)
    train_idx, val_idx = train_val_split(len(full_train), min(args.val_size, len(full_train) // 5),
                                         seed=args.seed)
    if args.subset:
        train_idx = train_idx[:args.subset]
        val_idx = val_idx[:max(100, args.subset // 10)]
    train_set, val_set = full_train.subset(train_idx), full_train.subset(val_idx)
    space = sized_space(args.max_depth, args.max_resolution)
    channels = tuple(int(c) for c in args.channels.split(","))
    model = build_backbone(space, channels, full_train.classes)
    if args.zero_init_residual:
        model.zero_init_residual()
    frozen: ElasticBackbone | None = None
    prior_epochs: int | None = 0
    if args.init_from:
        frozen = _initial_backbone(args.init_from, space, channels)
        prior_epochs = epochs_trained(frozen.meta)          # None: the file does not say
        model.load_state_dict(frozen.state_dict())
        if trained_alone(frozen.meta):
            model.reorder_channels()    # a permutation: the full network's function is kept
        frozen.set_active(CompressionConfig.full(space))
    operator = args.only_operator
    if operator:
        trainable = freeze_all_but(model, operator)
        print(f"operator stage: {len(trainable)} {operator} tensors learn, the rest is frozen",
              file=sys.stderr)
    model.train()
    optimizer = _optimizer(model, args.lr, args.weight_decay)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / TRAIN_STATE
    start_epoch, history, cpu_seconds = 0, [], 0.0
    if args.resume and (state := load_train_state(workdir)) is not None:
        model = backbone_from_checkpoint(state["backbone"], str(state_path)).train()
        if operator:
            freeze_all_but(model, operator)
        optimizer = _optimizer(model, args.lr, args.weight_decay)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]), json.loads(state["history"])
        cpu_seconds = float(state.get("cpu_seconds", 0.0))
        print(f"resumed from {state_path} after epoch {start_epoch}", file=sys.stderr)

    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    full, smallest = CompressionConfig.full(space), smallest_trained(space, space.operators[-1])
    if operator:
        smallest = smallest_trained(space, operator)
    pool = student_pool(space, _ids(args.students), args.students_from)
    if pool:
        print(f"student pool: {len(pool)} variants, drawn with probability {args.pool_share}",
              file=sys.stderr)
    if args.fixed_config:
        # A baseline trained alone: one variant on the labels, no sandwich, no distillation,
        # no channel sorting (so "full" and "smallest" below both mean that variant).
        full = smallest = CompressionConfig.from_id(args.fixed_config, space)
        args.warmup_epochs = args.epochs
    for epoch in range(start_epoch, args.epochs):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        sandwich = epoch >= args.warmup_epochs
        if epoch == args.warmup_epochs and args.warmup_epochs > 0:
            model.reorder_channels()
        # Per-epoch seeds make a resumed run draw exactly what an uninterrupted one would.
        rng = np.random.default_rng([args.seed, epoch])
        gen = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
        bar = tqdm(_batches(len(train_set), args.batch_size, rng), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{args.epochs}" + (" sandwich" if sandwich else ""),
                   disable=not args.progress, mininterval=2.0)
        running = 0.0
        grad_norms: list[float] = []
        for i, idx in enumerate(bar):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, args.lr, warmup=steps_per_epoch // 2)
            configs = [full]
            if sandwich and operator:
                configs = [smallest] + [
                    with_operator(sample_student(space, gen, args.uniform_subnets, pool,
                                                 args.pool_share), operator)
                    for _ in range(args.random_subnets)]
            elif sandwich:
                low = smallest_trained(space, space.operators[i % len(space.operators)])
                configs += [low] + [sample_student(space, gen, args.uniform_subnets,
                                                   pool, args.pool_share)
                                    for _ in range(args.random_subnets)]
            images = _augment(train_set.images[idx], rng)
            # the students regularised by the largest variant's predictions only (BigNAS)
            clean = train_set.images[idx] if args.augment_largest_only else None
            labels = torch.from_numpy(train_set.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            teacher = None
            if frozen is not None and (operator or len(configs) > 1):
                with torch.no_grad():
                    teacher = frozen(preprocess(images if clean is None else clean,
                                                full.resolution)).softmax(1)
            loss = _train_step(model, images, labels, configs, args.label_smoothing,
                               args.student_label_weight, teacher, args.distill_loss,
                               train_largest=not operator, student_images=clean)
            # the norm before clipping, logged per epoch: what a --clip-grad value would cut
            grad_norms.append(float(nn.utils.clip_grad_norm_(
                model.parameters(), args.clip_grad if args.clip_grad > 0 else math.inf)))
            optimizer.step()
            running = loss if i == 0 else 0.98 * running + 0.02 * loss
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)
        bar.close()
        if operator:
            restore_frozen_buffers(model, frozen, operator)
        model.set_active(full)
        val_full = evaluate(model, val_set, full.resolution)
        model.set_active(smallest)
        val_small = evaluate(model, val_set, smallest.resolution)
        model.set_active(full)
        cpu_seconds += time.process_time() - cpu0
        norms = np.asarray(grad_norms) if grad_norms else np.zeros(1)
        record = {"epoch": epoch + 1, "loss": round(running, 4), "val_full": val_full,
                  "val_smallest": val_small, "wall_s": round(time.perf_counter() - wall0, 1),
                  "cpu_s_total": round(cpu_seconds, 1),
                  "grad_norm_p50": round(float(np.median(norms)), 3),
                  "grad_norm_p90": round(float(np.percentile(norms, 90)), 3)}
        history.append(record)
        print(json.dumps(record), flush=True)
        atomic_save({"backbone": backbone_checkpoint(model), "optimizer": optimizer.state_dict(),
                     "epoch": epoch + 1, "history": json.dumps(history),
                     "cpu_seconds": cpu_seconds}, state_path)
        save_backbone(model, args.out, _meta(args, history, cpu_seconds, prior_epochs))

    model.eval()
    model.set_active(full)
    digest = save_backbone(model, args.out, _meta(args, history, cpu_seconds, prior_epochs))
    print(f"wrote {args.out} (sha256 {digest}); CPU time {cpu_seconds / 60:.1f} min", flush=True)
    return model


def _initial_backbone(path: str, space: SearchSpace, channels: tuple[int, ...]
                      ) -> ElasticBackbone:
    """The trained backbone ``--init-from`` continues from (checksum verified), in eval mode,
    refused unless it has the architecture being trained."""
    from adaspring_ros.core.model.checkpoint import load_backbone

    initial = load_backbone(path)
    if initial.space != space or tuple(initial.arch()["stage_channels"]) != channels:
        raise ValueError(f"--init-from {path}: its space or channels "
                         f"{initial.arch()['stage_channels']} differ from the ones being trained "
                         f"{list(channels)} (set --channels, --max-depth, --max-resolution)")
    alone = trained_alone(initial.meta)
    if alone and alone != CompressionConfig.full(space).id:
        raise ValueError(f"--init-from {path}: a net trained alone ({alone}) can seed the "
                         f"shrinking only if it is the full network "
                         f"{CompressionConfig.full(space).id}")
    for p in initial.parameters():
        p.requires_grad_(False)
    return initial.eval()


def trained_alone(meta: dict) -> str | None:
    """The config id a backbone file was trained alone as (``--fixed-config``), else None."""
    return json.loads(meta.get("args", "{}")).get("fixed_config") or None


def epochs_trained(meta: dict) -> int | None:
    """Epochs a backbone was trained in all, ``--init-from`` chains included (what a baseline
    trained alone must match); None when a file written before this was recorded does not say."""
    if "epochs_total" in meta:
        return int(meta["epochs_total"])
    args = json.loads(meta.get("args", "{}"))
    if args.get("init_from") or "epochs" not in args:
        return None
    return int(args["epochs"])


def _meta(args: argparse.Namespace, history: list, cpu_seconds: float,
          prior_epochs: int | None) -> dict:
    meta = {"args": json.dumps({k: v for k, v in vars(args).items() if k != "progress"}),
            "history": json.dumps(history), "cpu_seconds": round(cpu_seconds, 1),
            "torch": str(torch.__version__)}
    if prior_epochs is not None:
        meta["epochs_total"] = len(history) + prior_epochs
    return meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adaspring train", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=12, help="total epochs, warm-up included")
    p.add_argument("--warmup-epochs", type=int, default=1, help="full-network-only epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--random-subnets", type=int, default=3,
                   help="random variants per step besides the largest and smallest")
    p.add_argument("--uniform-subnets", type=float, default=0.0, metavar="P",
                   help="probability that a random variant uses one stage config everywhere")
    p.add_argument("--student-label-weight", type=float, default=0.0, metavar="W",
                   help="students' loss: (1-W) distillation + W labels (0: distillation only)")
    p.add_argument("--distill-loss", choices=DISTILL_LOSSES, default="kl",
                   help="students' distillation loss: KL(teacher || student) or AlphaNet's "
                        "adaptive alpha-divergence (alpha in {-1, 1}, weights clipped at 5)")
    p.add_argument("--students-from", default="", metavar="TABLE",
                   help="student pool: the Pareto front of this profile table (the variants "
                        "the search can pick), trained in their full-rank float form")
    p.add_argument("--students", default="", metavar="IDS",
                   help="student pool: these comma-separated config ids as well")
    p.add_argument("--pool-share", type=float, default=0.5, metavar="P",
                   help="probability that a random student comes from the pool (when one "
                        "is given) instead of the whole space")
    p.add_argument("--only-operator", default="", metavar="OP",
                   help="operator stage (with --init-from): train only the weights of this "
                        "operator's units, on students that use it in every stage; all else "
                        "stays as it is")
    p.add_argument("--clip-grad", type=float, default=0.0, metavar="NORM",
                   help="clip the summed gradient to this L2 norm (0: off)")
    p.add_argument("--augment-largest-only", action="store_true",
                   help="augment the largest variant's images only; the students see them "
                        "unaugmented (BigNAS: regularise the largest network only)")
    p.add_argument("--zero-init-residual", action="store_true",
                   help="start each residual block's last BN scale at zero (from scratch only)")
    p.add_argument("--channels", default="24,48,96", help="full-width channels of each stage")
    p.add_argument("--max-depth", type=int, default=max(DEFAULT_SPACE.depths),
                   help="blocks per stage of the full backbone")
    p.add_argument("--max-resolution", type=int, default=max(DEFAULT_SPACE.resolutions),
                   help="input side of the full backbone, pixels")
    p.add_argument("--subset", type=int, default=0, help="train on the first N images (smoke)")
    p.add_argument("--val-size", type=int, default=5000, help="held-out validation images")
    p.add_argument("--init-from", default="",
                   help="continue from this trained backbone; students learn from its frozen "
                        "full network (progressive shrinking)")
    p.add_argument("--fixed-config", default="",
                   help="train only this variant (config id) from scratch: a baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=str(FASHION_MNIST_DIR),
                   help="directory of the Fashion-MNIST IDX files")
    p.add_argument("--image-folder", default="", help="train on an ImageFolder instead")
    p.add_argument("--out", default="", help="backbone file (default: models/backbone.pt)")
    p.add_argument("--workdir", default="runs/train", help="resumable state goes here")
    p.add_argument("--resume", action="store_true", help="continue from <workdir>/last.pt")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def cli_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.out:
        from adaspring_ros.core.paths import default_backbone

        args.out = str(default_backbone())
    if args.epochs < 1 or args.warmup_epochs < 0:
        print("adaspring train: --epochs must be >= 1 and --warmup-epochs >= 0", file=sys.stderr)
        return 2
    try:
        sized_space(args.max_depth, args.max_resolution)
    except ValueError as exc:
        print(f"adaspring train: {exc}", file=sys.stderr)
        return 2
    if args.clip_grad < 0 or not math.isfinite(args.clip_grad):
        print("adaspring train: --clip-grad must be a finite norm >= 0", file=sys.stderr)
        return 2
    for name in ("uniform_subnets", "student_label_weight", "pool_share"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(f"adaspring train: --{name.replace('_', '-')} must be in [0, 1]",
                  file=sys.stderr)
            return 2
    if args.only_operator:
        space = sized_space(args.max_depth, args.max_resolution)
        if args.only_operator not in space.operators or not args.init_from:
            print(f"adaspring train: --only-operator needs --init-from and one of "
                  f"{list(space.operators)}, got {args.only_operator!r}", file=sys.stderr)
            return 2
        if args.warmup_epochs:
            print("adaspring train: --only-operator trains students only: use "
                  "--warmup-epochs 0", file=sys.stderr)
            return 2
    if args.init_from:
        if args.fixed_config or args.zero_init_residual:
            print("adaspring train: --init-from continues trained weights; it excludes "
                  "--fixed-config and --zero-init-residual", file=sys.stderr)
            return 2
        try:  # refused here, before any work: a missing, corrupt or mismatched file
            initial = _initial_backbone(args.init_from,
                                        sized_space(args.max_depth, args.max_resolution),
                                        tuple(int(c) for c in args.channels.split(",")))
        except (ValueError, OSError) as exc:
            print(f"adaspring train: {exc}", file=sys.stderr)
            return 2
        if args.only_operator and trained_alone(initial.meta):
            print("adaspring train: --only-operator continues a shrunk backbone, not a net "
                  "trained alone: shrink it first (--init-from without --only-operator)",
                  file=sys.stderr)
            return 2
    try:    # a missing table or a bad id is refused before any work
        student_pool(sized_space(args.max_depth, args.max_resolution), _ids(args.students),
                     args.students_from)
    except (ValueError, OSError) as exc:
        print(f"adaspring train: --students / --students-from: {exc}", file=sys.stderr)
        return 2
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
