"""Which model `adaspring demo` runs, and on which images: the shipped Fashion-MNIST backbone on
the Fashion-MNIST test split (the default), or a user's backbone, its profile table and the images
of its task (an image folder; its test split is replayed).

``--model NAME`` names a model shipped or installed under ``models/NAME/``: ``backbone.pt``
(with its ``.sha256``), ``profile_table.json`` and, unless ``--dataset-dir`` names them, the
task's images in ``models/NAME/data`` (a folder or a link to one). Everything is checked before
a node starts, so a mismatch is one clear line, not a node dying mid-demo: the checkpoint's
sha256 and model card, the table's card and space against it, and the folder's classes against
the card's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaspring_ros.core import paths
from adaspring_ros.core.data.datasets import FASHION_MNIST_CLASSES
from adaspring_ros.core.model.card import ModelCard
from adaspring_ros.core.model.checkpoint_reader import load_weight_bank
from adaspring_ros.core.model.profile_table import load_profile_table
from adaspring_ros.core.serving.perception import require_table_fits
from adaspring_ros.core.serving.replay import index_image_files

__all__ = ["DemoModel", "resolve_model", "describe_task"]


@dataclass(frozen=True)
class DemoModel:
    """The backbone, table and images of one demo ('' / None: the shipped ones, Fashion-MNIST)
    and the backbone's model card."""

    backbone: str
    table: str
    dataset_dir: str | None
    card: ModelCard
    images: int = 0  # replayed images of dataset_dir

    def perception_params(self) -> dict[str, Any]:
        """Overrides of the perception node's parameters (none for the shipped model)."""
        return {name: value for name, value in (("backbone_path", self.backbone),
                                                 ("profile_table", self.table)) if value}

    def evolution_params(self) -> dict[str, Any]:
        return {"profile_table": self.table} if self.table else {}

    def camera_params(self) -> dict[str, Any]:
        if self.dataset_dir is None:
            return {}
        return {"source": "image_folder", "path": self.dataset_dir,
                "backbone_path": self.backbone}

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone or str(paths.default_backbone()),
                "profile_table": self.table or str(paths.default_profile_table()),
                "dataset_dir": self.dataset_dir or "Fashion-MNIST test split",
                "card": self.card.to_dict()}


def describe_task(card: ModelCard) -> str:
    """One line naming what a backbone does: classes, input channels, resolutions, data."""
    shown = ", ".join(card.classes[:8]) + (", ..." if card.num_classes > 8 else "")
    colour = "grey" if card.channels == 1 else f"colour ({card.channel_order})"
    sizes = "/".join(str(r) for r in card.resolutions)
    return (f"{card.num_classes} classes ({shown}); {card.channels} channel(s), {colour}; "
            f"{sizes} px, {card.resize.replace('_', ' ')}, {card.interpolation}; "
            f"trained on: {card.data or 'not recorded'}")


def _named_model(name: str) -> tuple[Path, Path, Path | None]:
    root = paths.models_dir() / name
    backbone, table = root / "backbone.pt", root / "profile_table.json"
    if not backbone.is_file() or not table.is_file():
        known = sorted(p.name for p in paths.models_dir().iterdir()
                       if (p / "backbone.pt").is_file())
        raise ValueError(f"no model {name!r}: {root} needs backbone.pt and profile_table.json "
                         f"(models there: {', '.join(known) or 'none'})")
    data = root / "data"
    return backbone, table, data if data.is_dir() else None


def resolve_model(name: str | None = None, backbone: str | None = None,
                  table: str | None = None, dataset_dir: str | None = None) -> DemoModel:
    """The model of a demo from its command-line options (see the module docstring); ValueError
    (or OSError) with a line that says what does not fit."""
    if name:
        if backbone or table:
            raise ValueError("--model names the backbone and its table; leave out --backbone "
                             "and --table")
        named = _named_model(name)
        backbone, table = str(named[0]), str(named[1])
        if dataset_dir is None and named[2] is not None:
            dataset_dir = str(named[2])
    backbone, table = backbone or "", table or ""
    if backbone and not table:
        raise ValueError("--backbone needs --table, the profile table measured for it "
                         "(adaspring profile)")
    bank = load_weight_bank(backbone or paths.default_backbone())
    card = bank.card
    require_table_fits(load_profile_table(table or None), bank,
                       table or str(paths.default_profile_table()))
    if dataset_dir is None:
        if card.channels != 1 or card.classes != FASHION_MNIST_CLASSES:
            raise ValueError(f"the backbone's task is not Fashion-MNIST ({describe_task(card)}): "
                             f"name its images with --dataset-dir")
        return DemoModel(backbone, table, None, card)
    files = index_image_files(Path(dataset_dir), card.classes)
    return DemoModel(backbone, table, str(Path(dataset_dir).resolve()), card, len(files))
