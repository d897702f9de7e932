"""Node parameters from dataclass settings (see core/validation.py ``setting``).

A node declares ``parameter_table(*classes)``: one parameter per setting, named as the field,
with its default, description, range and read-only flag in a ParameterDescriptor; ``read``
builds the dataclass back from the node's current (or proposed) parameter values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import Field
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from adaspring_ros.core.validation import from_ros, ros_default, settings_of

__all__ = ["describe", "parameter_table", "declare", "read", "invalid_choice"]


def describe(description: str, read_only: bool = False,
             floating: tuple[float, float] | None = None,
             integer: tuple[int, int] | None = None) -> ParameterDescriptor:
    """A ParameterDescriptor with an optional inclusive range."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if floating is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(floating[0]), to_value=float(floating[1]))]
    if integer is not None:
        descriptor.integer_range = [IntegerRange(from_value=int(integer[0]),
                                                 to_value=int(integer[1]))]
    return descriptor


def _descriptor(f: Field) -> ParameterDescriptor:
    meta, default = f.metadata, ros_default(f)
    limits = meta["range"]
    is_float = isinstance(default, float)
    descriptor = describe(meta["description"], meta["read_only"],
                          floating=limits if limits is not None and is_float else None,
                          integer=limits if limits is not None and not is_float else None)
    if meta["choices"] is not None:
        descriptor.additional_constraints = f"one of {', '.join(map(str, meta['choices']))}"
    return descriptor


def parameter_table(*classes: type) -> list[tuple[str, Any, ParameterDescriptor]]:
    """(name, default, descriptor) of every setting of ``classes``; a name may occur once."""
    table, seen = [], set()
    for cls in classes:
        for f in settings_of(cls):
            if f.name in seen:
                raise ValueError(f"parameter {f.name} is declared twice")
            seen.add(f.name)
            table.append((f.name, ros_default(f), _descriptor(f)))
    return table


def declare(node: Any, classes: Iterable[type]) -> None:
    """Declare the settings of ``classes`` as parameters of ``node``."""
    for name, default, descriptor in parameter_table(*classes):
        node.declare_parameter(name, default, descriptor)


def invalid_choice(classes: Iterable[type], values: dict[str, Any]) -> str:
    """Why one of ``values`` (parameter name -> value) is not among its setting's choices, or
    ''."""
    for cls in classes:
        for f in settings_of(cls):
            choices = f.metadata["choices"]
            if choices is not None and f.name in values and values[f.name] not in choices:
                return (f"{f.name}: {values[f.name]!r} is not one of "
                        f"{', '.join(map(str, choices))}")
    return ""


def read(node: Any, cls: type, changed: Iterable[Any] = ()) -> Any:
    """``cls`` built from the node's parameters, with the ``changed`` rclpy Parameters applied
    (the proposal an on-set callback validates); ValueError/TypeError if unusable."""
    proposed = {p.name: p.value for p in changed}
    values = {}
    for f in settings_of(cls):
        value = proposed[f.name] if f.name in proposed else node.get_parameter(f.name).value
        values[f.name] = from_ros(f, value)
    return cls(**values)
