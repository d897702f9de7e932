"""Which weights learn in an operator stage of training: only those private to one operator's
units (``ElasticBlock`` keeps one unit pair per operator under ``units.<operator>``), so every
variant without that operator comes out bit for bit as it went in."""

from __future__ import annotations

from adaspring_ros.core.model.supernet import ElasticBackbone

__all__ = ["freeze_all_but", "restore_frozen_buffers"]


def _private_to(name: str, operator: str) -> bool:
    """Whether a parameter or buffer belongs to ``operator``'s units only."""
    return f".units.{operator}." in name


def freeze_all_but(model: ElasticBackbone, operator: str) -> list[str]:
    """Freeze every parameter but those of ``operator``'s units; returns the names left
    trainable (refused if there are none: the space has no such operator)."""
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(_private_to(name, operator))
        if p.requires_grad:
            trainable.append(name)
    if not trainable:
        raise ValueError(f"the backbone has no units of operator {operator!r}")
    return trainable


def restore_frozen_buffers(model: ElasticBackbone, source: ElasticBackbone, operator: str
                           ) -> None:
    """Copy back the BN rows of every module outside ``operator``'s units from ``source``:
    training mode updates the running statistics of the frozen stem and shortcuts too."""
    mine = dict(model.named_buffers())
    for name, buf in source.named_buffers():
        if not _private_to(name, operator):
            mine[name].copy_(buf)
