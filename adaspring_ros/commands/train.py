"""``adaspring train``: train every variant of the backbone at once.

The recipe (core/offline/train.py) is once-for-all / BigNAS style, sized for a CPU:
``--warmup-epochs`` of the full network alone, then sandwich-rule epochs (the largest variant
on the labels, the smallest and ``--random-subnets`` random students on its predictions).

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

Data: ``--data DIR`` is Fashion-MNIST's IDX folder (the default, held in memory, its grey
recipe) or an image folder: one sub-folder of images per class, any size, format, colour or
grey, optionally below ``train/``, ``val/``, ``test/`` (else split deterministically, a tenth
each for validation and test). Its files are streamed by ``--workers`` DataLoader processes
and augmented for photos (random resized crop, flip unless ``--no-mirror``, colour jitter);
files that are not images are skipped and counted. The model card saved with the backbone is
measured from it: ``--input-channels`` (default 3 unless every image is grey), the mean/std of
a sample, the class names, ``--resize`` and ``--interpolation``, the file list's sha256.
``--resolutions`` (or ``--max-resolution``) sets the space's input sides, up to 224 px, and
``--stem-stride`` 2 or 4 keeps a large input's cost near a small one's.

``--fixed-config ID`` instead trains one variant alone from scratch (the baselines of the
benchmark). A resumable state is written every epoch (``--resume``) and the current backbone
(+ ``.sha256``) is written to ``--out`` after every epoch.

Devices and processes: ``--device auto|cpu|cuda|cuda:N`` (auto: CUDA when available) and
``--amp auto|bf16|fp16|off`` (auto: bf16 on CUDA; fp16 with a gradient scaler; the CPU trains
in float32). The same recipe and checkpoint format on every device; files are written with CPU
tensors, so a GPU-trained backbone loads on a robot without one. Under ``torchrun
--nproc-per-node N -m adaspring_ros.cli train ...`` (``--nnodes`` and a rendezvous for several
machines) the run is DistributedDataParallel: nccl on CUDA, gloo on the CPU, each process
training its share of every batch; rank 0 alone logs and writes; ``--resume`` works with
another number of processes.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from adaspring_ros.core.data.datasets import DataError
from adaspring_ros.core.model.card import INTERPOLATIONS, RESIZE_POLICIES, CardError
from adaspring_ros.core.model.weights import STEM_STRIDES
from adaspring_ros.core.offline.distributed import Ranks, from_env, process_group
from adaspring_ros.core.offline.losses import DISTILL_LOSSES
from adaspring_ros.core.offline.precision import AMP_MODES, resolve_amp, resolve_device
from adaspring_ros.core.offline.recipe import TrainRecipe, initial_backbone, trained_alone
from adaspring_ros.core.offline.sampling import sized_space, student_pool
from adaspring_ros.core.offline.train import AUTO_WORKERS, train

__all__ = ["build_parser", "cli_main"]


def build_parser() -> argparse.ArgumentParser:
    d = TrainRecipe()
    p = argparse.ArgumentParser(prog="adaspring train", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=d.epochs, help="total epochs, warm-up included")
    p.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs,
                   help="full-network-only epochs")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="the global batch, split evenly over the processes of a torchrun "
                        "run (a multiple of their number): the recipe is the same for any "
                        "number of processes")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="peak learning rate for --batch-size; it does not change with the "
                        "number of processes (the global batch does not). Raising the batch, "
                        "scale it linearly: lr = 0.1 x batch / 128 (with the half-epoch "
                        "warm-up the schedule already has)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--random-subnets", type=int, default=d.random_subnets,
                   help="random variants per step besides the largest and smallest")
    p.add_argument("--uniform-subnets", type=float, default=d.uniform_subnets, metavar="P",
                   help="probability that a random variant uses one stage config everywhere")
    p.add_argument("--student-label-weight", type=float, default=d.student_label_weight,
                   metavar="W",
                   help="students' loss: (1-W) distillation + W labels (0: distillation only)")
    p.add_argument("--distill-loss", choices=DISTILL_LOSSES, default=d.distill_loss,
                   help="students' distillation loss: KL(teacher || student) or AlphaNet's "
                        "adaptive alpha-divergence (alpha in {-1, 1}, weights clipped at 5)")
    p.add_argument("--students-from", default=d.students_from, metavar="TABLE",
                   help="student pool: the Pareto front of this profile table (the variants "
                        "the search can pick), trained in their full-rank float form")
    p.add_argument("--students", default=",".join(d.students), metavar="IDS",
                   help="student pool: these comma-separated config ids as well")
    p.add_argument("--pool-share", type=float, default=d.pool_share, metavar="P",
                   help="probability that a random student comes from the pool (when one "
                        "is given) instead of the whole space")
    p.add_argument("--only-operator", default=d.only_operator, metavar="OP",
                   help="operator stage (with --init-from): train only the weights of this "
                        "operator's units, on students that use it in every stage; all else "
                        "stays as it is")
    p.add_argument("--clip-grad", type=float, default=d.clip_grad, metavar="NORM",
                   help="clip the summed gradient to this L2 norm (0: off)")
    p.add_argument("--augment-largest-only", action="store_true",
                   help="augment the largest variant's images only; the students see them "
                        "unaugmented (BigNAS: regularise the largest network only)")
    p.add_argument("--zero-init-residual", action="store_true",
                   help="start each residual block's last BN scale at zero (from scratch only)")
    p.add_argument("--channels", default=",".join(map(str, d.channels)),
                   help="full-width channels of each stage")
    p.add_argument("--max-depth", type=int, default=d.max_depth,
                   help="blocks per stage of the full backbone")
    p.add_argument("--max-resolution", type=int, default=d.max_resolution,
                   help="input side of the full backbone, pixels: the default space's sides up "
                        "to it (16, 20, 24, 28), or for another side four spaced as those "
                        "(64: 36, 44, 56, 64)")
    p.add_argument("--resolutions", default=",".join(map(str, d.resolutions)),
                   help="the space's input sides instead, comma-separated, ascending "
                        "(e.g. 48,56,64; up to 224)")
    p.add_argument("--stem-stride", type=int, choices=STEM_STRIDES, default=d.stem_stride,
                   help="what the stem divides the input side by before the first stage: 1 "
                        "(small inputs), 2 or 4 (large ones: compute stays about that of a "
                        "small input; adaspring size-backbone chooses it)")
    p.add_argument("--subset", type=int, default=d.subset,
                   help="train on the first N images (smoke)")
    p.add_argument("--val-size", type=int, default=d.val_size, help="held-out validation images")
    p.add_argument("--init-from", default=d.init_from,
                   help="continue from this trained backbone; students learn from its frozen "
                        "full network (progressive shrinking)")
    p.add_argument("--fixed-config", default=d.fixed_config,
                   help="train only this variant (config id) from scratch: a baseline")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads of each process")
    p.add_argument("--device", default=d.device,
                   help="auto (CUDA when available), cpu, cuda (under torchrun: the GPU of "
                        "each process's LOCAL_RANK) or cuda:N")
    p.add_argument("--amp", choices=AMP_MODES, default=d.amp,
                   help="mixed precision on CUDA: auto (bf16 on CUDA, off on the CPU), bf16, "
                        "fp16 (with a gradient scaler) or off")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="DataLoader worker processes per training process that decode an "
                        "image folder's files (0: decode in it; -1: "
                        f"{AUTO_WORKERS} for a folder, 0 for Fashion-MNIST, held in memory)")
    p.add_argument("--data", default=d.data,
                   help="Fashion-MNIST's IDX folder, or an image folder: one sub-folder of "
                        "images per class (any size, format, colour or grey), optionally below "
                        "train/, val/, test/ (else split deterministically)")
    p.add_argument("--input-channels", type=int, choices=(0, 1, 3), default=d.input_channels,
                   help="input channels of the backbone: 1 (grey) or 3 (RGB); 0: 3 unless "
                        "every image of the folder is grey")
    p.add_argument("--resize", choices=RESIZE_POLICIES, default=d.resize,
                   help="how an image (and later a camera frame) is fitted to a square: its "
                        "centre square, or all of it padded with the mean colour")
    p.add_argument("--interpolation", choices=INTERPOLATIONS, default=d.interpolation,
                   help="how it is resized to a variant's resolution")
    p.add_argument("--no-mirror", dest="mirror", action="store_false",
                   help="the task is not mirror-symmetric (text, arrows, left/right signs): "
                        "no horizontal flips in augmentation, and the card says so")
    p.add_argument("--crop-scale", type=float, default=d.crop_scale,
                   help="image folders: the smallest share of an image's area the random "
                        "resized crop keeps (0.25, as for photos of whole scenes; larger where "
                        "the object is small in the frame and a crop would lose it)")
    p.add_argument("--out", default=d.out, help="backbone file (default: models/backbone.pt)")
    p.add_argument("--workdir", default=d.workdir, help="resumable state goes here")
    p.add_argument("--resume", action="store_true", help="continue from <workdir>/last.pt")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def recipe_from(args: argparse.Namespace) -> TrainRecipe:
    """The recipe the parsed command line asks for (lists given as comma-separated text)."""
    fields = {**vars(args), "channels": tuple(int(c) for c in args.channels.split(",")),
              "resolutions": tuple(int(c) for c in args.resolutions.split(",") if c.strip()),
              "students": tuple(v for v in args.students.split(",") if v)}
    return TrainRecipe(**fields)


def _refusal(recipe: TrainRecipe, ranks: Ranks) -> str | None:
    """Why the recipe cannot run, checked before any work (None: it can)."""
    r = recipe
    if r.epochs < 1 or r.warmup_epochs < 0:
        return "--epochs must be >= 1 and --warmup-epochs >= 0"
    if r.workers < -1 or r.threads < 1:
        return "--workers must be >= -1 and --threads >= 1"
    try:
        device = resolve_device(r.device, ranks.local_rank if ranks.distributed else None)
        resolve_amp(r.amp, device)
    except ValueError as exc:
        return str(exc)
    if r.batch_size < ranks.world_size or r.batch_size % ranks.world_size:
        return (f"--batch-size {r.batch_size} does not split over {ranks.world_size} "
                "processes: give a multiple of their number")
    try:
        space = sized_space(r.max_depth, r.max_resolution, r.resolutions)
    except ValueError as exc:
        return str(exc)
    if not 0.05 <= r.crop_scale <= 1.0:
        return "--crop-scale must be in [0.05, 1]"
    if r.clip_grad < 0 or not math.isfinite(r.clip_grad):
        return "--clip-grad must be a finite norm >= 0"
    for name in ("uniform_subnets", "student_label_weight", "pool_share"):
        if not 0.0 <= getattr(r, name) <= 1.0:
            return f"--{name.replace('_', '-')} must be in [0, 1]"
    if r.only_operator:
        if r.only_operator not in space.operators or not r.init_from:
            return (f"--only-operator needs --init-from and one of {list(space.operators)}, "
                    f"got {r.only_operator!r}")
        if r.warmup_epochs:
            return "--only-operator trains students only: use --warmup-epochs 0"
    if r.init_from:
        if r.fixed_config or r.zero_init_residual:
            return ("--init-from continues trained weights; it excludes --fixed-config and "
                    "--zero-init-residual")
        try:  # a missing, corrupt or mismatched file
            initial = initial_backbone(r.init_from, space, r.channels, r.stem_stride)
        except (ValueError, OSError) as exc:
            return str(exc)
        if r.only_operator and trained_alone(initial.meta):
            return ("--only-operator continues a shrunk backbone, not a net trained alone: "
                    "shrink it first (--init-from without --only-operator)")
    try:    # a missing table or a bad id
        student_pool(space, r.students, r.students_from)
    except (ValueError, OSError) as exc:
        return f"--students / --students-from: {exc}"
    return None


def cli_main(argv: Sequence[str] | None = None) -> int:
    try:
        recipe = recipe_from(build_parser().parse_args(argv))
    except ValueError as exc:   # --channels or --resolutions that are not integers
        print(f"adaspring train: --channels / --resolutions: {exc}", file=sys.stderr)
        return 2
    try:
        ranks = from_env()                  # torchrun's RANK, WORLD_SIZE, LOCAL_RANK
    except ValueError as exc:
        print(f"adaspring train: {exc}", file=sys.stderr)
        return 2
    refusal = _refusal(recipe, ranks)
    if refusal is not None:
        if ranks.is_main:
            print(f"adaspring train: {refusal}", file=sys.stderr)
        return 2
    device = resolve_device(recipe.device, ranks.local_rank if ranks.distributed else None)
    with process_group(ranks, device):
        try:
            train(recipe, ranks)
        except (DataError, CardError) as exc:   # refused before anything is written
            if ranks.is_main:
                print(f"adaspring train: --data {recipe.data}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
