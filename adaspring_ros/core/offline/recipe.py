"""The training recipe: every option of a training run, the provenance it leaves in the
backbone file (``meta["args"]``, one key per option), and what can be read back from a file's
provenance (was it trained alone, for how many epochs in all)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from adaspring_ros.core.data.datasets import FASHION_MNIST_DIR
from adaspring_ros.core.model.checkpoint import load_backbone
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig, SearchSpace
from adaspring_ros.core.model.supernet import ElasticBackbone

__all__ = ["TrainRecipe", "train_meta", "trained_alone", "epochs_trained", "initial_backbone",
           "BENCH_SUBNETS", "BASE_BATCH", "GPU_BATCH", "scaled_lr", "recipe_options", "ChainStage",
           "SHIPPED_CHAIN"]


@dataclass(frozen=True)
class TrainRecipe:
    """One training run; ``adaspring train`` has one flag per field (``--warmup-epochs`` for
    ``warmup_epochs``). Empty strings mean "none", except ``out`` (empty: the shipped
    backbone's path, models/backbone.pt)."""

    epochs: int = 12                    # total epochs, warm-up included
    warmup_epochs: int = 1              # full-network-only epochs, then channels are sorted
    batch_size: int = 128               # the global batch, split evenly over the processes
    lr: float = 0.1
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    random_subnets: int = 3             # random students per step besides largest and smallest
    uniform_subnets: float = 0.0        # probability of a stage-uniform random student
    student_label_weight: float = 0.0   # students: (1-W) distillation + W labels
    distill_loss: str = "kl"            # one of losses.DISTILL_LOSSES
    students_from: str = ""             # student pool: the Pareto front of this profile table
    students: tuple[str, ...] = ()      # student pool: these config ids as well
    pool_share: float = 0.5             # probability that a random student is a pool member
    only_operator: str = ""             # operator stage: only this operator's units learn
    clip_grad: float = 0.0              # clip the summed gradient to this L2 norm (0: off)
    augment_largest_only: bool = False  # students see the images unaugmented (BigNAS)
    zero_init_residual: bool = False    # each residual block's last BN scale starts at zero
    channels: tuple[int, ...] = (24, 48, 96)   # full-width channels of each stage
    max_depth: int = max(DEFAULT_SPACE.depths)
    max_resolution: int = max(DEFAULT_SPACE.resolutions)
    resolutions: tuple[int, ...] = ()   # the space's input sides (empty: from max_resolution)
    stem_stride: int = 1                # 1, 2 or 4: the input side's divisor before stage 1
    input_channels: int = 0             # 1 or 3 (0: 3 unless every image is grey)
    resize: str = "centre_crop"         # how an image is fitted to a square (model card)
    interpolation: str = "bilinear"     # how it is resized (model card)
    mirror: bool = True                 # the task is mirror-symmetric: flips augment it
    crop_scale: float = 0.25            # photos: the random resized crop's smallest area
    subset: int = 0                     # train on the first N images (0: all)
    val_size: int = 5000                # held-out validation images (at most a fifth)
    init_from: str = ""                 # continue from this trained backbone
    fixed_config: str = ""              # train only this variant from scratch (a baseline)
    seed: int = 0
    threads: int = 2                    # CPU threads of each process
    device: str = "auto"                # auto (CUDA when available), cpu, cuda, cuda:N
    amp: str = "auto"                   # auto (bf16 on CUDA, off on the CPU), bf16, fp16, off
    workers: int = -1                   # DataLoader worker processes (-1: auto, 0: none)
    data: str = str(FASHION_MNIST_DIR)  # Fashion-MNIST's IDX files or an image folder
    out: str = ""                       # the backbone file, rewritten after every epoch
    workdir: str = "runs/train"         # the resumable state goes here
    resume: bool = False                # continue from <workdir>/last.pt
    progress: bool = True               # a progress bar per epoch


def train_meta(recipe: TrainRecipe, history: list, cpu_seconds: float,
               prior_epochs: int | None, world_size: int = 1) -> dict:
    """The provenance written into the backbone file: the recipe as the command line gave it
    (lists as comma-separated text; ``device`` and ``amp`` as resolved), the per-epoch history,
    CPU seconds of every process, the number of processes, the torch version and, when known,
    the epochs of the whole ``init_from`` chain (``epochs_total``)."""
    args = {k: v for k, v in asdict(recipe).items() if k != "progress"}
    args["students"] = ",".join(recipe.students)
    args["channels"] = ",".join(map(str, recipe.channels))
    args["resolutions"] = ",".join(map(str, recipe.resolutions))
    meta = {"args": json.dumps(args), "history": json.dumps(history),
            "cpu_seconds": round(cpu_seconds, 1), "world_size": world_size,
            "torch": str(torch.__version__)}
    if prior_epochs is not None:
        meta["epochs_total"] = len(history) + prior_epochs
    return meta


def trained_alone(meta: dict) -> str | None:
    """The config id a backbone file was trained alone as (``fixed_config``), else None."""
    return json.loads(meta.get("args", "{}")).get("fixed_config") or None


def epochs_trained(meta: dict) -> int | None:
    """Epochs a backbone was trained in all, ``init_from`` chains included (what a baseline
    trained alone must match); None when the file's provenance does not say."""
    if "epochs_total" in meta:
        return int(meta["epochs_total"])
    args = json.loads(meta.get("args", "{}"))
    if args.get("init_from") or "epochs" not in args:
        return None
    return int(args["epochs"])


def initial_backbone(path: str, space: SearchSpace, channels: tuple[int, ...],
                     stem_stride: int = 1) -> ElasticBackbone:
    """The trained backbone ``init_from`` continues from (checksum verified), frozen and in
    eval mode; refused (ValueError) unless it has the architecture being trained (its input
    sides may differ: the run starts from ``with_resolutions`` of it, and it teaches at its own
    full resolution) and, if it was trained alone, is the full network."""
    initial = load_backbone(path)
    if replace(initial.space, resolutions=space.resolutions) != space \
            or tuple(initial.arch()["stage_channels"]) != channels \
            or initial.stem_stride != stem_stride:
        raise ValueError(f"--init-from {path}: its space, channels "
                         f"{initial.arch()['stage_channels']} or stem stride "
                         f"{initial.stem_stride} differ from the ones being trained "
                         f"{list(channels)}, {stem_stride} (set --channels, --max-depth, "
                         "--max-resolution or --resolutions, --stem-stride)")
    alone = trained_alone(initial.meta)
    if alone and alone != CompressionConfig.full(initial.space).id:
        raise ValueError(f"--init-from {path}: a net trained alone ({alone}) can seed the "
                         f"shrinking only if it is the full network "
                         f"{CompressionConfig.full(initial.space).id}")
    for p in initial.parameters():
        p.requires_grad_(False)
    return initial.eval()


# The three nets bench_backbone compares with the same nets trained alone: subnet A (small,
# shallow), subnet B (depthwise-separable, mid size), half width.
BENCH_SUBNETS = ("r20-w50d1ck100f-w50d1ck100f-w50d1ck100f",
                 "r24-w50d2sk100f-w50d2sk100f-w50d2sk100f",
                 "r28-w50d3ck100f-w50d3ck100f-w50d3ck100f")
BASE_BATCH = TrainRecipe.batch_size     # the batch the shipped learning rates are for
GPU_BATCH = 1024    # the global batch of the chain on one GPU (tools/gpu_recipe.py)


def scaled_lr(lr: float, batch_size: int) -> float:
    """The learning rate for a global batch of ``batch_size``, scaled linearly from the
    recipe's (Goyal et al. 2017; the schedule's half-epoch warm-up is what makes it hold)."""
    return lr * batch_size / BASE_BATCH


def recipe_options(recipe: TrainRecipe, names: Iterable[str]) -> list[str]:
    """The ``adaspring train`` options that set the fields ``names`` of ``recipe`` (one flag
    per field: ``--field-name VALUE``, a flag alone for a true bool, lists comma-separated)."""
    options: list[str] = []
    for name in names:
        value, flag = getattr(recipe, name), "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if value != getattr(TrainRecipe, name):
                options.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, tuple):
            options += [flag, ",".join(map(str, value))]
        else:
            options += [flag, str(value)]
    return options


@dataclass(frozen=True)
class ChainStage:
    """One training run of the chain that made models/backbone.pt: ``settings`` are its
    ``TrainRecipe`` fields besides ``epochs``, ``out``, ``workdir`` and, when ``continues``
    (every stage but the first), ``init_from`` the previous stage's file; a stage with
    ``pool`` also takes ``students_from`` a profile table of the previous backbone
    (models/README.md, *Reproduce*)."""

    name: str
    epochs: int
    settings: Mapping[str, Any]
    continues: bool = True
    pool: bool = False

    def recipe(self, **more: Any) -> TrainRecipe:
        """The stage's recipe, with ``more`` fields set as well."""
        return replace(TrainRecipe(), **{"epochs": self.epochs, **self.settings, **more})


_SHRINK = {"warmup_epochs": 0, "student_label_weight": 0.5, "augment_largest_only": True}
_POOL = {**_SHRINK, "lr": 0.02, "students": BENCH_SUBNETS, "pool_share": 0.67}
_OPERATOR = {**_SHRINK, "lr": 0.03, "only_operator": "dwsep", "students": BENCH_SUBNETS[1:2],
             "pool_share": 0.67}
SHIPPED_CHAIN = (
    ChainStage("sandwich", 18, {"warmup_epochs": 1, "lr": 0.1, "student_label_weight": 0.5,
                                "augment_largest_only": True, "zero_init_residual": True},
               continues=False),
    ChainStage("shrink", 8, {**_SHRINK, "lr": 0.03}),
    ChainStage("pool", 4, _POOL, pool=True),
    ChainStage("operator", 4, _OPERATOR, pool=True),
    ChainStage("pool2", 4, _POOL, pool=True),
    ChainStage("operator2", 4, _OPERATOR, pool=True),
)
