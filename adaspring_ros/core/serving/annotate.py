"""The debug view: a camera frame with what the perception node decided drawn on it.

``annotate(pixels, lines)`` returns a new RGB frame (the input is left untouched) with ``lines``
(class and score, variant, end-to-end latency) on a dark band along the top, so a person
watching ``/adaspring/debug_image`` sees what the robot sees and what it concluded. Frames
narrower than :data:`MIN_WIDTH` are enlarged by a whole factor (nearest neighbour) first, so the
text stays readable on a 28x28 dataset image. Pillow's bundled font: nothing is read or
downloaded at run time. Pillow is imported on the first drawing: the debug view is off by
default, and a perception node then does without it (~4 MB).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["annotate", "decision_lines", "MIN_WIDTH"]

MIN_WIDTH = 320  # px; narrower frames are enlarged before the text is drawn


@lru_cache(maxsize=8)
def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def decision_lines(label: str, score: float, config_id: str, e2e_ms: float) -> list[str]:
    """What the debug view says about one frame; NaN latency: the stamp was not usable."""
    latency = f"{e2e_ms:.1f} ms" if math.isfinite(e2e_ms) else "unknown (stamp)"
    return [f"{label}  {score:.2f}", f"variant {config_id}", f"end-to-end {latency}"]


def annotate(pixels: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``pixels`` (uint8 (H, W) grey or (H, W, 3) RGB) as (H', W', 3) RGB with ``lines`` drawn
    on a band across the top; H', W' = H, W times a whole factor for narrow frames."""
    from PIL import Image, ImageDraw

    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise ValueError(f"expected (H, W) or (H, W, 3) pixels, got shape {pixels.shape}")
    scale = -(-MIN_WIDTH // pixels.shape[1])  # ceil: 28 px -> x12
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    font = _font(max(12, image.width // 28))
    draw = ImageDraw.Draw(image, "RGBA")
    pad = max(2, font.size // 4)
    line_height = font.size + pad
    band = min(image.height, pad + line_height * len(lines))
    draw.rectangle((0, 0, image.width, band), fill=(0, 0, 0, 170))
    for i, text in enumerate(lines):
        draw.text((pad * 2, pad + i * line_height), text, font=font, fill=(255, 255, 80))
    return np.asarray(image)
