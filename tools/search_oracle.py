"""The runtime search written out one variant at a time in plain Python: the oracle the tests and
bench/bench_search.py hold the vectorised ``RuntimeSearch`` to."""

from __future__ import annotations

import math

from adaspring_ros.core.model.profile_table import ProfileEntry, ProfileTable
from adaspring_ros.core.policy.budgets import Budgets
from adaspring_ros.core.policy.lambdas import Lambdas
from adaspring_ros.core.policy.objective import (
    ObjectiveParams,
    objective,
    reference_row,
    saved_pct,
)
from adaspring_ros.core.policy.search import table_tail_ratio

__all__ = ["exhaustive_search"]


def exhaustive_search(table: ProfileTable, budgets: Budgets, lambdas: Lambdas,
                      contention: float = 1.0, tail: float | None = None,
                      objective_params: ObjectiveParams | None = None,
                      overhead_mj: float = 0.0,
                      cold_ms: float | None = None) -> tuple[str, float, str]:
    """(chosen id, its objective, the rule that chose it), by the rules of
    ``adaspring_ros.core.policy.search.RULES``, each entry checked in turn; ``cold_ms`` None:
    the table's cold-start term."""
    params = objective_params or ObjectiveParams()
    scale = (table_tail_ratio(table) if tail is None else tail) * contention
    cold = (table.cold_start_ms or 0.0) if cold_ms is None else cold_ms
    entries = sorted(table.entries, key=lambda e: e.id)
    ref = entries[reference_row([e.accuracy for e in entries], [e.energy_mj for e in entries])]
    floor = 100.0 * ref.accuracy - params.max_accuracy_loss_pt - 1e-9

    def meets_all_but_energy(e: ProfileEntry) -> bool:
        return ((e.latency_ms_p50 + cold) * scale <= budgets.latency_ms
                and e.peak_memory_mb <= budgets.memory_mb
                and e.storage_bytes <= budgets.storage_bytes
                and e.accuracy >= budgets.min_accuracy)

    fits = [e for e in entries
            if meets_all_but_energy(e) and e.energy_mj + overhead_mj <= budgets.energy_mj]
    within = [e for e in entries if 100.0 * e.accuracy >= floor]
    anchor = max(e.accuracy for e in fits) if fits else ref.accuracy

    def value(e: ProfileEntry) -> float:
        saved = saved_pct(e.energy_mj, ref.energy_mj, overhead_mj)
        return objective(lambdas, 100.0 * anchor - 100.0 * e.accuracy, saved, params)

    best: tuple[float, str] | None = None
    for e in fits:
        if 100.0 * e.accuracy < floor:
            continue
        v = value(e)
        if best is None or v > best[0]:  # entries in id order: ties keep the smallest id
            best = (v, e.id)
    if best is not None:
        return best[1], best[0], "best"
    thrifty = [e for e in within if meets_all_but_energy(e)]
    if thrifty:
        pick = min(thrifty, key=lambda e: (e.energy_mj, -e.accuracy, e.id))
        return pick.id, value(pick), "energy-out-of-reach"
    if fits:
        top = min(fits, key=lambda e: (-e.accuracy, e.energy_mj, e.id))
        return top.id, value(top), "forced-below-floor"

    def worst_ratio(e: ProfileEntry) -> float:
        ratio = 0.0
        for used, limit in (((e.latency_ms_p50 + cold) * scale, budgets.latency_ms),
                            (e.peak_memory_mb, budgets.memory_mb),
                            (e.storage_bytes, budgets.storage_bytes),
                            (e.energy_mj + overhead_mj, budgets.energy_mj)):
            if limit < math.inf:
                ratio = max(ratio, used / max(limit, 1e-12))
        if budgets.min_accuracy > 0:
            ratio = max(ratio, budgets.min_accuracy / max(e.accuracy, 1e-12))
        return ratio

    pick = min(within, key=lambda e: (worst_ratio(e), e.latency_ms_p50, e.id))
    return pick.id, value(pick), "nothing-fits"
