"""Size the backbone for its device before training it: ``adaspring size-backbone``.

Every candidate's full model (``--bases`` x ``--depths`` x ``--resolutions``) is timed in
``--engine``; those within ``--latency-ms`` and ``--max-mmacs`` are trained briefly and scored on
validation, and the fastest within ``--tolerance-pt`` of the best is chosen
(core/offline/sizing.py). The report goes to ``--out``, which also lets a long run resume.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from adaspring_ros.core.offline.sizing import SizingOptions, candidates, size_backbone

__all__ = ["build_parser", "cli_main"]


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    d = SizingOptions()
    p = argparse.ArgumentParser(prog="adaspring size-backbone", description=__doc__.split("\n")[0])
    p.add_argument("--latency-ms", type=float, default=d.latency_ms,
                   help="budget for the full model's p50 latency in the engine, ms (none)")
    p.add_argument("--max-mmacs", type=float, default=d.max_mmacs,
                   help="budget for the full model's MACs, millions (none)")
    p.add_argument("--engine", default=d.engine, help="onnxruntime or torch")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="engine threads, as on the robot")
    p.add_argument("--bases", type=_ints, default=list(d.bases),
                   help="first-stage channels to try (stages are x1, x2, x4)")
    p.add_argument("--depths", type=_ints, default=list(d.depths), help="blocks per stage to try")
    p.add_argument("--resolutions", type=_ints, default=list(d.resolutions),
                   help="input sides to try")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timing rounds")
    p.add_argument("--epochs", type=int, default=d.epochs, help="short training run per candidate")
    p.add_argument("--subset", type=int, default=d.subset, help="training images per run")
    p.add_argument("--train-threads", type=int, default=d.train_threads)
    p.add_argument("--tolerance-pt", type=float, default=d.tolerance_pt,
                   help="validation points a faster candidate may lose to the best and win")
    p.add_argument("--data", default=d.data)
    p.add_argument("--out", default=d.out, help="report directory")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def cli_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = SizingOptions(**{**vars(args), "bases": tuple(args.bases),
                            "depths": tuple(args.depths), "resolutions": tuple(args.resolutions)})
    for name in ("latency_ms", "max_mmacs", "tolerance_pt"):
        if not getattr(opts, name) >= 0:
            print(f"adaspring size-backbone: --{name.replace('_', '-')} must be >= 0",
                  file=sys.stderr)
            return 2
    if opts.epochs < 1 or opts.repeats < 1 or opts.subset < 0:
        print("adaspring size-backbone: --epochs and --repeats must be >= 1, --subset >= 0",
              file=sys.stderr)
        return 2
    try:
        candidates(opts.bases, opts.depths, opts.resolutions)
    except ValueError as exc:
        print(f"adaspring size-backbone: {exc}", file=sys.stderr)
        return 2
    if size_backbone(opts) is None:
        print("adaspring size-backbone: no candidate meets the budgets", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
