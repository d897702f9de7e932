"""``adaspring profile``: measure variants of a trained backbone -> the profile table.

A stratified sample of the space plus ``--rounds`` of refinement around the accuracy/latency
Pareto front, each variant measured in ``--engine`` (the one the perception node will serve it
in): accuracy on the test split, round-robin batch-1 latency, MACs, memory, energy. The method
is described in core/offline/profiling.py.

For a fleet the run splits in two: ``--accuracy-only`` once, where the data is (the accuracy
table), then ``--latency-only --accuracy-from ACC`` on each device kind, from the backbone and
that table alone, reading no data (core/offline/latency.py). Every timing run also measures the
device's cold-start term (a forward after an idle camera frame); ``--cold-start-only`` adds it to
a table timed before it was measured.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from adaspring_ros.core.model.checkpoint import CheckpointError
from adaspring_ros.core.model.engine import ENGINES
from adaspring_ros.core.model.profile_table import ProfileError
from adaspring_ros.core.offline.latency import profile_cold_start, profile_latency
from adaspring_ros.core.offline.profiling import ProfileOptions, profile

__all__ = ["build_parser", "cli_main"]


def build_parser() -> argparse.ArgumentParser:
    d = ProfileOptions()
    p = argparse.ArgumentParser(prog="adaspring profile", description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default=d.backbone, help="default: models/backbone.pt")
    p.add_argument("--out", default=d.out, help="default: models/profile_table.json")
    p.add_argument("--plot", default=d.plot,
                   help="default: pareto.png beside --out (with --latency-only: none)")
    p.add_argument("--sample", type=int, default=d.sample, help="stratified random variants")
    p.add_argument("--refine", type=int, default=d.refine,
                   help="Pareto-neighbour variants measured per refinement round")
    p.add_argument("--rounds", type=int, default=d.rounds, help="refinement rounds")
    p.add_argument("--engine", default=d.engine, choices=ENGINES,
                   help="inference engine the variants are measured (and will be served) in")
    p.add_argument("--compare-table", default=d.compare_table,
                   help="also draw the Pareto front of this table (another engine) on the plot")
    p.add_argument("--plot-only", action="store_true",
                   help="only redraw the plot of --out (with --compare-table), no profiling")
    p.add_argument("--accuracy-only", action="store_true",
                   help="measure accuracy, int8 ranges and static costs only (needs the data; "
                        "no latency is recorded): the accuracy table of a fleet")
    p.add_argument("--latency-only", action="store_true",
                   help="time the variants of --accuracy-from on this machine and write the "
                        "complete table; needs only --backbone and that table, reads no data")
    p.add_argument("--accuracy-from", default=d.accuracy_from,
                   help="with --latency-only: the accuracy table (or any profile table) of "
                        "--backbone")
    p.add_argument("--cold-start-only", action="store_true",
                   help="measure only this device's cold-start term (what a forward costs "
                        "after an idle camera frame) and write it into the latency table "
                        "--out (default: the shipped one of --engine), entries unchanged")
    p.add_argument("--front-only", action="store_true",
                   help="with --latency-only: time only the accuracy table's Pareto front")
    p.add_argument("--extend", action="store_true",
                   help="keep the variants already in --out (their accuracy and int8 ranges), "
                        "measure the refinement rounds around their front, then time every "
                        "variant again (with --rounds 0: only re-time; resumable profiling)")
    p.add_argument("--remeasure-tuned", action="store_true",
                   help="with --extend: measure again the accuracy and int8 ranges of every "
                        "variant of --out that the backbone tunes (adaspring tune-variants), "
                        "on a backbone tuned from the table's one; latencies are kept with "
                        "--repeats 0 (a tuned scale/shift folds into the same operations)")
    p.add_argument("--variants-from", default=d.variants_from,
                   help="measure the variants of this profile table instead of a fresh "
                        "stratified sample (e.g. to profile the same variants in another engine)")
    p.add_argument("--repeats", type=int, default=d.repeats,
                   help="timed batch-1 runs per variant (round-robin among all variants)")
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--cold-start-rounds", type=int, default=d.cold_start_rounds,
                   help="rounds of the cold-start term: each times up to 16 variants after "
                        "a 50 ms idle gap (30: ~25 s; fewer: quicker, noisier)")
    p.add_argument("--test-size", type=int, default=d.test_size,
                   help="first N test images (0: all)")
    p.add_argument("--bn-images", type=int, default=d.bn_images,
                   help="training images for each variant's BN statistics (0: keep the rows)")
    p.add_argument("--eval-threads", type=int, default=d.eval_threads,
                   help="threads for the batched accuracy pass (latency always uses 1)")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="engine threads for the batch-1 latency (as the perception node serves)")
    p.add_argument("--device-profile", default=d.device_profile,
                   help="config/devices/<name>.yaml (or a path) used when RAPL is unreadable")
    p.add_argument("--data", default=d.data,
                   help="the backbone's task: Fashion-MNIST's IDX folder or the image folder it "
                        "was trained on (accuracy on its test split; BN statistics and int8 "
                        "ranges from its train split)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def _split_error(opts: ProfileOptions) -> str | None:
    """What is wrong with the --accuracy-only / --latency-only / --cold-start-only options,
    if anything."""
    if opts.cold_start_only and (opts.accuracy_only or opts.latency_only or opts.extend
                                 or opts.plot_only or opts.accuracy_from or opts.front_only):
        return ("--cold-start-only only adds the cold-start term to the latency table --out: "
                "no other mode")
    if opts.accuracy_only and opts.latency_only:
        return "--accuracy-only and --latency-only exclude each other (run one, then the other)"
    if (opts.accuracy_only or opts.latency_only) and not opts.out:
        return "--accuracy-only and --latency-only need --out (not the shipped table)"
    if opts.accuracy_only and (opts.extend or opts.plot_only):
        return "--accuracy-only measures a new table: no --extend or --plot-only"
    if opts.latency_only:
        if not opts.accuracy_from:
            return "--latency-only needs --accuracy-from (the accuracy table)"
        if opts.extend or opts.plot_only or opts.variants_from or opts.remeasure_tuned:
            return ("--latency-only times the variants of --accuracy-from: no --extend, "
                    "--plot-only, --variants-from or --remeasure-tuned")
    elif opts.accuracy_from or opts.front_only:
        return "--accuracy-from and --front-only go with --latency-only"
    return None


def cli_main(argv: Sequence[str] | None = None) -> int:
    opts = ProfileOptions(**vars(build_parser().parse_args(argv)))
    problem = _split_error(opts)
    if problem:
        print(f"adaspring profile: {problem}", file=sys.stderr)
        return 2
    if opts.cold_start_rounds < 1:
        print("adaspring profile: --cold-start-rounds must be >= 1", file=sys.stderr)
        return 2
    if opts.sample < 0 or opts.repeats < (0 if opts.extend else 1):
        print("adaspring profile: --sample must be >= 0 and --repeats >= 1 (0 only with "
              "--extend: keep the table's latencies)", file=sys.stderr)
        return 2
    if opts.repeats == 0 and opts.rounds:
        print("adaspring profile: --repeats 0 measures no new variant: use --rounds 0",
              file=sys.stderr)
        return 2
    if opts.remeasure_tuned and not opts.extend:
        print("adaspring profile: --remeasure-tuned needs --extend", file=sys.stderr)
        return 2
    try:
        run = profile_cold_start if opts.cold_start_only else \
            profile_latency if opts.latency_only else profile
        run(opts)
    except (ProfileError, CheckpointError) as exc:
        message = str(exc)
        print(message if message.startswith("adaspring profile") else
              f"adaspring profile: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
