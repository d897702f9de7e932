"""Training-time augmentation of uint8 image batches (numpy, seeded by the caller's RNG)."""

from __future__ import annotations

import numpy as np

__all__ = ["flip_and_shift"]


def flip_and_shift(images: np.ndarray, rng: np.random.Generator, shift: int = 2) -> np.ndarray:
    """Random horizontal flip and a random translation of up to ``shift`` pixels (zero fill),
    drawn per image from ``rng``; (N, H, W) uint8 in, the same shape out."""
    n, h, w = images.shape[:3]
    flip = rng.random(n) < 0.5
    images = np.where(flip[:, None, None], images[:, :, ::-1], images)
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift)))
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
