"""The evolution policy under random walks of contexts (tools/policy_walks.py), a fake clock and
simulated metrics: 1,000 seeded walks of 80+ steps (0.5 s each), every invariant checked at every
step: (a) settled on the one-shot choice 10 s after a change, (b) the accuracy floor, (c) no swap
once settled, (d) every reason names its rule. A quarter of the walks run without headroom, where
the one-shot choice is the plain search."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from adaspring_ros.core.model.profile_table import load_profile_table
from adaspring_ros.core.policy import evolution
from adaspring_ros.core.policy.budgets import BudgetParams
from adaspring_ros.core.policy.evolution import EvolutionParams
from adaspring_ros.core.policy.scenario import ScenarioTrace, resolve_scenario
from adaspring_ros.core.policy.search import RULES, RuntimeSearch
from tools.policy_walks import (
    SETTLE_S,
    STEP_S,
    Phase,
    Walk,
    WalkResult,
    random_walk,
    run_walk,
    walk_budget_params,
)
from tools.synthetic_tables import synthetic_table

WALKS_PER_TABLE = 250
MIN_STEPS = 80


@pytest.fixture(scope="module")
def searches() -> dict[str, RuntimeSearch]:
    tables = {"shipped": load_profile_table()}
    tables.update({f"synthetic {n}": synthetic_table(n, seed=10 + n % 7)
                   for n in (60, 200, 400)})
    return {name: RuntimeSearch(table) for name, table in tables.items()}


@pytest.mark.parametrize("name", ["shipped", "synthetic 60", "synthetic 200", "synthetic 400"])
def test_random_walks_keep_every_invariant(searches, name):
    search = searches[name]
    budget_params = walk_budget_params(search)
    total = WalkResult({}, [], Counter())
    steps = 0
    for seed in range(WALKS_PER_TABLE):
        rng = np.random.default_rng([seed, len(search)])
        params = EvolutionParams(headroom=0.0) if seed % 4 == 3 else EvolutionParams()
        walk = random_walk(rng, search, MIN_STEPS, params)
        steps += walk.steps
        total.merge(run_walk(walk, search, budget_params))
    assert steps >= WALKS_PER_TABLE * MIN_STEPS
    assert not any(total.violations.values()), (total.violations, total.notes)
    # the walks reach every rule of the search and every swap the policy makes
    for rule in RULES:
        assert total.seen[f"settled check, one-shot {rule}"] > 0, rule
    for kind in ("initial", "violation", "gain", "stale", "keep", "hold"):
        assert total.seen[f"decision {kind}"] > 0, kind


def recoveries() -> tuple[Walk, BudgetParams]:
    """The phases of config/scenarios/recoveries.yaml, each held for 12 s, and its budgets."""
    trace = ScenarioTrace.load(resolve_scenario("scenarios/recoveries.yaml"))
    contexts = [trace.context_at(float(t)) for t in np.arange(2.5, trace.duration_s, 5.0)]
    steps = int(12.0 / STEP_S)
    assert steps * STEP_S > SETTLE_S
    walk = Walk([Phase(c, steps, c.cpu_load_other_percent) for c in contexts],
                non_model_ms=2.0, overhead_mj=0.5)
    return walk, trace.budget_params()


def test_the_recoveries_scenario_keeps_every_invariant(searches):
    """The traps this scenario sets: nothing fits within the floor when memory is below the
    reserve (the whole table's least memory is a 31.8 % variant), and context-driven violations
    that would hold a back-off keep the policy below a fresh start's choice at the end."""
    walk, budget_params = recoveries()
    result = run_walk(walk, searches["shipped"], budget_params)
    assert not any(result.violations.values()), result.notes
    assert result.seen["decision violation"] >= 4 and result.seen["decision gain"] >= 2
    assert result.seen["settled check, one-shot nothing-fits"] > 0
    assert result.seen["settled check, one-shot forced-below-floor"] > 0


def test_the_walks_catch_a_policy_that_backs_off_for_every_violation(searches, monkeypatch):
    """Counting every violation as a flap, context tightening included, traps the policy below
    the one-shot choice: invariant (a) sees it."""
    monkeypatch.setattr(evolution.Evolver, "_is_flap", lambda self, lambdas, now: True)
    walk, budget_params = recoveries()
    result = run_walk(walk, searches["shipped"], budget_params)
    assert result.violations["a_settled"] > 0, result.notes
    assert result.seen["flaps"] >= 3
