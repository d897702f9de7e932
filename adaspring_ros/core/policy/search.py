"""Runtime search: the variant of the profile table that best fits the current context.

Maximises the objective of core/policy/objective.py (README.md, "What the policy maximises")
over the candidates, the variants that meet every budget and stay within the accuracy floor::

    (latency_ms_p50 + cold_ms) x tail x contention <= budgets.latency_ms   (a predicted p95)
    peak_memory_mb <= budgets.memory_mb,  storage_bytes <= budgets.storage_bytes,
    energy_mj + overhead_mj <= budgets.energy_mj (a frame's energy),
    accuracy >= budgets.min_accuracy,
    accuracy >= the reference's - max_accuracy_loss_pt                (the floor)

When no variant is a candidate, one rule of :data:`RULES` decides, in this order: only the energy
budget is out of reach within the floor (the least energy there); only variants below the floor
fit (the most accurate of them: the budgets force the loss); nothing fits (the variant within the
floor closest to fitting). Every result names its rule. ``cold_ms`` is what a forward costs on
top of its table median after the idle gap between camera frames (the table's
``cold_start_ms``, or the live estimate of policy/estimator.py). Energy is not scaled by the
contention:
time-slicing stretches wall-clock latency, not the CPU time the energy model charges. Ties go to
the smallest config id. The table is turned into numpy arrays once, so a search is a handful of
vector operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from adaspring_ros.core.model.profile_table import ProfileEntry, ProfileTable
from adaspring_ros.core.policy.budgets import BudgetParams, Budgets, compute_budgets
from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.lambdas import LambdaParams, Lambdas, adapt_lambdas
from adaspring_ros.core.policy.objective import (
    ObjectiveParams,
    Prediction,
    objective,
    reference_row,
    saved_pct,
)

__all__ = ["RULES", "SearchResult", "RuntimeSearch", "table_tail_ratio"]

# The rules a search decides by, best first: the highest J among the candidates; the least energy
# within the floor when only the energy budget is out of reach; the most accurate of the variants
# below the floor when only they fit; the variant within the floor closest to fitting.
RULES = ("best", "energy-out-of-reach", "forced-below-floor", "nothing-fits")


@dataclass(frozen=True)
class SearchResult:
    """The chosen variant, its prediction, the rule of :data:`RULES` that chose it, and why."""

    entry: ProfileEntry
    prediction: Prediction
    n_feasible: int
    n_total: int
    reason: str
    budgets: Budgets
    lambdas: Lambdas
    contention: float
    tail: float = 1.0
    overhead_mj: float = 0.0
    rule: str = "best"
    cold_ms: float = 0.0

    @property
    def config_id(self) -> str:
        return self.entry.id

    @property
    def feasible(self) -> bool:
        return self.prediction.feasible


class RuntimeSearch:
    """Vectorised search over one ProfileTable (see the module docstring)."""

    def __init__(self, table: ProfileTable, tail_ratio: float | None = None,
                 objective: ObjectiveParams | None = None) -> None:
        """``tail_ratio`` (p95 / p50) defaults to the table's median, see table_tail_ratio."""
        if not len(table):
            raise ValueError("the profile table has no entries")
        self.table = table
        self.objective_params = objective or ObjectiveParams()
        # Rows sorted by id: argmax returns the first maximum, so ties go to the smallest id.
        self.entries: list[ProfileEntry] = sorted(table.entries, key=lambda e: e.id)
        self.ids: list[str] = [e.id for e in self.entries]
        self._row = {cid: i for i, cid in enumerate(self.ids)}

        def column(name: str) -> np.ndarray:
            return np.array([getattr(e, name) for e in self.entries], dtype=np.float64)

        self.accuracy = column("accuracy")
        self.latency_p50 = column("latency_ms_p50")
        self.latency_p95 = column("latency_ms_p95")
        self.memory = column("peak_memory_mb")
        self.storage = column("storage_bytes")
        self.energy = column("energy_mj")
        self.tail_ratio = table_tail_ratio(table) if tail_ratio is None else float(tail_ratio)
        # The cold-start term of the table's device (0 when not measured).
        self.cold_ms = float(table.cold_start_ms or 0.0)
        if not 1.0 <= self.tail_ratio < math.inf:
            raise ValueError(f"tail_ratio must be >= 1 and finite, got {self.tail_ratio}")
        self._by_speed = np.lexsort((np.arange(len(self.ids)), self.latency_p50))
        self._reference = reference_row(self.accuracy, self.energy)
        self._accuracy_pt = 100.0 * self.accuracy
        self._by_accuracy = np.lexsort((np.arange(len(self)), self.energy, -self.accuracy))

    def __len__(self) -> int:
        return len(self.ids)

    # -- lookups ------------------------------------------------------------------------------
    def row(self, config_id: str) -> int:
        try:
            return self._row[config_id]
        except KeyError:
            raise KeyError(f"config {config_id!r} is not in the profile table") from None

    def __contains__(self, config_id: object) -> bool:
        return config_id in self._row

    @property
    def fastest(self) -> ProfileEntry:
        """The variant with the lowest profiled median latency (ties: smallest id)."""
        return self.entries[int(self._by_speed[0])]

    @property
    def fastest_within_floor(self) -> ProfileEntry:
        """The fastest variant within the accuracy floor (ties: smallest id)."""
        within = self.floor_mask()
        return self.entries[int(next(r for r in self._by_speed if within[r]))]

    @property
    def reference(self) -> ProfileEntry:
        """The most accurate variant (ties: most energy, then smallest id): the energy
        reference and the anchor of the accuracy floor."""
        return self.entries[self._reference]

    @property
    def floor(self) -> float:
        """The accuracy floor (fraction): the reference's less ``max_accuracy_loss_pt``."""
        return float(self.accuracy[self._reference]
                     - self.objective_params.max_accuracy_loss_pt / 100.0)

    def floor_mask(self) -> np.ndarray:
        """Variants within ``max_accuracy_loss_pt`` of the reference (feasibility aside)."""
        floor = self._accuracy_pt[self._reference] - self.objective_params.max_accuracy_loss_pt
        return self._accuracy_pt >= floor - 1e-9

    def within_floor(self, config_id: str) -> bool:
        return bool(self.floor_mask()[self.row(config_id)])

    def saved_pct(self, overhead_mj: float = 0.0) -> np.ndarray:
        """% of the reference's frame energy each variant saves."""
        return saved_pct(self.energy, float(self.energy[self._reference]), overhead_mj)

    def objectives(self, lambdas: Lambdas, overhead_mj: float = 0.0,
                   anchor: float | None = None) -> np.ndarray:
        """J of every variant; ``anchor`` = accuracy (fraction) the loss is measured against
        (default: the reference's). The anchor shifts every J alike."""
        anchor_pt = 100.0 * (self.accuracy[self._reference] if anchor is None else anchor)
        return objective(lambdas, anchor_pt - self._accuracy_pt, self.saved_pct(overhead_mj),
                         self.objective_params)

    def latency_scale(self, contention: float = 1.0, tail: float | None = None) -> float:
        """Factor from a profiled median plus the cold-start term to the predicted p95:
        tail x contention."""
        tail = self.tail_ratio if tail is None else tail
        for name, value in (("contention", contention), ("tail", tail)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        return tail * contention

    def predict(self, config_id: str, budgets: Budgets, lambdas: Lambdas,
                contention: float = 1.0, tail: float | None = None,
                overhead_mj: float = 0.0, cold_ms: float | None = None) -> Prediction:
        """The prediction for one variant (e.g. the running one), with its budget violations;
        its objective is comparable with that of :meth:`search` under the same budgets.
        ``cold_ms`` None: the table's."""
        tail = self.tail_ratio if tail is None else tail
        scale = self.latency_scale(contention, tail)
        overhead_mj = _check_overhead(overhead_mj)
        cold_ms = self._cold(cold_ms)
        anchor = self._anchor(self.feasible_mask(budgets, scale, overhead_mj, cold_ms))
        return self._prediction(self.row(config_id), budgets, lambdas, scale, overhead_mj,
                                anchor, cold_ms, tail)

    def _cold(self, cold_ms: float | None) -> float:
        if cold_ms is None:
            return self.cold_ms
        if not (math.isfinite(cold_ms) and cold_ms >= 0):
            raise ValueError(f"cold_ms must be a finite number >= 0, got {cold_ms}")
        return float(cold_ms)

    def _anchor(self, feasible: np.ndarray) -> float:
        """The accuracy lost points are counted against: the most accurate feasible variant
        (the reference when nothing fits)."""
        if feasible.any():
            return float(self.accuracy[feasible].max())
        return float(self.accuracy[self._reference])

    def _prediction(self, i: int, budgets: Budgets, lambdas: Lambdas, scale: float,
                    overhead_mj: float, anchor: float, cold_ms: float,
                    tail: float) -> Prediction:
        latency = float((self.latency_p50[i] + cold_ms) * scale)
        energy = float(self.energy[i] + overhead_mj)
        checks = (
            ("latency", latency, budgets.latency_ms, "ms"),
            ("memory", float(self.memory[i]), budgets.memory_mb, "MB"),
            ("storage", float(self.storage[i]), budgets.storage_bytes, "B"),
            ("energy", energy, budgets.energy_mj, "mJ"),
        )
        violations = tuple(f"{name} {value:.3g} {unit} > {limit:.3g} {unit}"
                           for name, value, limit, unit in checks if value > limit)
        if self.accuracy[i] < budgets.min_accuracy:
            violations += (f"accuracy {self.accuracy[i]:.1%} < {budgets.min_accuracy:.1%}",)
        lost = 100.0 * anchor - float(self._accuracy_pt[i])
        saved = float(self.saved_pct(overhead_mj)[i])
        return Prediction(
            config_id=self.ids[i], accuracy=float(self.accuracy[i]), latency_ms=latency,
            latency_ms_p50=latency / tail,
            energy_mj=energy, peak_memory_mb=float(self.memory[i]),
            storage_bytes=int(self.storage[i]),
            objective=objective(lambdas, lost, saved, self.objective_params),
            violations=violations, lost_pt=lost, saved_pct=saved,
        )

    # -- the search ---------------------------------------------------------------------------
    def feasible_mask(self, budgets: Budgets, scale: float, overhead_mj: float = 0.0,
                      cold_ms: float | None = None) -> np.ndarray:
        """Variants meeting every budget; ``scale`` from :meth:`latency_scale`, ``cold_ms``
        None: the table's."""
        return (((self.latency_p50 + self._cold(cold_ms)) * scale <= budgets.latency_ms)
                & (self.memory <= budgets.memory_mb)
                & (self.storage <= budgets.storage_bytes)
                & (self.energy + overhead_mj <= budgets.energy_mj)
                & (self.accuracy >= budgets.min_accuracy))

    def search(self, budgets: Budgets, lambdas: Lambdas, contention: float = 1.0,
               tail: float | None = None, overhead_mj: float = 0.0,
               cold_ms: float | None = None) -> SearchResult:
        """The best variant under ``budgets``; ``contention`` = measured / predicted median
        latency without contention, ``tail`` = p95 / p50 (None: the table's), ``overhead_mj`` =
        measured energy of a frame besides the forward pass, ``cold_ms`` = the cold-start term
        (None: the table's)."""
        tail = self.tail_ratio if tail is None else tail
        scale = self.latency_scale(contention, tail)
        overhead_mj = _check_overhead(overhead_mj)
        cold_ms = self._cold(cold_ms)
        feasible = self.feasible_mask(budgets, scale, overhead_mj, cold_ms)
        within = self.floor_mask()
        n_feasible = int(np.count_nonzero(feasible))
        anchor = self._anchor(feasible)
        weights = f"λ1 {lambdas.lambda1:.2f}, λ2 {lambdas.lambda2:.2f}"
        loss = f"{self.objective_params.max_accuracy_loss_pt:g} pt"
        candidates = feasible & within
        if candidates.any():
            values = self.objectives(lambdas, overhead_mj, anchor)
            rule, i = "best", int(np.argmax(np.where(candidates, values, -np.inf)))
            why = (f"the highest J of {int(candidates.sum())} candidates ({n_feasible}/"
                   f"{len(self)} within budget, {weights})")
        elif (thrifty := self._least_energy(budgets, scale, overhead_mj, cold_ms,
                                            within)) is not None:
            rule, i = "energy-out-of-reach", thrifty
            why = (f"no variant meets the energy budget ({budgets.energy_mj:.3g} mJ/frame; the "
                   f"rest of a frame costs {overhead_mj:.3g} mJ) within {loss} of the best: the "
                   f"least energy among those that meet the other budgets ({weights})")
        elif n_feasible:
            rule = "forced-below-floor"
            i = int(next(r for r in self._by_accuracy if feasible[r]))
            why = (f"only variants more than {loss} below the best meet the budgets: the most "
                   f"accurate of those {n_feasible} ({weights})")
        else:
            rule, i = "nothing-fits", self._closest_to_fitting(budgets, scale, overhead_mj,
                                                               cold_ms, within)
            why = (f"no variant meets the budgets ({budgets.describe()}): the one within "
                   f"{loss} of the best closest to fitting")
        prediction = self._prediction(i, budgets, lambdas, scale, overhead_mj, anchor, cold_ms,
                                      tail)
        reason = f"{rule}: {why}: {prediction.describe()}"
        if prediction.violations:
            reason += f"; still violates {'; '.join(prediction.violations)}"
        return SearchResult(
            entry=self.entries[i], prediction=prediction, n_feasible=n_feasible,
            n_total=len(self), reason=reason, budgets=budgets, lambdas=lambdas,
            contention=contention, tail=tail, overhead_mj=overhead_mj, rule=rule,
            cold_ms=cold_ms,
        )

    def _least_energy(self, budgets: Budgets, scale: float, overhead_mj: float,
                      cold_ms: float, within: np.ndarray) -> int | None:
        """When only the energy budget is out of reach (the rest of a frame alone may cost more
        than it): the least-energy variant within the floor that meets the other budgets.
        Falling further (to the least-energy variant of the whole table) would trade several
        points for a few per cent of a frame; the floor is the user's bound on that."""
        others = self.feasible_mask(replace(budgets, energy_mj=math.inf), scale, overhead_mj,
                                    cold_ms)
        pool = others & within
        if not pool.any():
            return None
        rows = np.flatnonzero(pool)
        # least energy, then the most accurate, then the smallest id (rows are in id order)
        order = np.lexsort((rows, -self.accuracy[rows], self.energy[rows]))
        return int(rows[order[0]])

    def _closest_to_fitting(self, budgets: Budgets, scale: float, overhead_mj: float,
                            cold_ms: float, within: np.ndarray) -> int:
        """Within the floor: the smallest worst ratio metric / budget, then the fastest."""
        ratios = np.zeros(len(self))
        for values, limit in (((self.latency_p50 + cold_ms) * scale, budgets.latency_ms),
                              (self.memory, budgets.memory_mb),
                              (self.storage, budgets.storage_bytes),
                              (self.energy + overhead_mj, budgets.energy_mj)):
            if limit < math.inf:
                ratios = np.maximum(ratios, values / max(limit, 1e-12))
        if budgets.min_accuracy > 0:
            ratios = np.maximum(ratios, budgets.min_accuracy / np.maximum(self.accuracy, 1e-12))
        ratios = np.where(within, ratios, np.inf)
        return int(np.lexsort((np.arange(len(self)), self.latency_p50, ratios))[0])

    def choose(self, budgets: Budgets, lambdas: Lambdas, headroom: float,
               contention: float = 1.0, tail: float | None = None,
               overhead_mj: float = 0.0, cold_ms: float | None = None) -> SearchResult:
        """The variant a fresh start of the evolution policy chooses: the search with
        ``headroom`` (a fraction) less latency and energy budget, the margin a new choice must
        keep (so "only variants below the floor fit" is judged with it too); when nothing fits
        those, the plain budgets unless they leave only a worse rule."""
        args = (lambdas, contention, tail, overhead_mj, cold_ms)
        strict = replace(budgets, latency_ms=budgets.latency_ms * (1 - headroom),
                         energy_mj=budgets.energy_mj * (1 - headroom))
        best = self.search(strict, *args)
        if best.feasible or headroom <= 0:
            return best
        plain = self.search(budgets, *args)
        return plain if RULES.index(plain.rule) <= RULES.index(best.rule) else best

    def decide(self, context: Context, *, budget_params: BudgetParams | None = None,
               lambda_params: LambdaParams | None = None, lambdas: Lambdas | None = None,
               contention: float = 1.0, tail: float | None = None,
               latency_drift: float = 1.0, mission_remaining_s: float | None = None,
               non_model_ms: float | None = None, overhead_mj: float = 0.0,
               cold_ms: float | None = None) -> SearchResult:
        """Budgets and λ from ``context`` (or the ``lambdas`` given), then :meth:`search`."""
        budgets = compute_budgets(context, budget_params, latency_drift=latency_drift,
                                  mission_remaining_s=mission_remaining_s,
                                  non_model_ms=non_model_ms)
        lambdas = lambdas or adapt_lambdas(context, lambda_params)
        return self.search(budgets, lambdas, contention, tail, overhead_mj, cold_ms)


def _check_overhead(overhead_mj: float) -> float:
    if not (math.isfinite(overhead_mj) and overhead_mj >= 0):
        raise ValueError(f"overhead_mj must be a finite number >= 0, got {overhead_mj}")
    return float(overhead_mj)


def table_tail_ratio(table: ProfileTable) -> float:
    """The median p95 / p50 latency ratio over the table's variants (at least 1)."""
    ratios = [e.latency_ms_p95 / e.latency_ms_p50 for e in table.entries if e.latency_ms_p50 > 0]
    return max(float(np.median(ratios)), 1.0) if ratios else 1.0
