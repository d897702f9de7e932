"""`adaspring search`: pick the best variant of the profile table for a context given on the
command line (or a scenario step), with the runtime search of core/policy/search.py."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from adaspring_ros.core.model.profile_table import ProfileError, load_profile_table
from adaspring_ros.core.policy.budgets import BudgetParams, contention_from_load
from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.lambdas import Lambdas, adapt_lambdas
from adaspring_ros.core.policy.objective import ObjectiveParams
from adaspring_ros.core.policy.scenario import ScenarioError, ScenarioTrace
from adaspring_ros.core.policy.search import RuntimeSearch

__all__ = ["cli_main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adaspring search",
        description="Pick the best variant of the profile table for a context.")
    p.add_argument("--table", help="profile table JSON (default: the shipped one)")
    p.add_argument("--scenario", help="scenario YAML; with --at, take the context from it")
    p.add_argument("--at", type=float, default=0.0, help="seconds into the scenario (0)")
    p.add_argument("--battery", type=float, help="battery percent 0..100 (default: none)")
    p.add_argument("--charging", action="store_true", help="on external power")
    p.add_argument("--cpu-load", type=float, default=0.0,
                   help="CPU load of other processes, percent (0); without --contention it "
                        "predicts the slowdown as 1 + load/100 (a fair share of a core)")
    p.add_argument("--memory-mb", type=float, help="available memory, MB (default: unknown)")
    p.add_argument("--latency-budget-ms", type=float, default=100.0,
                   help="application per-frame latency budget, ms (100)")
    p.add_argument("--contention", type=float,
                   help="measured / profiled median latency of the running variant (default: "
                        "from --cpu-load)")
    p.add_argument("--non-model-ms", type=float,
                   help="measured median of a frame outside the forward pass, ms (default: "
                        "unknown, the forward gets latency_margin of the budget)")
    p.add_argument("--overhead-mj", type=float, default=0.0,
                   help="measured energy of a frame outside the forward pass, mJ (0)")
    p.add_argument("--max-loss-pt", type=float,
                   help="most accuracy points the policy may trade for energy (3)")
    p.add_argument("--pct-per-point", type=float,
                   help="%% of frame energy worth one accuracy point at λ1 = λ2 (10)")
    p.add_argument("--tail", type=float,
                   help="latency p95 / p50 of the device (default: the table's median)")
    p.add_argument("--lambda1", type=float, help="override λ1 (accuracy weight)")
    p.add_argument("--lambda2", type=float, help="override λ2 (energy-efficiency weight)")
    p.add_argument("--fps", type=float, help="frame rate for the energy budget")
    p.add_argument("--battery-capacity-wh", type=float, help="battery capacity, Wh")
    p.add_argument("--mission-s", type=float, help="mission time left, s (energy budget)")
    p.add_argument("--min-accuracy", type=float, help="least acceptable accuracy, 0..1")
    return p


def _cli_context(args: argparse.Namespace) -> tuple[Context, BudgetParams]:
    params = BudgetParams()
    if args.scenario:
        trace = ScenarioTrace.load(args.scenario)
        context, params = trace.context_at(args.at), trace.budget_params()
    else:
        context = Context(
            battery_percent=args.battery, charging=args.charging,
            cpu_load_percent=args.cpu_load, cpu_load_other_percent=args.cpu_load,
            memory_available_mb=args.memory_mb, latency_budget_ms=args.latency_budget_ms,
            source="cli",
        )
    overrides = {name: value for name, value in (
        ("fps", args.fps), ("battery_capacity_wh", args.battery_capacity_wh),
        ("mission_duration_s", args.mission_s), ("min_accuracy", args.min_accuracy))
        if value is not None}
    return context, BudgetParams(**{**params.__dict__, **overrides})


def _cli_lambdas(args: argparse.Namespace, context: Context) -> Lambdas:
    adapted = adapt_lambdas(context)
    if args.lambda1 is None and args.lambda2 is None:
        return adapted
    lambda1 = args.lambda1 if args.lambda1 is not None else 1.0 - args.lambda2
    lambda2 = args.lambda2 if args.lambda2 is not None else 1.0 - args.lambda1
    return Lambdas(lambda1=lambda1, lambda2=lambda2, rule="command-line override")


def cli_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        table = load_profile_table(args.table)
        context, budget_params = _cli_context(args)
        lambdas = _cli_lambdas(args, context)
        defaults = ObjectiveParams()
        objective = ObjectiveParams(
            defaults.max_accuracy_loss_pt if args.max_loss_pt is None else args.max_loss_pt,
            defaults.energy_pct_per_point if args.pct_per_point is None else args.pct_per_point)
        search = RuntimeSearch(table, objective=objective)
        contention = args.contention
        if contention is None:
            contention = contention_from_load(context.cpu_load_other_percent or 0.0)
        remaining = None  # a scenario's mission started at its t = 0
        if args.scenario and budget_params.mission_duration_s is not None \
                and args.mission_s is None:
            remaining = max(budget_params.mission_duration_s - args.at, 0.0)
        result = search.decide(context, budget_params=budget_params, lambdas=lambdas,
                               contention=contention, tail=args.tail,
                               mission_remaining_s=remaining, non_model_ms=args.non_model_ms,
                               overhead_mj=args.overhead_mj)
    except (ProfileError, ScenarioError, ValueError) as exc:
        print(f"adaspring search: {exc}", file=sys.stderr)
        return 2
    pred = result.prediction
    print(f"table:      {args.table or 'the shipped one'} ({len(table)} variants, engine "
          f"{table.engine_name})")
    print(f"context:    {context.describe()}")
    print(f"lambda:     λ1 = {lambdas.lambda1:.3f}, λ2 = {lambdas.lambda2:.3f} ({lambdas.rule})")
    print(f"budgets:    {result.budgets.describe()}")
    for line in result.budgets.notes:
        print(f"            {line}")
    print(f"latency:    profiled p50 x tail {result.tail:.2f} x contention "
          f"{result.contention:.2f}")
    print(f"chosen:     {result.config_id}")
    print(f"predicted:  accuracy {pred.accuracy:.2%}, latency {pred.latency_ms:.3f} ms (p95), "
          f"energy {pred.energy_mj:.4g} mJ/frame, peak memory {pred.peak_memory_mb:.2f} MB, "
          f"storage {pred.storage_bytes} B")
    print(f"objective:  J = λ2 x {pred.saved_pct:.1f} % saved / "
          f"{objective.energy_pct_per_point:g} - λ1 x {pred.lost_pt:.2f} pt lost = "
          f"{pred.objective:+.3f} (reference {search.reference.id}, "
          f"{search.reference.accuracy:.2%})")
    print(f"reason:     {result.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
