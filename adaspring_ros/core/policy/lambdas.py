"""λ1 (accuracy) and λ2 (energy efficiency): the weights of the search objective, moved by the
context (a draining battery makes energy matter more; a hot CPU too).
"""

from __future__ import annotations

from dataclasses import dataclass

from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.validation import require_number, setting

__all__ = ["LambdaParams", "Lambdas", "adapt_lambdas"]


@dataclass(frozen=True)
class Lambdas:
    """Weights of the search objective λ1·accuracy + λ2·energy efficiency; ``rule`` says why."""

    lambda1: float
    lambda2: float
    rule: str = ""

    def __post_init__(self) -> None:
        for name in ("lambda1", "lambda2"):
            require_number(name, getattr(self, name), 0.0, 1.0)
        if self.lambda1 + self.lambda2 <= 0:
            raise ValueError("lambda1 and lambda2 may not both be 0")


@dataclass(frozen=True)
class LambdaParams:
    """Rules that move λ2 (energy) with the context; λ1 = 1 - λ2.

    λ2 = lambda2_external when charging or without a battery (mains power: energy is free, so
    by default the most accurate variant the budgets allow runs);
    otherwise it rises linearly from lambda2_min at battery >= battery_high_percent to
    lambda2_max at battery <= battery_low_percent. When the CPU is at or above
    hot_temperature_c, λ2 is at least lambda2_hot (less energy = less heat). Bounded by
    construction: λ2 <= max(lambda2_max, lambda2_hot) <= 1.

    With the default exchange rate (ObjectiveParams.energy_pct_per_point = 10 % per point):
    λ2 = 0.2 on a full battery trades a point only for >= 40 % of the frame energy saved,
    λ2 = 0.6 at 15 % battery already for >= 6.7 %.
    """

    lambda2_external: float = setting(
        0.0, "λ2 on external power or without a battery (0 = energy is free: the most accurate "
        "feasible variant)", range=(0.0, 1.0))
    lambda2_min: float = setting(0.2, "λ2 at or above battery_high_percent", range=(0.0, 1.0))
    lambda2_max: float = setting(0.6, "λ2 at or below battery_low_percent", range=(0.0, 1.0))
    battery_high_percent: float = setting(50.0, "battery above which λ2 = lambda2_min, %",
                                          range=(0.0, 100.0))
    battery_low_percent: float = setting(15.0, "battery below which λ2 = lambda2_max, %",
                                         range=(0.0, 100.0))
    hot_temperature_c: float = setting(85.0, "CPU temperature from which λ2 >= lambda2_hot, C",
                                       range=(-50.0, 200.0))
    lambda2_hot: float = setting(0.5, "least λ2 while the CPU is hot", range=(0.0, 1.0))

    def __post_init__(self) -> None:
        for name in ("lambda2_external", "lambda2_min", "lambda2_max", "lambda2_hot"):
            require_number(name, getattr(self, name), 0.0, 1.0)
        for name in ("battery_low_percent", "battery_high_percent"):
            require_number(name, getattr(self, name), 0.0, 100.0)
        if self.lambda2_min > self.lambda2_max:
            raise ValueError(f"lambda2_min ({self.lambda2_min}) must be <= lambda2_max "
                             f"({self.lambda2_max})")
        if not self.battery_low_percent < self.battery_high_percent:
            raise ValueError(f"battery_low_percent ({self.battery_low_percent}) must be below "
                             f"battery_high_percent ({self.battery_high_percent})")
        require_number("hot_temperature_c", self.hot_temperature_c, -273.15, 200.0)


def adapt_lambdas(context: Context, params: LambdaParams | None = None) -> Lambdas:
    """λ1, λ2 for ``context`` by the rules of :class:`LambdaParams`."""
    p = params or LambdaParams()
    if context.charging:
        lambda2, rule = p.lambda2_external, "charging"
    elif context.battery_percent is None:
        lambda2, rule = p.lambda2_external, "no battery"
    else:
        span = p.battery_high_percent - p.battery_low_percent
        drained = min(max((p.battery_high_percent - context.battery_percent) / span, 0.0), 1.0)
        lambda2 = p.lambda2_min + drained * (p.lambda2_max - p.lambda2_min)
        rule = f"battery {context.battery_percent:.0f}%"
    temperature = context.cpu_temperature_c
    if temperature is not None and temperature >= p.hot_temperature_c and lambda2 < p.lambda2_hot:
        lambda2, rule = p.lambda2_hot, f"{rule}, CPU hot ({temperature:.0f} C)"
    return Lambdas(lambda1=1.0 - lambda2, lambda2=lambda2, rule=rule)
