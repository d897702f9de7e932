"""A tiny colour backbone in a search space other than the default one, saved with its model
card, and a synthetic profile table for it: what the runtime must serve without assuming the
default space, one channel or Fashion-MNIST's classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaspring_ros.core.model.card import ModelCard
from adaspring_ros.core.model.config import SearchSpace

SPACE = SearchSpace(num_stages=3, widths=(0.5, 1.0), depths=(1, 2), operators=("dwsep", "conv"),
                    ranks=(0.5, 1.0), int8=(True, False), resolutions=(32, 40, 48))
CARD = ModelCard(channels=3, channel_order="RGB", mean=(0.48, 0.45, 0.40),
                 std=(0.23, 0.22, 0.22), resolutions=SPACE.resolutions,
                 classes=("apple", "bus", "cat"), resize="letterbox",
                 data="random weights of a test (no data)")
# Exact numbers for the policy: FULL the most accurate, FAST the fastest, MID between.
ROWS = [
    {"accuracy": 0.92, "latency_ms_p50": 10.0, "energy_mj": 20.0},
    {"accuracy": 0.70, "latency_ms_p50": 0.5, "energy_mj": 0.5},
    {"accuracy": 0.88, "latency_ms_p50": 3.0, "energy_mj": 4.0},
]


def write_colour_model(root: Path, card: ModelCard = CARD) -> tuple[Path, Path]:
    """(checkpoint, profile table) of a random 3-channel backbone of :data:`SPACE` under
    ``root``; the table holds :data:`ROWS` for the full, the smallest and one more variant,
    and the card and sha256 of that backbone."""
    import torch

    from adaspring_ros.core.model.checkpoint import save_backbone
    from adaspring_ros.core.model.supernet import build_backbone
    from tools.synthetic_tables import table_from_rows

    torch.manual_seed(0)
    model = build_backbone(SPACE, (8, 16, 16), classes=card.classes, in_channels=3).eval()
    root.mkdir(parents=True, exist_ok=True)
    backbone = root / "colour.pt"
    digest = save_backbone(model, backbone, card=card)
    table = table_from_rows(ROWS, SPACE, card=card)
    table.backbone_sha256 = digest
    table_path = root / "colour_table.json"
    table.save(table_path)
    return backbone, table_path


def write_image_folder(root: Path, classes: tuple[str, ...] = CARD.classes,
                       per_class: int = 2) -> Path:
    """``root/test/<class>/`` with a few colour PNGs and JPEGs of odd sizes (each class its own
    colour), a grey one and a README (not an image); returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        folder = root / "test" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = 30 + 7 * i + label, 50 - 5 * i
            pixels = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
            pixels[..., label % 3] += 200
            Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 == 0 else 'jpg'}")
    Image.fromarray(np.full((20, 20), 90, np.uint8)).save(root / "test" / classes[0] / "grey.png")
    (root / "test" / "README.txt").write_text("not an image\n")
    return root


def write_lying_checkpoint(backbone: Path, path: Path) -> Path:
    """A copy of ``backbone`` whose model card says one grey channel while its stem's weights
    take three (with a matching .sha256: only the card gives it away)."""
    import torch

    from adaspring_ros.core.model.checkpoint import write_checksum

    ckpt = torch.load(backbone, map_location="cpu", weights_only=True)
    ckpt["card"].update(channels=1, channel_order="L", mean=[0.5], std=[0.25])
    torch.save(ckpt, path)
    write_checksum(path)
    return path
