"""``adaspring tune-variants``: a per-variant BN scale/shift, distilled from the full network.

Each chosen variant (``--variants-from`` a profile table, ``--front-only`` for its Pareto front,
and/or ``--variants``) gets its own BN weight/bias and classifier bias, tuned alone on the full
network's soft outputs with every shared tensor frozen (core/offline/tuning.py says how and
why); a result is kept only if more accurate on validation (``--keep-worse`` keeps all).

    adaspring tune-variants --variants-from models/profile_table.json --front-only \\
        --out runs/tuned/backbone.pt --workdir runs/tuned
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from adaspring_ros.core.offline.tuning import TuneOptions, TuningStateMismatch, tune_variants

__all__ = ["build_parser", "cli_main"]


def build_parser() -> argparse.ArgumentParser:
    d = TuneOptions()
    p = argparse.ArgumentParser(prog="adaspring tune-variants",
                                description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default=d.backbone, help="default: models/backbone.pt")
    p.add_argument("--variants-from", default=d.variants_from,
                   help="a profile table whose variants to tune")
    p.add_argument("--front-only", action="store_true",
                   help="only the table's Pareto front (accuracy vs latency)")
    p.add_argument("--variants", default=",".join(d.variants),
                   help="more config ids, comma-separated")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the tuning images")
    p.add_argument("--images", type=int, default=d.images,
                   help="tuning images drawn from the training part of the split (0: all)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="Adam, cosine decay to zero")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help="distillation temperature")
    p.add_argument("--bn-images", type=int, default=d.bn_images,
                   help="training images for the BN statistics of variants that lack them")
    p.add_argument("--val-size", type=int, default=d.val_size,
                   help="first N validation images to measure on (0: all 5000)")
    p.add_argument("--keep-worse", action="store_true",
                   help="keep a tuned variant even if it is less accurate on validation")
    p.add_argument("--out", default=d.out, help="the tuned backbone file")
    p.add_argument("--workdir", default=d.workdir, help="resumable state and results.json")
    p.add_argument("--resume", action="store_true", help="continue from <workdir>/state.pt")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--data", default=d.data)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def cli_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = TuneOptions(**{**vars(args),
                          "variants": tuple(v for v in args.variants.split(",") if v)})
    if opts.epochs < 1 or opts.batch_size < 1 or opts.lr <= 0 or opts.temperature <= 0:
        print("adaspring tune-variants: --epochs, --batch-size, --lr and --temperature must be "
              "positive", file=sys.stderr)
        return 2
    if not opts.variants_from and not opts.variants:
        print("adaspring tune-variants: give --variants-from <table> and/or --variants <ids>",
              file=sys.stderr)
        return 2
    try:
        tune_variants(opts)
    except TuningStateMismatch as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
