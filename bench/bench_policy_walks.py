"""The evolution policy's invariants on many random context walks (more than the test suite runs).

    python -m bench.bench_policy_walks          (or: adaspring bench policy_walks)

Walks of tools/policy_walks.py (battery jumps, charger toggles, impossible latency and memory
budgets, CPU load and heat, stale gaps, recoveries; a fake clock at 0.5 s a step, metrics of the
served variant at the simulated contention) over the shipped profile table and three synthetic
ones, a quarter of them without headroom. Counted at every step: (a) settled on the one-shot
choice 10 s after a change, (b) the accuracy floor, (c) no swap once settled, (d) reasons. The
same walks with every violation counted as a flap (a back-off that traps the policy after
context-driven violations) show what (a) catches. It prints and rewrites its section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from adaspring_ros.core.model.profile_table import ProfileTable, load_profile_table
from adaspring_ros.core.policy import evolution
from adaspring_ros.core.policy.evolution import EvolutionParams
from adaspring_ros.core.policy.search import RULES, RuntimeSearch
from bench.report import markdown_table, write_section
from tools.policy_walks import (
    INVARIANTS,
    MAX_SWAPS_PER_PHASE,
    SETTLE_S,
    STEP_S,
    WalkResult,
    random_walk,
    run_walk,
    walk_budget_params,
)
from tools.synthetic_tables import synthetic_table


def walk_table(search: RuntimeSearch, walks: int, min_steps: int, seed: int
               ) -> tuple[WalkResult, int, float]:
    """(merged result, steps, seconds) of ``walks`` walks over ``search``."""
    budget_params = walk_budget_params(search)
    total, steps = WalkResult({}, [], Counter()), 0
    start = time.perf_counter()
    for i in range(walks):
        rng = np.random.default_rng([seed, i, len(search)])
        params = EvolutionParams(headroom=0.0) if i % 4 == 3 else EvolutionParams()
        walk = random_walk(rng, search, min_steps, params)
        steps += walk.steps
        total.merge(run_walk(walk, search, budget_params))
    return total, steps, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walks", type=int, default=600, help="walks per table (600)")
    parser.add_argument("--steps", type=int, default=150, help="least steps of a walk (150)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="200 walks per table")
    args = parser.parse_args(argv)
    walks = 200 if args.quick else args.walks
    tables: dict[str, ProfileTable] = {"shipped": load_profile_table()}
    tables.update({f"synthetic {n}": synthetic_table(n, seed=args.seed + n)
                   for n in (60, 200, 1000)})

    rows, exercised, shipped_walks = [], Counter(), None
    for name, table in tables.items():
        search = RuntimeSearch(table)
        result, steps, took = walk_table(search, walks, args.steps, args.seed)
        exercised.update(result.seen)
        if name == "shipped":
            shipped_walks = (search, result)
        checks = sum(n for key, n in result.seen.items() if key.startswith("settled check"))
        phases = sum(n for key, n in result.seen.items() if key.startswith("phases with"))
        worst = max(int(key.split()[2]) for key in result.seen if key.startswith("phases with"))
        rows.append([f"{name} ({len(table)} variants)", walks, steps, phases, checks,
                     *(result.violations[k] for k in INVARIANTS), worst,
                     result.seen["flaps"], f"{took:.1f}"])
        for note in result.notes[:5]:
            print(f"  {name}: {note}")

    search, _ = shipped_walks
    real = evolution.Evolver._is_flap
    evolution.Evolver._is_flap = lambda self, lambdas, now: True
    try:
        trapped, steps, took = walk_table(search, walks, args.steps, args.seed)
    finally:
        evolution.Evolver._is_flap = real
    rows.append(["shipped, every violation a flap", walks, steps, "", "",
                 *(trapped.violations[k] for k in INVARIANTS), "", trapped.seen["flaps"],
                 f"{took:.1f}"])

    coverage = ", ".join(f"{rule} {exercised[f'settled check, one-shot {rule}']}"
                         for rule in RULES)
    kinds = ", ".join(f"{kind} {exercised[f'decision {kind}']}" for kind in evolution.KINDS)
    body = "\n".join([
        markdown_table(["table", "walks", "steps", "phases", "settled checks",
                        "(a) settled", "(b) floor", "(c) flapping", "(d) reasons",
                        "most swaps in a phase", "flaps", "s"], rows),
        "",
        f"A step is {STEP_S:g} s of a fake clock (a context message, a metrics window of the "
        f"served variant, a decision); a walk has {args.steps}+ steps in phases of 0.5-22 s. "
        f"(a) is checked at every step {SETTLE_S:g} s or more after a change (settled checks), "
        f"(c) allows no swap then and at most {MAX_SWAPS_PER_PHASE} in a phase. Columns (a)-(d) "
        "count the steps that broke the invariant. The last row runs the shipped table's walks "
        "with every violation counted as a flap: the back-off then holds the policy below the "
        "one-shot choice, which (a) counts.",
        "",
        f"One-shot rules at the settled checks: {coverage}. Decisions: {kinds}.",
    ])
    command = "python -m bench.bench_policy_walks" + (" --quick" if args.quick else "")
    write_section("policy_walks", "Evolution policy on random context walks", command, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
