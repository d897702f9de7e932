"""Argument checks shared by core/, and the metadata that makes a dataclass field a setting.

A *setting* is a dataclass field that the ROS nodes declare as a parameter: its name, default,
description and the range a parameter value must lie in are written once, on the field, with
:func:`setting`; ``adaspring_ros.nodes.params`` turns such fields into parameter declarations.
Fields declared with a plain default are internal and never become parameters.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, field, fields
from typing import Any

__all__ = ["require_number", "require_optional", "optional_reading", "setting", "settings_of",
           "ros_default", "from_ros"]


def require_number(name: str, value: Any, low: float, high: float,
                   low_open: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number in [low, high] (or (low, high])."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and low <= value <= high and not (low_open and value == low))
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a finite number in {bracket}{low:g}, {high:g}], "
                         f"got {value!r}")


def require_optional(name: str, value: Any, low: float, high: float) -> None:
    """As :func:`require_number`, but None (an unknown reading) passes."""
    if value is not None:
        require_number(name, value, low, high)


def optional_reading(value: Any) -> float | None:
    """None for a missing reading (None or NaN, as ROS messages carry it), else a float."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def setting(default: Any, description: str, *, range: tuple[float, float] | None = None,
            read_only: bool = False, none: Any = None, choices: tuple | None = None) -> Any:
    """A dataclass field that is also a node parameter.

    ``range`` is the inclusive range a parameter value must lie in (rclpy rejects others);
    ``choices`` the values it may take (the node's parameter callback rejects others);
    ``read_only`` parameters are fixed at start; ``none`` is the parameter value that stands for
    a default of None (a ROS parameter has one type and no null: 0 or "" means "none").
    """
    if default is None and none is None:
        raise ValueError("a setting defaulting to None needs the parameter value for none")
    if choices is not None and default not in choices:
        raise ValueError(f"default {default!r} is not one of the choices {choices}")
    return field(default=default, metadata={
        "description": description, "range": range, "read_only": read_only, "none": none,
        "choices": choices})


def settings_of(cls: type) -> list[Field]:
    """The fields of dataclass ``cls`` declared with :func:`setting`, in declaration order."""
    return [f for f in fields(cls) if "description" in f.metadata]


def ros_default(f: Field) -> Any:
    """The parameter default of setting ``f`` (None mapped to the ``none`` value)."""
    if f.default is MISSING:
        raise ValueError(f"setting {f.name} has no default")
    return f.metadata["none"] if f.default is None else f.default


def from_ros(f: Field, value: Any) -> Any:
    """The field value for parameter value ``value`` (the ``none`` value mapped to None)."""
    none = f.metadata.get("none")
    return None if none is not None and value == none else value
