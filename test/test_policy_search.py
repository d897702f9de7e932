"""Runtime search: optimality against the exhaustive oracle, constraints, the rules when no
candidate fits, contention, and the `adaspring search` command."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaspring_ros.commands.search import cli_main
from adaspring_ros.core.model.profile_table import load_profile_table
from adaspring_ros.core.policy.budgets import BudgetParams, Budgets, compute_budgets
from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.lambdas import Lambdas, adapt_lambdas
from adaspring_ros.core.policy.objective import ObjectiveParams
from adaspring_ros.core.policy.search import RuntimeSearch
from tools.search_oracle import exhaustive_search
from tools.synthetic_tables import synthetic_table, table_from_rows

INF = math.inf
# No loss limit: the plain optimisation, for the tests of budgets and ties.
ANY_LOSS = ObjectiveParams(max_accuracy_loss_pt=100.0)


def random_budgets(rng: np.random.Generator, search: RuntimeSearch) -> Budgets:
    """Budgets drawn around the table's own ranges, so that some, all or no variants fit."""
    def pick(values: np.ndarray) -> float:
        return INF if rng.random() < 0.25 else float(rng.uniform(values.min() * 0.8,
                                                                  values.max() * 1.1))

    floor = 0.0 if rng.random() < 0.5 else float(rng.uniform(search.accuracy.min(),
                                                             search.accuracy.max()))
    return Budgets(latency_ms=pick(search.latency_p95), memory_mb=pick(search.memory),
                   storage_bytes=pick(search.storage), energy_mj=pick(search.energy),
                   min_accuracy=floor)


@pytest.mark.parametrize("seed", range(12))
def test_search_equals_exhaustive_on_random_small_tables(seed):
    rng = np.random.default_rng(seed)
    table = synthetic_table(int(rng.integers(2, 60)), seed=seed)
    for _ in range(40):
        objective = ObjectiveParams(float(rng.choice([0.5, 3.0, 10.0, 100.0])),
                                    float(rng.uniform(1, 30)))
        search = RuntimeSearch(table, objective=objective)
        budgets = random_budgets(rng, search)
        l2 = float(rng.uniform(0, 1))
        lambdas = Lambdas(1 - l2, l2)
        contention = float(rng.uniform(0.5, 4))
        overhead = float(rng.choice([0.0, rng.uniform(0, 20)]))
        result = search.search(budgets, lambdas, contention, overhead_mj=overhead)
        best_id, best_value, rule = exhaustive_search(table, budgets, lambdas, contention,
                                                      objective_params=objective,
                                                      overhead_mj=overhead)
        assert (result.config_id, result.rule) == (best_id, rule)
        assert result.prediction.objective == pytest.approx(best_value, abs=1e-12)
        assert result.reason.startswith(f"{rule}: ")
        assert result.feasible == (rule in ("best", "forced-below-floor"))
        if rule != "forced-below-floor":  # the floor holds unless only variants below it fit
            assert result.entry.accuracy >= search.floor - 1e-9


metric = st.integers(1, 4)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.fixed_dictionaries({
    "accuracy": st.sampled_from([0.5, 0.7, 0.9]), "latency_ms_p50": metric,
    "peak_memory_mb": metric, "storage_bytes": metric, "energy_mj": metric}),
    min_size=1, max_size=12),
    budget=st.tuples(metric, metric, metric, metric), lambda2=st.sampled_from([0, 0.5, 1]),
    contention=st.sampled_from([0.5, 1.0, 2.0]), loss=st.sampled_from([0.0, 20.0, 100.0]))
def test_search_equals_exhaustive_with_many_ties(rows, budget, lambda2, contention, loss):
    table = table_from_rows(rows)
    budgets = Budgets(*budget)
    lambdas = Lambdas(1 - lambda2, lambda2)
    objective = ObjectiveParams(loss, 10.0)
    result = RuntimeSearch(table, objective=objective).search(budgets, lambdas, contention)
    best_id, best_value, rule = exhaustive_search(table, budgets, lambdas, contention,
                                                  objective_params=objective)
    assert (result.config_id, result.rule) == (best_id, rule)
    assert result.prediction.objective == pytest.approx(best_value, abs=1e-12)


def test_exact_ties_go_to_the_smallest_id():
    table = table_from_rows([{"accuracy": 0.9, "energy_mj": 2.0}] * 4
                            + [{"accuracy": 0.5, "energy_mj": 5.0}])
    result = RuntimeSearch(table, objective=ANY_LOSS).search(Budgets(), Lambdas(0.5, 0.5))
    tied = sorted(e.id for e in table.entries if e.accuracy == 0.9)
    assert result.config_id == tied[0]


def test_every_budget_is_respected():
    rows = [
        {"accuracy": 0.95, "latency_ms_p50": 10, "energy_mj": 10, "peak_memory_mb": 10,
         "storage_bytes": 10_000},
        {"accuracy": 0.90, "latency_ms_p50": 5, "energy_mj": 5, "peak_memory_mb": 50,
         "storage_bytes": 1_000},
        {"accuracy": 0.85, "latency_ms_p50": 5, "energy_mj": 20, "peak_memory_mb": 5,
         "storage_bytes": 1_000},
        {"accuracy": 0.70, "latency_ms_p50": 1, "energy_mj": 1, "peak_memory_mb": 1,
         "storage_bytes": 100},
    ]
    table = table_from_rows(rows)
    search = RuntimeSearch(table, objective=ANY_LOSS)
    ids = [e.id for e in table.entries]
    accuracy_only = Lambdas(1.0, 0.0)
    assert search.search(Budgets(), accuracy_only).config_id == ids[0]
    assert search.search(Budgets(latency_ms=8), accuracy_only).config_id == ids[1]
    assert search.search(Budgets(latency_ms=8, memory_mb=20), accuracy_only).config_id == ids[2]
    assert search.search(Budgets(storage_bytes=5_000, energy_mj=10),
                         accuracy_only).config_id == ids[1]
    assert search.search(Budgets(energy_mj=3), accuracy_only).config_id == ids[3]
    energy_only = Lambdas(0.0, 1.0)
    assert search.search(Budgets(), energy_only).config_id == ids[3]


def test_nothing_fits_falls_back_to_the_fastest_within_the_floor_with_that_reason():
    table = synthetic_table(200, seed=3)
    search = RuntimeSearch(table)
    result = search.search(Budgets(latency_ms=1e-6), Lambdas(0.5, 0.5))
    assert not result.feasible and result.n_feasible == 0 and result.rule == "nothing-fits"
    assert result.config_id == search.fastest_within_floor.id != search.fastest.id
    assert result.entry.accuracy >= search.floor
    assert result.reason.startswith("nothing-fits: no variant meets the budgets")
    assert "within 2 pt of the best" in result.reason and "still violates latency" in \
        result.reason


def test_only_variants_below_the_floor_fit_the_most_accurate_of_them_runs():
    rows = [{"accuracy": 0.95, "peak_memory_mb": 2.0}, {"accuracy": 0.80, "peak_memory_mb": 0.5},
            {"accuracy": 0.60, "peak_memory_mb": 0.1}]
    table = table_from_rows(rows)
    search = RuntimeSearch(table)
    forced = search.search(Budgets(memory_mb=1.0), Lambdas(0.0, 1.0))
    assert forced.rule == "forced-below-floor" and forced.feasible
    assert forced.config_id == table.entries[1].id
    assert "only variants more than 2 pt below the best meet the budgets" in forced.reason
    # nothing fits: the least memory within the floor (the 95 % one), not the 60 % variant
    nothing = search.search(Budgets(memory_mb=0.0), Lambdas(0.0, 1.0))
    assert nothing.rule == "nothing-fits" and nothing.config_id == table.entries[0].id
    assert "still violates memory 2 MB > 0 MB" in nothing.reason


def test_an_accuracy_floor_keeps_poor_variants_out():
    rows = [{"accuracy": 0.92, "energy_mj": 10.0}, {"accuracy": 0.85, "energy_mj": 4.0},
            {"accuracy": 0.30, "energy_mj": 1.0}]
    table = table_from_rows(rows)
    search = RuntimeSearch(table, objective=ANY_LOSS)
    energy_only = Lambdas(0.0, 1.0)
    assert search.search(Budgets(), energy_only).config_id == table.entries[2].id
    floored = search.search(Budgets(min_accuracy=0.8), energy_only)
    assert floored.config_id == table.entries[1].id
    nothing = search.search(Budgets(min_accuracy=0.95), energy_only)
    assert not nothing.feasible and nothing.config_id == table.entries[0].id
    assert "accuracy 92.0% < 95.0%" in nothing.reason


def test_an_energy_fallback_more_accurate_than_the_feasible_prints_a_signed_gain():
    # only the 90 % variant meets the energy budget, and it is outside the 3-point loss limit:
    # the policy takes the least energy within the limit (93 %), 3 points above it
    rows = [{"accuracy": 0.94, "energy_mj": 10.0}, {"accuracy": 0.93, "energy_mj": 8.0},
            {"accuracy": 0.90, "energy_mj": 3.0}]
    table = table_from_rows(rows)
    result = RuntimeSearch(table).search(Budgets(energy_mj=5.0), Lambdas(0.5, 0.5))
    assert result.config_id == table.entries[1].id and not result.feasible
    assert "no variant meets the energy budget" in result.reason
    assert "acc 93.0% (+3.00 pt)" in result.reason and "--" not in result.reason
    lost = RuntimeSearch(table).search(Budgets(energy_mj=9.0), Lambdas(1.0, 0.0))
    assert "acc 93.0% (-0.00 pt)" in lost.reason  # the most accurate within budget: 0 lost


def test_fallback_is_the_variant_closest_to_fitting_the_binding_budget():
    rows = [{"latency_ms_p50": 1, "peak_memory_mb": 40},
            {"latency_ms_p50": 9, "peak_memory_mb": 12},
            {"latency_ms_p50": 5, "peak_memory_mb": 30}]
    table = table_from_rows(rows)
    result = RuntimeSearch(table, objective=ANY_LOSS).search(Budgets(memory_mb=10),
                                                            Lambdas(0.5, 0.5))
    assert result.config_id == table.entries[1].id  # least memory, though not the fastest
    assert "memory" in result.reason


def test_contention_moves_the_choice_to_a_faster_variant():
    table = synthetic_table(300, seed=1)
    search = RuntimeSearch(table)
    budgets = Budgets(latency_ms=8.0)
    calm = search.search(budgets, Lambdas(0.9, 0.1), contention=1.0)
    busy = search.search(budgets, Lambdas(0.9, 0.1), contention=2.5)
    assert calm.feasible and busy.feasible
    assert busy.entry.latency_ms_p95 < calm.entry.latency_ms_p95
    assert busy.prediction.latency_ms == pytest.approx(
        busy.entry.latency_ms_p50 * search.tail_ratio * 2.5)
    assert busy.prediction.latency_ms <= 8.0
    assert calm.entry.latency_ms_p95 * 2.5 > 8.0  # the calm choice would miss under contention


def test_predict_reports_violations_of_one_variant():
    table = table_from_rows([{"latency_ms_p50": 10.0, "latency_ms_p95": 10.0},
                             {"latency_ms_p50": 1.0, "latency_ms_p95": 1.0}])
    search = RuntimeSearch(table)
    pred = search.predict(table.entries[0].id, Budgets(latency_ms=15), Lambdas(1, 0),
                          contention=2.0)
    assert pred.latency_ms == 20.0 and not pred.feasible
    assert pred.violations == ("latency 20 ms > 15 ms",)
    with pytest.raises(KeyError, match="not in the profile table"):
        search.row("r28-nonsense")
    with pytest.raises(ValueError, match="contention"):
        search.search(Budgets(), Lambdas(1, 0), contention=0.0)


def test_the_cold_start_term_is_added_to_every_median_before_the_scaling():
    rows = [{"latency_ms_p50": 0.1, "accuracy": 0.90}, {"latency_ms_p50": 1.3, "accuracy": 0.95}]
    table = table_from_rows(rows)
    plain = RuntimeSearch(table)
    table.cold_start_ms = 0.3
    search = RuntimeSearch(table)
    assert (plain.cold_ms, search.cold_ms) == (0.0, 0.3)
    small = table.entries[0].id
    pred = search.predict(small, Budgets(), Lambdas(1, 0), contention=2.0, tail=1.5)
    assert pred.latency_ms_p50 == pytest.approx(2.0 * 0.4)  # what the metrics will report
    assert pred.latency_ms == pytest.approx(2.0 * 0.4 * 1.5)  # what the budget is held to
    assert search.predict(small, Budgets(), Lambdas(1, 0), cold_ms=0.0).latency_ms_p50 == \
        pytest.approx(0.1)
    # a budget the small variant meets on the table alone, not with the cold start
    budgets = Budgets(latency_ms=0.3 * search.tail_ratio)
    assert plain.search(budgets, Lambdas(1, 0)).config_id == small
    cold = search.search(budgets, Lambdas(1, 0))
    assert cold.rule == "nothing-fits" and cold.cold_ms == 0.3
    for rng_seed in range(5):  # the oracle agrees with the term on random budgets
        rng = np.random.default_rng(rng_seed)
        wide = synthetic_table(40, seed=rng_seed)
        wide.cold_start_ms = float(rng.uniform(0.0, 1.0))
        budgets = random_budgets(rng, RuntimeSearch(wide))
        result = RuntimeSearch(wide).search(budgets, Lambdas(0.7, 0.3), 1.3)
        assert (result.config_id, result.rule) == exhaustive_search(
            wide, budgets, Lambdas(0.7, 0.3), 1.3)[::2]
    with pytest.raises(ValueError, match="cold_ms"):
        search.search(Budgets(), Lambdas(1, 0), cold_ms=-0.1)


def test_latency_is_the_median_times_one_tail_ratio():
    # per-variant p95s polluted by interference: the table's median ratio is used for all
    rows = [{"latency_ms_p50": 1.0, "latency_ms_p95": 1.2},
            {"latency_ms_p50": 2.0, "latency_ms_p95": 2.4},
            {"latency_ms_p50": 3.0, "latency_ms_p95": 30.0}]
    table = table_from_rows(rows)
    search = RuntimeSearch(table)
    assert search.tail_ratio == pytest.approx(1.2)
    noisy = table.entries[2].id
    assert search.predict(noisy, Budgets(), Lambdas(1, 0)).latency_ms == pytest.approx(3.6)
    assert search.predict(noisy, Budgets(), Lambdas(1, 0), contention=2.0,
                          tail=1.5).latency_ms == pytest.approx(9.0)
    assert search.search(Budgets(latency_ms=4.0), Lambdas(1, 0)).feasible
    with pytest.raises(ValueError, match="tail_ratio"):
        RuntimeSearch(table, tail_ratio=0.5)
    with pytest.raises(ValueError, match="tail"):
        search.search(Budgets(), Lambdas(1, 0), tail=float("nan"))


def test_decide_adapts_lambdas_and_budgets_from_the_context():
    search = RuntimeSearch(synthetic_table(300, seed=2))
    full = search.decide(Context(battery_percent=None, latency_budget_ms=100))
    low = search.decide(Context(battery_percent=5, latency_budget_ms=100))
    assert low.lambdas.lambda2 > full.lambdas.lambda2
    assert low.prediction.energy_mj <= full.prediction.energy_mj
    tight = search.decide(Context(latency_budget_ms=2))
    assert tight.prediction.latency_ms <= 2 * 0.9


def test_cli_prints_the_variant_the_oracle_chooses(capsys):
    # 30 % battery (λ2 0.43), half the CPU taken by others (contention 1.5x), 2 ms per frame
    code = cli_main(["--battery", "30", "--cpu-load", "50", "--latency-budget-ms", "2",
                     "--mission-s", "600", "--min-accuracy", "0.5"])
    out = capsys.readouterr().out
    assert code == 0
    table = load_profile_table()
    context = Context(battery_percent=30, cpu_load_percent=50, cpu_load_other_percent=50,
                      latency_budget_ms=2)
    budgets = compute_budgets(context, BudgetParams(mission_duration_s=600, min_accuracy=0.5))
    expected, value, rule = exhaustive_search(table, budgets, adapt_lambdas(context), 1.5)
    entry = table.get(expected)
    assert rule == "best" and expected != RuntimeSearch(table).reference.id
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert lines["chosen"].strip() == expected
    assert f"accuracy {entry.accuracy:.2%}" in lines["predicted"]
    assert f"= {value:+.3f}" in lines["objective"]
    assert "latency <= 1.80 ms" in lines["budgets"] and "accuracy >= 50.0%" in lines["budgets"]
    assert lines["reason"].strip().startswith("best: ")


def test_cli_takes_a_scenario_and_lambda_overrides(capsys):
    from adaspring_ros.core.policy.scenario import ScenarioTrace, shipped_scenarios

    mixed = next(p for p in shipped_scenarios() if p.stem == "mixed")
    assert cli_main(["--scenario", str(mixed), "--at", "45", "--lambda2", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "scenario:mixed" in out and "λ2 = 0.250" in out and "override" in out
    trace = ScenarioTrace.load(mixed)
    remaining = trace.budget_params().mission_duration_s - 45
    assert f"for {remaining:.0f} s of mission" in out


def test_cli_reports_bad_input(capsys, tmp_path):
    assert cli_main(["--table", str(tmp_path / "none.json")]) == 2
    assert "cannot read profile table" in capsys.readouterr().err
    assert cli_main(["--battery", "140"]) == 2
    assert "battery_percent" in capsys.readouterr().err


def test_cli_cpu_load_predicts_contention_and_moves_the_choice(capsys):
    from adaspring_ros.core.policy.budgets import contention_from_load

    assert contention_from_load(0) == 1.0 and contention_from_load(95) == pytest.approx(1.95)
    table = load_profile_table()
    search = RuntimeSearch(table)
    full_p95 = float((search.latency_p50[search.row(search.reference.id)] + search.cold_ms)
                     * search.tail_ratio)
    budget = f"{full_p95 / 0.9 * 1.2:.3f}"  # the reference fits a calm CPU, not a busy one

    def chosen(*extra: str) -> tuple[str, str]:
        assert cli_main(["--charging", "--latency-budget-ms", budget, *extra]) == 0
        out = capsys.readouterr().out
        line = next(x for x in out.splitlines() if x.startswith("chosen:"))
        return line.split()[-1], out

    calm, _ = chosen()
    busy, out = chosen("--cpu-load", "95")
    assert "contention 1.95" in out
    assert calm == search.reference.id and busy != calm
    assert table.get(busy).latency_ms_p50 < table.get(calm).latency_ms_p50
    explicit, _ = chosen("--cpu-load", "95", "--contention", "1.0")  # a measurement wins
    assert explicit == calm
