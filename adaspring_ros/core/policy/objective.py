"""The runtime objective: how a variant's accuracy and frame energy are traded, in accuracy points.

    J = λ2 · saved_pct / energy_pct_per_point  -  λ1 · lost_pt

``lost_pt`` is counted against the most accurate feasible variant, ``saved_pct`` against the
frame energy of the table's most accurate variant (the reference); README.md, "What the policy
maximises", explains the shape and the properties the tests hold it to. ``max_accuracy_loss_pt``
is the accuracy floor: the most the policy may trade away against the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np

from adaspring_ros.core.policy.lambdas import Lambdas
from adaspring_ros.core.validation import require_number, setting

__all__ = ["ObjectiveParams", "Prediction", "objective", "saved_pct", "reference_row"]

Value = TypeVar("Value", float, np.ndarray)


@dataclass(frozen=True)
class ObjectiveParams:
    """How accuracy is traded for energy; both fields are evolution_node parameters.

    max_accuracy_loss_pt:   the accuracy floor: the most points (against the most accurate
                            variant of the table) the policy may trade away; variants further
                            below run only when the budgets leave nothing above. The default,
                            2 points, is the loss the demo's verdict accepts against the full
                            model: a policy left at its defaults never serves worse than that.
    energy_pct_per_point:   % of the frame energy worth one accuracy point at λ1 = λ2.
    """

    max_accuracy_loss_pt: float = setting(
        2.0, "most accuracy points the policy may trade for energy against the table's most "
        "accurate variant", range=(0.0, 100.0))
    energy_pct_per_point: float = setting(
        10.0, "% of the frame energy worth one accuracy point at λ1 = λ2", range=(0.01, 1e6))

    def __post_init__(self) -> None:
        require_number("max_accuracy_loss_pt", self.max_accuracy_loss_pt, 0.0, 100.0)
        require_number("energy_pct_per_point", self.energy_pct_per_point, 0.0, 1e6,
                       low_open=True)


def objective(lambdas: Lambdas, lost_pt: Value, saved: Value, params: ObjectiveParams) -> Value:
    """J for points lost and % of the reference's frame energy saved (scalars or arrays)."""
    return lambdas.lambda2 * saved / params.energy_pct_per_point - lambdas.lambda1 * lost_pt


def saved_pct(energy_mj: Value, reference_mj: float, overhead_mj: float = 0.0) -> Value:
    """% of the reference's frame energy a frame of ``energy_mj`` (forward) saves; a frame is
    the forward plus ``overhead_mj``. 0 when the reference costs nothing."""
    reference = reference_mj + overhead_mj
    if reference <= 0:
        return energy_mj * 0.0
    return 100.0 * (1.0 - (energy_mj + overhead_mj) / reference)


def reference_row(accuracy: Sequence[float], energy: Sequence[float]) -> int:
    """Row of the most accurate variant; ties: the most energy, then the first row."""
    acc, eng = np.asarray(accuracy, dtype=float), np.asarray(energy, dtype=float)
    return int(np.lexsort((np.arange(len(acc)), -eng, -acc))[0])


@dataclass(frozen=True)
class Prediction:
    """What the table predicts for one variant under the current contention and budgets.

    ``latency_ms`` is the predicted p95 of its forward pass (what the latency budget is checked
    against), ``latency_ms_p50`` the predicted median (what the perception node's metrics will
    report); ``energy_mj`` is the energy of a whole frame (forward + measured overhead);
    ``lost_pt`` the points lost against the most accurate feasible variant (against the
    reference when nothing fits) and ``saved_pct`` the % of the reference's frame energy saved.
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
    latency_ms_p50: float = math.nan

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
