"""Parameter descriptors shared by the adaspring nodes (kept apart so a node imports no other)."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

__all__ = ["describe"]


def describe(description: str, read_only: bool = False,
             floating: tuple[float, float] | None = None,
             integer: tuple[int, int] | None = None) -> ParameterDescriptor:
    """A ParameterDescriptor with an optional inclusive range."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if floating is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(floating[0]), to_value=float(floating[1]))]
    if integer is not None:
        descriptor.integer_range = [IntegerRange(from_value=integer[0], to_value=integer[1])]
    return descriptor
