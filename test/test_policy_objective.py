"""Properties of the runtime objective (policy.search), over the shipped profile table and random
tables: what external power, λ2 = 0 and λ1 = 0 choose, monotone responses to the battery and the
latency budget, and indifference to junk variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from adaspring_ros.core.model.profile_table import ProfileTable, load_profile_table
from adaspring_ros.core.policy.budgets import BudgetParams, Budgets
from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.lambdas import Lambdas
from adaspring_ros.core.policy.objective import ObjectiveParams
from adaspring_ros.core.policy.search import RuntimeSearch
from tools.synthetic_tables import synthetic_table, table_from_rows

INF = math.inf


@pytest.fixture(scope="module")
def shipped() -> ProfileTable:
    return load_profile_table()


def tables(shipped: ProfileTable) -> list[ProfileTable]:
    return [shipped] + [synthetic_table(n, seed=s) for n, s in ((40, 1), (300, 2), (900, 3))]


# Rows of a random table: any accuracy, latency and energy, not correlated.
row = st.fixed_dictionaries({
    "accuracy": st.floats(0.05, 1.0), "latency_ms_p50": st.floats(0.01, 50.0),
    "energy_mj": st.floats(0.01, 50.0), "peak_memory_mb": st.floats(0.1, 10.0)})
rows_strategy = st.lists(row, min_size=1, max_size=25)
objective_strategy = st.builds(ObjectiveParams, st.sampled_from([0.5, 3.0, 10.0, 100.0]),
                               st.sampled_from([1.0, 10.0, 50.0]))


def most_accurate_feasible(search: RuntimeSearch, budgets: Budgets, overhead: float = 0.0,
                           contention: float = 1.0) -> float:
    mask = search.feasible_mask(budgets, search.latency_scale(contention), overhead)
    return float(search.accuracy[mask].max())


# -- external power and λ2 = 0 -----------------------------------------------------------------
def test_on_external_power_the_choice_is_within_half_a_point_of_the_best_feasible(shipped):
    for table in tables(shipped):
        search = RuntimeSearch(table)
        full_p95 = float(search.latency_p50[search.row(search.reference.id)] * search.tail_ratio)
        for budget_ms in (full_p95 / 0.9 * 1.01, 20.0, 100.0, 1000.0):
            for charging, battery in ((True, 10.0), (True, 90.0), (False, None)):
                context = Context(battery_percent=battery, charging=charging,
                                  latency_budget_ms=budget_ms)
                result = search.decide(context, budget_params=BudgetParams(
                    latency_margin=0.9, mission_duration_s=600))
                best = most_accurate_feasible(search, result.budgets)
                assert result.feasible
                assert result.prediction.accuracy >= best - 0.005, result.reason


@settings(max_examples=150, deadline=None)
@given(rows=rows_strategy, objective=objective_strategy, latency=st.floats(0.01, 60.0),
       overhead=st.sampled_from([0.0, 5.0]))
def test_lambda2_zero_picks_the_most_accurate_feasible_variant(rows, objective, latency,
                                                               overhead):
    search = RuntimeSearch(table_from_rows(rows), objective=objective)
    budgets = Budgets(latency_ms=latency)
    result = search.search(budgets, Lambdas(1.0, 0.0), overhead_mj=overhead)
    assume(result.feasible)
    assert result.prediction.accuracy == most_accurate_feasible(search, budgets, overhead)


# -- λ1 = 0 ------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(rows=rows_strategy, objective=objective_strategy, latency=st.floats(0.01, 60.0),
       overhead=st.sampled_from([0.0, 5.0]))
def test_lambda1_zero_picks_the_least_energy_candidate(rows, objective, latency, overhead):
    search = RuntimeSearch(table_from_rows(rows), objective=objective)
    budgets = Budgets(latency_ms=latency)
    result = search.search(budgets, Lambdas(0.0, 1.0), overhead_mj=overhead)
    feasible = search.feasible_mask(budgets, search.latency_scale(), overhead)
    assume(result.feasible)
    candidates = feasible & search.floor_mask()
    if candidates.any():
        assert result.entry.energy_mj == pytest.approx(search.energy[candidates].min())
    else:  # the budgets force a loss beyond the limit: the most accurate feasible variant
        assert result.entry.accuracy == search.accuracy[feasible].max()


def test_lambda1_zero_without_loss_limit_is_the_least_energy_feasible_variant(shipped):
    for table in tables(shipped):
        search = RuntimeSearch(table, objective=ObjectiveParams(max_accuracy_loss_pt=100.0))
        for budget in (INF, 2.0, 0.8):
            budgets = Budgets(latency_ms=budget)
            result = search.search(budgets, Lambdas(0.0, 1.0))
            mask = search.feasible_mask(budgets, search.latency_scale())
            if mask.any():
                assert result.entry.energy_mj == search.energy[mask].min()


def test_the_loss_limit_keeps_variants_far_below_the_reference_out(shipped):
    search = RuntimeSearch(shipped, objective=ObjectiveParams(max_accuracy_loss_pt=3.0))
    for lambda2 in (0.2, 0.5, 0.9, 1.0):
        result = search.search(Budgets(), Lambdas(1 - lambda2, lambda2))
        assert result.entry.accuracy >= search.reference.accuracy - 0.03 - 1e-9


# -- monotone in the battery and in the latency budget ------------------------------------------
def battery_choice(search: RuntimeSearch, battery: float, budget_ms: float,
                   overhead: float) -> float:
    context = Context(battery_percent=battery, latency_budget_ms=budget_ms)
    params = BudgetParams(mission_duration_s=1800, perception_energy_share=0.01,
                          latency_margin=0.9)
    return search.decide(context, budget_params=params, overhead_mj=overhead)


@settings(max_examples=200, deadline=None)
@given(rows=rows_strategy, objective=objective_strategy, high=st.floats(0, 100),
       drop=st.floats(0, 100), budget=st.floats(0.05, 100), overhead=st.sampled_from([0.0, 3.0]))
def test_lowering_the_battery_never_picks_more_energy_per_frame(rows, objective, high, drop,
                                                                budget, overhead):
    search = RuntimeSearch(table_from_rows(rows), objective=objective)
    low = max(high - drop, 0.0)
    before = battery_choice(search, high, budget, overhead)
    after = battery_choice(search, low, budget, overhead)
    # With nothing feasible the rule is the variant within the floor closest to fitting,
    # whatever its energy; an energy budget out of reach (the least energy within the floor)
    # must keep the property.
    assume(after.rule != "nothing-fits")
    assert after.prediction.energy_mj <= before.prediction.energy_mj + 1e-12


def test_lowering_the_battery_on_the_shipped_and_synthetic_tables(shipped):
    for table in tables(shipped):
        search = RuntimeSearch(table)
        for budget_ms in (10.0, 50.0):
            for overhead in (0.0, 8.0):
                # down to where nothing fits (then the floor, not the energy, rules)
                choices = [battery_choice(search, b, budget_ms, overhead)
                           for b in range(100, -1, -5)]
                energies = [c.prediction.energy_mj for c in choices
                            if c.rule != "nothing-fits"]
                assert len(energies) >= 15
                assert all(b <= a + 1e-12 for a, b in zip(energies, energies[1:], strict=False))


@settings(max_examples=200, deadline=None)
@given(rows=rows_strategy, objective=objective_strategy, loose=st.floats(0.01, 100),
       cut=st.floats(0.0, 1.0), lambda2=st.floats(0, 1), energy=st.floats(0.5, 100),
       contention=st.sampled_from([1.0, 2.0]))
def test_tightening_only_the_latency_budget_never_picks_a_slower_variant(
        rows, objective, loose, cut, lambda2, energy, contention):
    search = RuntimeSearch(table_from_rows(rows), objective=objective)
    lambdas = Lambdas(1 - lambda2, lambda2) if lambda2 < 1 else Lambdas(0.0, 1.0)
    before = search.search(Budgets(latency_ms=loose, energy_mj=energy), lambdas, contention)
    after = search.search(Budgets(latency_ms=loose * cut, energy_mj=energy), lambdas, contention)
    assume(after.feasible)
    assert after.entry.latency_ms_p50 <= before.entry.latency_ms_p50


def test_tightening_the_latency_budget_on_the_shipped_and_synthetic_tables(shipped):
    for table in tables(shipped):
        search = RuntimeSearch(table)
        for lambda2 in (0.0, 0.3, 0.7):
            lambdas = Lambdas(1 - lambda2, lambda2)
            choices = [search.search(Budgets(latency_ms=b), lambdas)
                       for b in np.geomspace(50, 0.05, 60)]
            # down to where nothing fits: then the fastest within the floor, however slow
            latencies = [c.entry.latency_ms_p50 for c in choices if c.feasible]
            assert len(latencies) >= 30
            assert all(b <= a for a, b in zip(latencies, latencies[1:], strict=False))
            assert all(c.entry.id == search.fastest_within_floor.id for c in choices
                       if not c.feasible)


# -- junk --------------------------------------------------------------------------------------
junk_row = st.fixed_dictionaries({
    "accuracy": st.floats(0.0, 1.0), "latency_ms_p50": st.floats(0.001, 100.0),
    "energy_mj": st.floats(0.0, 100.0), "peak_memory_mb": st.floats(0.0, 10.0)})


@settings(max_examples=200, deadline=None)
@given(rows=rows_strategy, junk=st.lists(junk_row, min_size=1, max_size=20),
       objective=objective_strategy, latency=st.floats(0.01, 60), lambda2=st.floats(0, 1),
       overhead=st.sampled_from([0.0, 4.0]))
def test_adding_junk_variants_never_changes_the_choice(rows, junk, objective, latency, lambda2,
                                                       overhead):
    real = RuntimeSearch(table_from_rows(rows), objective=objective)
    floor = min(real.reference.accuracy - objective.max_accuracy_loss_pt / 100,
                float(real.accuracy.min()))
    # With a loss limit as wide as the accuracy itself every variant is a fair candidate: there
    # is no junk to add.
    assume(floor > 0)
    junk = [dict(j, accuracy=j["accuracy"] * floor * 0.999) for j in junk]
    budgets = Budgets(latency_ms=latency)
    lambdas = Lambdas(1 - lambda2, lambda2) if lambda2 < 1 else Lambdas(0.0, 1.0)
    before = real.search(budgets, lambdas, overhead_mj=overhead)
    assume(before.feasible)  # junk that fits where nothing did is a fair new choice
    mixed = RuntimeSearch(table_from_rows(rows + junk), objective=objective)
    after = mixed.search(budgets, lambdas, overhead_mj=overhead)
    assert (after.entry.accuracy, after.entry.latency_ms_p50, after.entry.energy_mj) == \
        (before.entry.accuracy, before.entry.latency_ms_p50, before.entry.energy_mj)
    assert after.prediction.objective == pytest.approx(before.prediction.objective)
    assert after.prediction.lost_pt == pytest.approx(before.prediction.lost_pt)


def test_junk_added_to_the_shipped_table_changes_nothing(shipped):
    rng = np.random.default_rng(7)
    real = RuntimeSearch(shipped)
    junk = [{"accuracy": float(rng.uniform(0.1, 0.5)), "latency_ms_p50": float(rng.uniform(
        0.001, 5)), "energy_mj": float(rng.uniform(0.001, 20)), "peak_memory_mb": 0.01}
        for _ in range(300)]
    base = [{"accuracy": e.accuracy, "latency_ms_p50": e.latency_ms_p50,
             "latency_ms_p95": e.latency_ms_p95, "energy_mj": e.energy_mj,
             "peak_memory_mb": e.peak_memory_mb} for e in shipped.entries]
    padded = table_from_rows(base + junk)
    padded.cold_start_ms = shipped.cold_start_ms  # the same device
    mixed = RuntimeSearch(padded, tail_ratio=real.tail_ratio)
    for lambda2 in (0.0, 0.2, 0.5, 0.8, 1.0):
        for budget in (INF, 3.0, 1.0):
            lambdas = Lambdas(1 - lambda2, lambda2)
            a = real.search(Budgets(latency_ms=budget), lambdas)
            b = mixed.search(Budgets(latency_ms=budget), lambdas)
            assert (a.entry.accuracy, a.entry.energy_mj) == (b.entry.accuracy, b.entry.energy_mj)


# -- the worked example of the README ----------------------------------------------------------
def test_worked_example_one_point_for_forty_percent_at_lambda_0_8_0_2():
    # reference 94 % at 10 mJ; a variant 1 point lower at 6.1 mJ (39 % saved) or 5.9 mJ (41 %)
    for energy, expect_small in ((6.1, False), (5.9, True)):
        table = table_from_rows([{"accuracy": 0.94, "energy_mj": 10.0},
                                 {"accuracy": 0.93, "energy_mj": energy}])
        result = RuntimeSearch(table).search(Budgets(), Lambdas(0.8, 0.2))
        assert (result.entry.accuracy == 0.93) == expect_small, result.reason


# -- an energy budget no variant can meet -------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(rows=rows_strategy, objective=objective_strategy, lambda2=st.floats(0, 0.99),
       overhead=st.floats(0.0, 50.0), short=st.floats(0.01, 0.99))
def test_an_energy_budget_out_of_reach_costs_no_more_than_the_loss_limit(
        rows, objective, lambda2, overhead, short):
    """When even the cheapest variant plus the rest of the frame exceeds the energy budget, no
    choice meets it: the policy takes the least energy it may (within the loss limit), never a
    variant further down, however little energy it would save."""
    search = RuntimeSearch(table_from_rows(rows), objective=objective)
    cheapest = float(search.energy.min()) + overhead
    choice = search.search(Budgets(energy_mj=cheapest * short), Lambdas(1 - lambda2, lambda2),
                           overhead_mj=overhead)
    best = float(search.accuracy.max())
    loss = 100 * (best - choice.entry.accuracy)
    assert loss <= objective.max_accuracy_loss_pt + 1e-9
    within = search.accuracy >= best - objective.max_accuracy_loss_pt / 100 - 1e-12
    assert choice.entry.energy_mj == pytest.approx(float(search.energy[within].min()))


def test_an_energy_budget_out_of_reach_keeps_the_shipped_policy_within_the_limit(shipped):
    """The demo's last phase: a frame costs ~20 mJ besides the model and the battery allows
    less. The choice stays within the loss limit of the table's best, not 5 points down."""
    search = RuntimeSearch(shipped)
    choice = search.search(Budgets(energy_mj=15.0), Lambdas(0.52, 0.48), overhead_mj=20.0)
    best = max(e.accuracy for e in shipped.entries)
    limit = search.objective_params.max_accuracy_loss_pt
    assert 100 * (best - choice.entry.accuracy) <= limit + 1e-9   # the mask's tolerance
    assert "no variant meets the energy budget" in choice.reason
