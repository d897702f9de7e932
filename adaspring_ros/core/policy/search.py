"""Runtime search: the variant of the profile table that best fits the current context.

Objective, in accuracy points (maximised over the *candidates*, see below)::

    J = λ2 · saved_pct / energy_pct_per_point  -  λ1 · lost_pt
    lost_pt   = 100 x (accuracy of the most accurate feasible variant - accuracy)
    saved_pct = 100 x (1 - frame energy / frame energy of the reference)
    frame energy = energy_mj (the variant's forward, from the table) + overhead_mj (the rest of
                   a frame: decoding, preprocessing, transport, measured live; 0 when unknown)
    reference = the most accurate variant of the whole table (the full model)

Both terms read as what they are: "this variant loses 0.9 points against the best the budgets
allow and saves 49 % of the energy per frame the full model spends". ``energy_pct_per_point``
(default 10) is the exchange rate at λ1 = λ2: one accuracy point is worth 10 % of the frame
energy. At λ1 = 0.8, λ2 = 0.2 one point is traded only for >= 0.8 / 0.2 x 10 = 40 % saved.

Candidates are the variants that meet every budget (feasible) and lose at most
``max_accuracy_loss_pt`` points against the reference: the most accuracy the policy may ever
trade away for energy. When the budgets leave no such variant, accuracy is what is scarce and the
policy takes the most accurate feasible variant (ties: least frame energy).

Why this shape (each is a property test in test/test_core_search.py):

* Neither term depends on the worst variants of the table: the reference is the most accurate
  variant and the accuracy anchor the most accurate feasible one, so adding junk (low accuracy,
  any speed) never changes the choice. The previous min-max normalisation over the whole table
  made 5 points between the best and a small variant worth ~0.08 when 39 %-accurate junk was
  in the table, and the policy walked to the small end for almost every λ.
* λ2 = 0 (external power) gives the most accurate feasible variant; λ1 = 0 the least frame energy
  among the candidates.
* J is linear in (accuracy, energy) with weights that only move with λ, and the candidate set only
  shrinks as budgets tighten, so lowering the battery (λ2 up, energy budget down) never picks a
  variant with more energy per frame, and tightening the latency budget never picks a slower one.
  Anchoring the loss limit at the fixed reference rather than at the best feasible variant is
  what keeps the last property: a moving anchor would let a tight budget admit a slower but
  cheaper variant.
* The loss term is against the best *feasible* variant only as a reading aid: for the choice it
  is a constant shift, so the result is the same as measuring it against the reference.

Constraints, with the latency prediction corrected for the measured contention::

    latency_ms_p50 x tail x contention <= budgets.latency_ms
    peak_memory_mb <= budgets.memory_mb,  storage_bytes <= budgets.storage_bytes,
    energy_mj + overhead_mj <= budgets.energy_mj (a frame's energy),
    accuracy >= budgets.min_accuracy

The predicted latency is a p95: the variant's profiled median times one tail ratio (p95 / p50)
for the device, times the contention (measured / profiled median of the running variant). The
tail ratio is the table's median p95/p50 to begin with (``table_tail_ratio``) and the evolution
policy replaces it by the live one. Why not each variant's own p95: on a shared CPU a profiled
p95 records mostly the interference during that variant's measurement, while the medians are
stable (docs/benchmarks.md, design measurements); the tail of batch-1 inference is a property of
the device and its load, so it is measured once, live.

Energy is not scaled by the contention: time-slicing stretches wall-clock latency, not the CPU time
the energy model charges. Ties go to the smallest config id. When no variant fits, the one closest
to fitting wins (smallest worst ratio metric/budget; then fastest, then id), and the result says
so. The table is turned into numpy arrays once, so a search is a handful of vector operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from adaspring_ros.core.model.config import DEFAULT_SPACE
from adaspring_ros.core.model.profile_table import ProfileEntry, ProfileTable
from adaspring_ros.core.policy.budgets import BudgetParams, Budgets, compute_budgets
from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.lambdas import LambdaParams, Lambdas, adapt_lambdas
from adaspring_ros.core.validation import require_number, setting

__all__ = [
    "ObjectiveParams",
    "Prediction",
    "SearchResult",
    "RuntimeSearch",
    "exhaustive_search",
    "table_tail_ratio",
    "reference_row",
    "default_table",
]

# Size of the synthetic stand-in when the shipped table is missing: the order of what the
# profiler measures.
SYNTHETIC_FALLBACK_SIZE = 500


@dataclass(frozen=True)
class ObjectiveParams:
    """How accuracy is traded for energy; both fields can be ROS parameters.

    max_accuracy_loss_pt:   the most accuracy (points, against the most accurate variant of the
                            table) the policy may trade away for energy; variants further below
                            are not candidates unless the budgets leave nothing better.
    energy_pct_per_point:   % of the frame energy worth one accuracy point at λ1 = λ2.
    """

    max_accuracy_loss_pt: float = setting(
        3.0, "most accuracy points the policy may trade for energy against the table's most "
        "accurate variant", range=(0.0, 100.0))
    energy_pct_per_point: float = setting(
        10.0, "% of the frame energy worth one accuracy point at λ1 = λ2", range=(0.01, 1e6))

    def __post_init__(self) -> None:
        require_number("max_accuracy_loss_pt", self.max_accuracy_loss_pt, 0.0, 100.0)
        require_number("energy_pct_per_point", self.energy_pct_per_point, 0.0, 1e6,
                       low_open=True)


@dataclass(frozen=True)
class Prediction:
    """What the table predicts for one variant under the current contention and budgets.

    ``energy_mj`` is the energy of a whole frame (forward + measured overhead); ``lost_pt`` the
    points lost against the most accurate feasible variant (against the reference when nothing
    fits) and ``saved_pct`` the % of the reference's frame energy saved.
    """

    config_id: str
    accuracy: float
    latency_ms: float
    energy_mj: float
    peak_memory_mb: float
    storage_bytes: int
    objective: float
    violations: tuple[str, ...] = ()
    lost_pt: float = 0.0
    saved_pct: float = 0.0

    @property
    def feasible(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        # signed: a fallback that breaks the energy budget can be more accurate than every
        # variant that meets it (lost_pt < 0), which must not print as "--0.70 pt"
        return (f"acc {self.accuracy:.1%} ({-self.lost_pt:+.2f} pt), latency "
                f"{self.latency_ms:.2f} ms, energy {self.energy_mj:.3g} mJ/frame "
                f"({self.saved_pct:+.0f} % saved), mem {self.peak_memory_mb:.1f} MB, "
                f"J {self.objective:+.3f}")


@dataclass(frozen=True)
class SearchResult:
    """The chosen variant, its prediction, and why."""

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

    @property
    def config_id(self) -> str:
        return self.entry.id

    @property
    def feasible(self) -> bool:
        return self.prediction.feasible


class RuntimeSearch:
    """Vectorised search over one ProfileTable (see the module docstring for the objective)."""

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
        if not 1.0 <= self.tail_ratio < math.inf:
            raise ValueError(f"tail_ratio must be >= 1 and finite, got {self.tail_ratio}")
        self._fastest = int(np.lexsort((np.arange(len(self.ids)), self.latency_p50))[0])
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
        return self.entries[self._fastest]

    @property
    def reference(self) -> ProfileEntry:
        """The most accurate variant (ties: most energy, then smallest id): the energy
        reference and the anchor of ``max_accuracy_loss_pt``."""
        return self.entries[self._reference]

    def saved_pct(self, overhead_mj: float = 0.0) -> np.ndarray:
        """% of the reference's frame energy each variant saves."""
        reference = self.energy[self._reference] + overhead_mj
        if reference <= 0:
            return np.zeros(len(self))
        return 100.0 * (1.0 - (self.energy + overhead_mj) / reference)

    def objectives(self, lambdas: Lambdas, overhead_mj: float = 0.0,
                   anchor: float | None = None) -> np.ndarray:
        """J of every variant; ``anchor`` = accuracy (fraction) the loss is measured against
        (default: the reference's). The anchor shifts every J alike."""
        anchor_pt = 100.0 * (self.accuracy[self._reference] if anchor is None else anchor)
        lost = anchor_pt - self._accuracy_pt
        rate = self.objective_params.energy_pct_per_point
        return lambdas.lambda2 * self.saved_pct(overhead_mj) / rate - lambdas.lambda1 * lost

    def candidate_mask(self) -> np.ndarray:
        """Variants within ``max_accuracy_loss_pt`` of the reference (feasibility aside)."""
        floor = self._accuracy_pt[self._reference] - self.objective_params.max_accuracy_loss_pt
        return self._accuracy_pt >= floor - 1e-9

    def latency_scale(self, contention: float = 1.0, tail: float | None = None) -> float:
        """Factor from a profiled median to the predicted p95: tail x contention."""
        tail = self.tail_ratio if tail is None else tail
        for name, value in (("contention", contention), ("tail", tail)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        return tail * contention

    def predict(self, config_id: str, budgets: Budgets, lambdas: Lambdas,
                contention: float = 1.0, tail: float | None = None,
                overhead_mj: float = 0.0) -> Prediction:
        """The prediction for one variant (e.g. the running one), with its budget violations;
        its objective is comparable with that of :meth:`search` under the same budgets."""
        scale = self.latency_scale(contention, tail)
        overhead_mj = _check_overhead(overhead_mj)
        feasible = self.feasible_mask(budgets, scale, overhead_mj)
        anchor = self._anchor(feasible)
        return self._prediction(self.row(config_id), budgets, lambdas, scale, overhead_mj,
                                anchor)

    def _anchor(self, feasible: np.ndarray) -> float:
        """The accuracy lost points are counted against: the most accurate feasible variant
        (the reference when nothing fits)."""
        if feasible.any():
            return float(self.accuracy[feasible].max())
        return float(self.accuracy[self._reference])

    def _prediction(self, i: int, budgets: Budgets, lambdas: Lambdas, scale: float,
                    overhead_mj: float, anchor: float) -> Prediction:
        latency = float(self.latency_p50[i] * scale)
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
        rate = self.objective_params.energy_pct_per_point
        return Prediction(
            config_id=self.ids[i], accuracy=float(self.accuracy[i]), latency_ms=latency,
            energy_mj=energy, peak_memory_mb=float(self.memory[i]),
            storage_bytes=int(self.storage[i]),
            objective=lambdas.lambda2 * saved / rate - lambdas.lambda1 * lost,
            violations=violations, lost_pt=lost, saved_pct=saved,
        )

    # -- the search ---------------------------------------------------------------------------
    def feasible_mask(self, budgets: Budgets, scale: float,
                      overhead_mj: float = 0.0) -> np.ndarray:
        """Variants meeting every budget; ``scale`` from :meth:`latency_scale`."""
        return ((self.latency_p50 * scale <= budgets.latency_ms)
                & (self.memory <= budgets.memory_mb)
                & (self.storage <= budgets.storage_bytes)
                & (self.energy + overhead_mj <= budgets.energy_mj)
                & (self.accuracy >= budgets.min_accuracy))

    def search(self, budgets: Budgets, lambdas: Lambdas, contention: float = 1.0,
               tail: float | None = None, overhead_mj: float = 0.0) -> SearchResult:
        """The best variant under ``budgets``; ``contention`` = measured / profiled median
        latency, ``tail`` = p95 / p50 (None: the table's), ``overhead_mj`` = measured energy of
        a frame besides the forward pass."""
        tail = self.tail_ratio if tail is None else tail
        scale = self.latency_scale(contention, tail)
        overhead_mj = _check_overhead(overhead_mj)
        feasible = self.feasible_mask(budgets, scale, overhead_mj)
        n_feasible = int(np.count_nonzero(feasible))
        anchor = self._anchor(feasible)
        weights = f"λ1 {lambdas.lambda1:.2f}, λ2 {lambdas.lambda2:.2f}"
        candidates = feasible & self.candidate_mask()
        if candidates.any():
            values = self.objectives(lambdas, overhead_mj, anchor)
            i = int(np.argmax(np.where(candidates, values, -np.inf)))
            prediction = self._prediction(i, budgets, lambdas, scale, overhead_mj, anchor)
            reason = (f"best of {int(candidates.sum())} candidates ({n_feasible}/{len(self)} "
                      f"within budget, {weights}): {prediction.describe()}")
        elif (thrifty := self._least_energy_candidate(budgets, scale, overhead_mj)) is not None:
            i = thrifty
            prediction = self._prediction(i, budgets, lambdas, scale, overhead_mj, anchor)
            reason = (f"no variant meets the energy budget ({budgets.energy_mj:.3g} mJ/frame; the "
                      f"rest of a frame costs {overhead_mj:.3g} mJ): the least energy within "
                      f"{self.objective_params.max_accuracy_loss_pt:g} pt of the reference that "
                      f"meets the other budgets ({weights}): {prediction.describe()}")
        elif n_feasible:
            i = int(next(r for r in self._by_accuracy if feasible[r]))
            prediction = self._prediction(i, budgets, lambdas, scale, overhead_mj, anchor)
            reason = (f"no variant within {self.objective_params.max_accuracy_loss_pt:g} pt of "
                      f"the reference meets the budgets: the most accurate of {n_feasible} that "
                      f"do ({weights}): {prediction.describe()}")
        else:
            i = self._closest_to_fitting(budgets, scale, overhead_mj)
            prediction = self._prediction(i, budgets, lambdas, scale, overhead_mj, anchor)
            reason = (f"no variant meets the budgets ({budgets.describe()}); fallback to the one "
                      f"closest to fitting: {prediction.describe()}; still violates "
                      f"{'; '.join(prediction.violations)}")
        return SearchResult(
            entry=self.entries[i], prediction=prediction, n_feasible=n_feasible,
            n_total=len(self), reason=reason, budgets=budgets, lambdas=lambdas,
            contention=contention, tail=tail, overhead_mj=overhead_mj,
        )

    def _least_energy_candidate(self, budgets: Budgets, scale: float, overhead_mj: float
                                ) -> int | None:
        """When only the energy budget is out of reach (the rest of a frame alone may cost more
        than it): the least-energy variant within the loss limit that meets the other budgets.
        Falling further (to the least-energy variant of the whole table) would trade several
        points for a few per cent of a frame; the loss limit is the user's bound on that."""
        others = self.feasible_mask(replace(budgets, energy_mj=math.inf), scale, overhead_mj)
        pool = others & self.candidate_mask()
        if not pool.any():
            return None
        rows = np.flatnonzero(pool)
        # least energy, then the most accurate, then the smallest id (rows are in id order)
        order = np.lexsort((rows, -self.accuracy[rows], self.energy[rows]))
        return int(rows[order[0]])

    def _closest_to_fitting(self, budgets: Budgets, scale: float, overhead_mj: float) -> int:
        ratios = np.zeros(len(self))
        for values, limit in ((self.latency_p50 * scale, budgets.latency_ms),
                              (self.memory, budgets.memory_mb),
                              (self.storage, budgets.storage_bytes),
                              (self.energy + overhead_mj, budgets.energy_mj)):
            if limit < math.inf:
                ratios = np.maximum(ratios, values / max(limit, 1e-12))
        if budgets.min_accuracy > 0:
            ratios = np.maximum(ratios, budgets.min_accuracy / np.maximum(self.accuracy, 1e-12))
        return int(np.lexsort((np.arange(len(self)), self.latency_p50, ratios))[0])

    def decide(self, context: Context, *, budget_params: BudgetParams | None = None,
               lambda_params: LambdaParams | None = None, lambdas: Lambdas | None = None,
               contention: float = 1.0, tail: float | None = None,
               latency_drift: float = 1.0, mission_remaining_s: float | None = None,
               non_model_ms: float | None = None, overhead_mj: float = 0.0) -> SearchResult:
        """Budgets and λ from ``context`` (or the ``lambdas`` given), then :meth:`search`."""
        budgets = compute_budgets(context, budget_params, latency_drift=latency_drift,
                                  mission_remaining_s=mission_remaining_s,
                                  non_model_ms=non_model_ms)
        lambdas = lambdas or adapt_lambdas(context, lambda_params)
        return self.search(budgets, lambdas, contention, tail, overhead_mj)


def reference_row(accuracy: Sequence[float], energy: Sequence[float]) -> int:
    """Row of the most accurate variant; ties: the most energy, then the first row."""
    acc, eng = np.asarray(accuracy, dtype=float), np.asarray(energy, dtype=float)
    return int(np.lexsort((np.arange(len(acc)), -eng, -acc))[0])


def _check_overhead(overhead_mj: float) -> float:
    if not (math.isfinite(overhead_mj) and overhead_mj >= 0):
        raise ValueError(f"overhead_mj must be a finite number >= 0, got {overhead_mj}")
    return float(overhead_mj)


def table_tail_ratio(table: ProfileTable) -> float:
    """The median p95 / p50 latency ratio over the table's variants (at least 1)."""
    ratios = [e.latency_ms_p95 / e.latency_ms_p50 for e in table.entries if e.latency_ms_p50 > 0]
    return max(float(np.median(ratios)), 1.0) if ratios else 1.0


def exhaustive_search(table: ProfileTable, budgets: Budgets, lambdas: Lambdas,
                      contention: float = 1.0, tail: float | None = None,
                      objective: ObjectiveParams | None = None,
                      overhead_mj: float = 0.0) -> tuple[str | None, float]:
    """Reference implementation, one entry at a time in plain Python: (best id, objective), or
    (None, -inf) when nothing fits. Tests and the benchmark check RuntimeSearch against it.
    When no candidate is within the loss limit, the objective of the most accurate feasible
    variant is returned with it; when only the energy budget keeps every variant within the
    loss limit out, the least-energy one of them (which then misses the energy budget)."""
    params = objective or ObjectiveParams()
    tail = table_tail_ratio(table) if tail is None else tail
    entries = sorted(table.entries, key=lambda e: e.id)
    ref = entries[reference_row([e.accuracy for e in entries], [e.energy_mj for e in entries])]
    fits = [e for e in entries
            if e.latency_ms_p50 * tail * contention <= budgets.latency_ms
            and e.peak_memory_mb <= budgets.memory_mb
            and e.storage_bytes <= budgets.storage_bytes
            and e.energy_mj + overhead_mj <= budgets.energy_mj
            and e.accuracy >= budgets.min_accuracy]
    floor = 100.0 * ref.accuracy - params.max_accuracy_loss_pt - 1e-9
    anchor = max(e.accuracy for e in fits) if fits else ref.accuracy

    def value(e: ProfileEntry) -> float:
        ref_energy = ref.energy_mj + overhead_mj
        saved = 100.0 * (1.0 - (e.energy_mj + overhead_mj) / ref_energy) if ref_energy > 0 \
            else 0.0
        return (lambdas.lambda2 * saved / params.energy_pct_per_point
                - lambdas.lambda1 * (100.0 * anchor - 100.0 * e.accuracy))

    best: tuple[float, str] | None = None
    for e in fits:
        if 100.0 * e.accuracy < floor:
            continue
        v = value(e)
        if best is None or v > best[0]:  # entries in id order: ties keep the smallest id
            best = (v, e.id)
    if best is None:
        # Only the energy budget out of reach within the loss limit: the least energy there.
        thrifty = [e for e in entries
                   if e.latency_ms_p50 * tail * contention <= budgets.latency_ms
                   and e.peak_memory_mb <= budgets.memory_mb
                   and e.storage_bytes <= budgets.storage_bytes
                   and e.accuracy >= budgets.min_accuracy and 100.0 * e.accuracy >= floor]
        if thrifty:
            pick = min(thrifty, key=lambda e: (e.energy_mj, -e.accuracy, e.id))
            return pick.id, value(pick)
    if not fits:
        return None, -math.inf
    if best is None:  # nothing within the loss limit fits: the most accurate that does
        top = min(fits, key=lambda e: (-e.accuracy, e.energy_mj, e.id))
        return top.id, value(top)
    return best[1], best[0]


def default_table(path: str | Path | None = None,
                  synthetic_size: int = SYNTHETIC_FALLBACK_SIZE,
                  engine: str = "onnxruntime") -> tuple[ProfileTable, str]:
    """The profile table at ``path`` (default: the shipped table of ``engine``) and a note
    saying where it came from; a synthetic table, with a note that says so, when the default is
    missing. An explicit ``path`` that cannot be read raises ProfileError."""
    if path is not None:
        return ProfileTable.load(path), f"profile table {path}"
    from adaspring_ros.core.paths import default_profile_table

    try:
        shipped = default_profile_table(engine)
    except FileNotFoundError:
        shipped = None
    if shipped is not None and shipped.exists():
        return ProfileTable.load(shipped), f"shipped profile table {shipped}"
    from tools.synthetic_tables import synthetic_table, width_only_configs

    # The width-only family is in, as a profiler would measure the Slimmable-style baseline.
    table = synthetic_table(synthetic_size, seed=0, include=width_only_configs(DEFAULT_SPACE))
    return (table,
            f"NOTE: no shipped profile table ({shipped or 'models/ not found'}); using a "
            f"SYNTHETIC table of {synthetic_size} variants (made-up numbers)")
