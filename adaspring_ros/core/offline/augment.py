"""Training-time augmentation of uint8 image batches (numpy, seeded by the caller's RNG).

The draws and their application are apart so that the ranks of a distributed run can draw
the augmentation of the whole global batch from one shared stream and each apply its own share
(loader.py): an image is then augmented alike whatever the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FlipShift", "draw_flip_and_shift", "apply_flip_and_shift", "flip_and_shift"]


@dataclass(frozen=True)
class FlipShift:
    """Per image: mirror it or not, and its offset (dy, dx) in the zero-padded frame."""

    flip: np.ndarray    # (N,) bool
    dy: np.ndarray      # (N,) int, 0 .. 2 * shift
    dx: np.ndarray      # (N,) int, 0 .. 2 * shift
    shift: int

    def __len__(self) -> int:
        return len(self.flip)

    def take(self, positions: slice | np.ndarray) -> "FlipShift":
        """The draws of the images at ``positions`` of the batch they were drawn for."""
        return FlipShift(self.flip[positions], self.dy[positions], self.dx[positions],
                         self.shift)


def draw_flip_and_shift(n: int, rng: np.random.Generator, shift: int = 2) -> FlipShift:
    """Draw a random horizontal flip and a translation of up to ``shift`` pixels for ``n``
    images from ``rng`` (flips first, then the offsets: the order the recipe is seeded in)."""
    flip = rng.random(n) < 0.5
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
    return FlipShift(flip, dy, dx, shift)


def apply_flip_and_shift(images: np.ndarray, draws: FlipShift) -> np.ndarray:
    """Apply ``draws`` (one per image) to (N, H, W) uint8 images (zero fill); same shape out."""
    n, h, w = images.shape[:3]
    if len(draws) != n:
        raise ValueError(f"{len(draws)} augmentation draws for {n} images")
    s = draws.shift
    images = np.where(draws.flip[:, None, None], images[:, :, ::-1], images)
    padded = np.pad(images, ((0, 0), (s, s), (s, s)))
    rows = draws.dy[:, None] + np.arange(h)[None]
    cols = draws.dx[:, None] + np.arange(w)[None]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def flip_and_shift(images: np.ndarray, rng: np.random.Generator, shift: int = 2) -> np.ndarray:
    """Random horizontal flip and a random translation of up to ``shift`` pixels (zero fill),
    drawn per image from ``rng``; (N, H, W) uint8 in, the same shape out."""
    return apply_flip_and_shift(images, draw_flip_and_shift(len(images), rng, shift))
