"""Runtime search: the variant of the profile table that best fits the current context.

Objective (maximised over the variants that meet every budget)::

    J = λ1 · acc_norm + λ2 · eff_norm
    acc_norm = (accuracy - min accuracy) / (max accuracy - min accuracy)
    eff_norm = (E_max - E) / (E_max - E_min),   E = energy_mj per inference

Both terms are min-max normalised over the WHOLE table (not over the feasible set), so J of a
variant does not depend on the budgets and objectives of two searches can be compared (the
evolution policy's hysteresis needs that). Energy efficiency is the energy saved per frame,
linear in millijoules, because the battery pays in joules: going from 8 to 4 mJ is worth more
than going from 1 to 0.5 mJ (a log or 1/E scale would give the tiniest variants most of the
credit and, on the shipped table, trade 12 points of accuracy for a fraction of a millijoule).
A range of zero gives the term 0 for every variant.

Constraints, with the latency prediction corrected for the measured contention::

    latency_ms_p50 x tail x contention <= budgets.latency_ms
    peak_memory_mb <= budgets.memory_mb,  storage_bytes <= budgets.storage_bytes,
    energy_mj <= budgets.energy_mj,  accuracy >= budgets.min_accuracy

The predicted latency is a p95: the variant's profiled median times one tail ratio (p95 / p50)
for the device, times the contention (measured / profiled median of the running variant). The
tail ratio is the table's median p95/p50 to begin with (``table_tail_ratio``) and the evolution
policy replaces it by the live one. Why not each variant's own p95: on a shared CPU a profiled
p95 records mostly the interference during that variant's measurement (ratios from 1.2 to 35 in
one table), while the medians are stable; the tail of batch-1 inference is a property of the
device and its load, so it is measured once, live.

Energy is not scaled by the contention: time-slicing stretches wall-clock latency, not the CPU time
the energy model charges. Ties go to the smallest config id. When no variant fits, the one closest
to fitting wins (smallest worst ratio metric/budget; then fastest, then id), and the result says
so. The table is turned into numpy arrays once, so a search is a handful of vector operations.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import DEFAULT_SPACE
from .context import (
    BudgetParams,
    Budgets,
    Context,
    LambdaParams,
    Lambdas,
    ScenarioError,
    ScenarioTrace,
    adapt_lambdas,
    compute_budgets,
)
from .profile_table import ProfileEntry, ProfileError, ProfileTable

__all__ = [
    "Prediction",
    "SearchResult",
    "RuntimeSearch",
    "exhaustive_search",
    "table_tail_ratio",
    "default_table",
    "cli_main",
]

# Size of the synthetic stand-in when the shipped table is missing: the order of what the
# profiler measures.
SYNTHETIC_FALLBACK_SIZE = 500


@dataclass(frozen=True)
class Prediction:
    """What the table predicts for one variant under the current contention and budgets."""

    config_id: str
    accuracy: float
    latency_ms: float
    energy_mj: float
    peak_memory_mb: float
    storage_bytes: int
    objective: float
    violations: tuple[str, ...] = ()

    @property
    def feasible(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        return (f"acc {self.accuracy:.1%}, latency {self.latency_ms:.2f} ms, "
                f"energy {self.energy_mj:.3g} mJ, mem {self.peak_memory_mb:.1f} MB, "
                f"J {self.objective:.3f}")


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

    @property
    def config_id(self) -> str:
        return self.entry.id

    @property
    def feasible(self) -> bool:
        return self.prediction.feasible


class RuntimeSearch:
    """Vectorised search over one ProfileTable (see the module docstring for the objective)."""

    def __init__(self, table: ProfileTable, tail_ratio: float | None = None) -> None:
        """``tail_ratio`` (p95 / p50) defaults to the table's median, see table_tail_ratio."""
        if not len(table):
            raise ValueError("the profile table has no entries")
        self.table = table
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
        self.acc_norm = _minmax(self.accuracy)
        self.eff_norm = _minmax(-self.energy)
        self.tail_ratio = table_tail_ratio(table) if tail_ratio is None else float(tail_ratio)
        if not 1.0 <= self.tail_ratio < math.inf:
            raise ValueError(f"tail_ratio must be >= 1 and finite, got {self.tail_ratio}")
        self._fastest = int(np.lexsort((np.arange(len(self.ids)), self.latency_p50))[0])

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

    def objectives(self, lambdas: Lambdas) -> np.ndarray:
        return lambdas.lambda1 * self.acc_norm + lambdas.lambda2 * self.eff_norm

    def latency_scale(self, contention: float = 1.0, tail: float | None = None) -> float:
        """Factor from a profiled median to the predicted p95: tail x contention."""
        tail = self.tail_ratio if tail is None else tail
        for name, value in (("contention", contention), ("tail", tail)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        return tail * contention

    def predict(self, config_id: str, budgets: Budgets, lambdas: Lambdas,
                contention: float = 1.0, tail: float | None = None) -> Prediction:
        """The prediction for one variant (e.g. the running one), with its budget violations."""
        return self._prediction(self.row(config_id), budgets, lambdas,
                                self.latency_scale(contention, tail))

    def _prediction(self, i: int, budgets: Budgets, lambdas: Lambdas,
                    scale: float) -> Prediction:
        latency = float(self.latency_p50[i] * scale)
        checks = (
            ("latency", latency, budgets.latency_ms, "ms"),
            ("memory", float(self.memory[i]), budgets.memory_mb, "MB"),
            ("storage", float(self.storage[i]), budgets.storage_bytes, "B"),
            ("energy", float(self.energy[i]), budgets.energy_mj, "mJ"),
        )
        violations = tuple(f"{name} {value:.3g} {unit} > {limit:.3g} {unit}"
                           for name, value, limit, unit in checks if value > limit)
        if self.accuracy[i] < budgets.min_accuracy:
            violations += (f"accuracy {self.accuracy[i]:.1%} < {budgets.min_accuracy:.1%}",)
        return Prediction(
            config_id=self.ids[i], accuracy=float(self.accuracy[i]), latency_ms=latency,
            energy_mj=float(self.energy[i]), peak_memory_mb=float(self.memory[i]),
            storage_bytes=int(self.storage[i]),
            objective=float(lambdas.lambda1 * self.acc_norm[i]
                            + lambdas.lambda2 * self.eff_norm[i]),
            violations=violations,
        )

    # -- the search ---------------------------------------------------------------------------
    def feasible_mask(self, budgets: Budgets, scale: float) -> np.ndarray:
        """Variants meeting every budget; ``scale`` from :meth:`latency_scale`."""
        return ((self.latency_p50 * scale <= budgets.latency_ms)
                & (self.memory <= budgets.memory_mb)
                & (self.storage <= budgets.storage_bytes)
                & (self.energy <= budgets.energy_mj)
                & (self.accuracy >= budgets.min_accuracy))

    def search(self, budgets: Budgets, lambdas: Lambdas, contention: float = 1.0,
               tail: float | None = None) -> SearchResult:
        """The best variant under ``budgets``; ``contention`` = measured / profiled median
        latency, ``tail`` = p95 / p50 (None: the table's)."""
        tail = self.tail_ratio if tail is None else tail
        scale = self.latency_scale(contention, tail)
        feasible = self.feasible_mask(budgets, scale)
        n_feasible = int(np.count_nonzero(feasible))
        if n_feasible:
            i = int(np.argmax(np.where(feasible, self.objectives(lambdas), -np.inf)))
            prediction = self._prediction(i, budgets, lambdas, scale)
            reason = (f"best of {n_feasible}/{len(self)} variants within budget "
                      f"(λ1 {lambdas.lambda1:.2f}, λ2 {lambdas.lambda2:.2f}): "
                      f"{prediction.describe()}")
        else:
            i = self._closest_to_fitting(budgets, scale)
            prediction = self._prediction(i, budgets, lambdas, scale)
            reason = (f"no variant meets the budgets ({budgets.describe()}); fallback to the one "
                      f"closest to fitting: {prediction.describe()}; still violates "
                      f"{'; '.join(prediction.violations)}")
        return SearchResult(
            entry=self.entries[i], prediction=prediction, n_feasible=n_feasible,
            n_total=len(self), reason=reason, budgets=budgets, lambdas=lambdas,
            contention=contention, tail=tail,
        )

    def _closest_to_fitting(self, budgets: Budgets, scale: float) -> int:
        ratios = np.zeros(len(self))
        for values, limit in ((self.latency_p50 * scale, budgets.latency_ms),
                              (self.memory, budgets.memory_mb),
                              (self.storage, budgets.storage_bytes),
                              (self.energy, budgets.energy_mj)):
            if limit < math.inf:
                ratios = np.maximum(ratios, values / max(limit, 1e-12))
        if budgets.min_accuracy > 0:
            ratios = np.maximum(ratios, budgets.min_accuracy / np.maximum(self.accuracy, 1e-12))
        return int(np.lexsort((np.arange(len(self)), self.latency_p50, ratios))[0])

    def decide(self, context: Context, *, budget_params: BudgetParams | None = None,
               lambda_params: LambdaParams | None = None, lambdas: Lambdas | None = None,
               contention: float = 1.0, tail: float | None = None,
               latency_drift: float = 1.0,
               mission_remaining_s: float | None = None) -> SearchResult:
        """Budgets and λ from ``context`` (or the ``lambdas`` given), then :meth:`search`."""
        budgets = compute_budgets(context, budget_params, latency_drift=latency_drift,
                                  mission_remaining_s=mission_remaining_s)
        lambdas = lambdas or adapt_lambdas(context, lambda_params)
        return self.search(budgets, lambdas, contention, tail)


def table_tail_ratio(table: ProfileTable) -> float:
    """The median p95 / p50 latency ratio over the table's variants (at least 1)."""
    ratios = [e.latency_ms_p95 / e.latency_ms_p50 for e in table.entries if e.latency_ms_p50 > 0]
    return max(float(np.median(ratios)), 1.0) if ratios else 1.0


def _minmax(values: np.ndarray) -> np.ndarray:
    span = float(values.max() - values.min())
    if span <= 0:
        return np.zeros_like(values)
    return (values - values.min()) / span


def exhaustive_search(table: ProfileTable, budgets: Budgets, lambdas: Lambdas,
                      contention: float = 1.0,
                      tail: float | None = None) -> tuple[str | None, float]:
    """Reference implementation, one entry at a time in plain Python: (best id, objective), or
    (None, -inf) when nothing fits. Tests and the benchmark check RuntimeSearch against it."""
    tail = table_tail_ratio(table) if tail is None else tail
    acc = [e.accuracy for e in table.entries]
    energy = [e.energy_mj for e in table.entries]
    acc_lo, acc_span = min(acc), max(acc) - min(acc)
    e_hi, e_span = max(energy), max(energy) - min(energy)
    best: tuple[float, str] | None = None
    for entry, a, e in zip(table.entries, acc, energy, strict=True):
        fits = (entry.latency_ms_p50 * tail * contention <= budgets.latency_ms
                and entry.peak_memory_mb <= budgets.memory_mb
                and entry.storage_bytes <= budgets.storage_bytes
                and entry.energy_mj <= budgets.energy_mj
                and entry.accuracy >= budgets.min_accuracy)
        if not fits:
            continue
        acc_n = (a - acc_lo) / acc_span if acc_span > 0 else 0.0
        eff_n = (e_hi - e) / e_span if e_span > 0 else 0.0
        value = lambdas.lambda1 * acc_n + lambdas.lambda2 * eff_n
        if best is None or value > best[0] or (value == best[0] and entry.id < best[1]):
            best = (value, entry.id)
    return (None, -math.inf) if best is None else (best[1], best[0])


def default_table(path: str | Path | None = None,
                  synthetic_size: int = SYNTHETIC_FALLBACK_SIZE) -> tuple[ProfileTable, str]:
    """The profile table at ``path`` (default: the shipped models/profile_table.json) and a note
    saying where it came from; a synthetic table, with a note that says so, when the default is
    missing. An explicit ``path`` that cannot be read raises ProfileError."""
    if path is not None:
        return ProfileTable.load(path), f"profile table {path}"
    from ..paths import default_profile_table

    try:
        shipped = default_profile_table()
    except FileNotFoundError:
        shipped = None
    if shipped is not None and shipped.exists():
        return ProfileTable.load(shipped), f"shipped profile table {shipped}"
    from .synthetic import synthetic_table, width_only_configs

    # The width-only family is in, as a profiler would measure the Slimmable-style baseline.
    table = synthetic_table(synthetic_size, seed=0, include=width_only_configs(DEFAULT_SPACE))
    return (table,
            f"NOTE: no shipped profile table ({shipped or 'models/ not found'}); using a "
            f"SYNTHETIC table of {synthetic_size} variants (made-up numbers)")


# --------------------------------------------------------------------------------------------
# `adaspring search`
# --------------------------------------------------------------------------------------------
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
                   help="CPU load of other processes, percent (0)")
    p.add_argument("--memory-mb", type=float, help="available memory, MB (default: unknown)")
    p.add_argument("--latency-budget-ms", type=float, default=100.0,
                   help="application per-frame latency budget, ms (100)")
    p.add_argument("--contention", type=float, default=1.0,
                   help="measured / profiled median latency of the running variant (1.0)")
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
        table, note = default_table(args.table)
        context, budget_params = _cli_context(args)
        lambdas = _cli_lambdas(args, context)
        search = RuntimeSearch(table)
        remaining = None  # a scenario's mission started at its t = 0
        if args.scenario and budget_params.mission_duration_s is not None \
                and args.mission_s is None:
            remaining = max(budget_params.mission_duration_s - args.at, 0.0)
        result = search.decide(context, budget_params=budget_params, lambdas=lambdas,
                               contention=args.contention, tail=args.tail,
                               mission_remaining_s=remaining)
    except (ProfileError, ScenarioError, ValueError) as exc:
        print(f"adaspring search: {exc}", file=sys.stderr)
        return 2
    pred = result.prediction
    print(note)
    print(f"context:    {context.describe()}")
    print(f"lambda:     λ1 = {lambdas.lambda1:.3f}, λ2 = {lambdas.lambda2:.3f} ({lambdas.rule})")
    print(f"budgets:    {result.budgets.describe()}")
    for line in result.budgets.notes:
        print(f"            {line}")
    print(f"latency:    profiled p50 x tail {result.tail:.2f} x contention "
          f"{result.contention:.2f}")
    print(f"chosen:     {result.config_id}")
    print(f"predicted:  accuracy {pred.accuracy:.2%}, latency {pred.latency_ms:.3f} ms (p95), "
          f"energy {pred.energy_mj:.4g} mJ, peak memory {pred.peak_memory_mb:.2f} MB, "
          f"storage {pred.storage_bytes} B, objective {pred.objective:.4f}")
    print(f"reason:     {result.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
