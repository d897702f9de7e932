"""A small colour image folder, as a user brings one: classes of odd-sized PNG and JPEG photos,
a README, a file that only claims to be an image, a 16-bit grey PNG and a palette PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"apple": (200, 40, 40), "leaf": (40, 170, 60), "sky": (50, 80, 210)}


def write_colour_folder(root: Path, per_class: int = 24, seed: int = 0) -> Path:
    """``per_class`` noisy images of each class's colour, 17..70 px on a side, alternately PNG
    and JPEG; plus ``README.md`` (not an image), ``apple/broken.jpg`` (not decodable),
    ``sky/deep.png`` (16-bit grey) and ``leaf/palette.png`` (palette mode)."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(17, 71, 2)
            pixels = rng.integers(0, 60, (h, w, 3)) + np.asarray(colour) * 0.75
            image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
            image.save(folder / f"{name}_{i:02d}.{'png' if i % 2 else 'jpg'}")
    (root / "README.md").write_text("three colours\n")
    (root / "apple" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    deep = (np.linspace(0, 65535, 45 * 38).reshape(45, 38)).astype(np.uint16)
    Image.fromarray(deep).save(root / "sky" / "deep.png")
    palette = rng.integers(0, 256, (29, 41, 3), dtype=np.uint8)
    Image.fromarray(palette).convert("P").save(root / "leaf" / "palette.png")
    return root


def train_colour_backbone(root: Path, workdir: Path, *extra: str) -> Path:
    """One short epoch of a tiny colour backbone at 24 and 32 px on ``root``; its file."""
    from adaspring_ros.commands.train import cli_main

    out = workdir / "colour.pt"
    argv = ["--data", str(root), "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "16",
            "--channels", "4,8,8", "--resolutions", "24,32", "--out", str(out), "--workdir",
            str(workdir / "run"), "--no-progress", "--threads", "1", *extra]
    if cli_main(argv) != 0:
        raise RuntimeError(f"adaspring train {' '.join(argv)} failed")
    return out
