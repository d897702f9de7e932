"""Training-time augmentation of uint8 image batches (numpy, seeded by the caller's RNG).

Two recipes: :class:`GreyAugment`, Fashion-MNIST's (a horizontal flip and a shift of up to 2
pixels, zero filled), and :class:`PhotoAugment` for photos (a random resized crop to the
largest resolution of the space, a horizontal flip unless the task is not mirror-symmetric,
and a mild colour jitter: brightness, contrast, saturation). The draws and their application
are apart so that the ranks of a distributed run can draw the augmentation of the whole global
batch from one shared stream and each apply its own share (loader.py): an image is then
augmented alike whatever the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from PIL import Image

from adaspring_ros.core.data.folders import RESAMPLE

__all__ = ["Augmentation", "FlipShift", "draw_flip_and_shift", "apply_flip_and_shift",
           "flip_and_shift", "GreyAugment", "PhotoDraws", "PhotoAugment"]


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


class Draws(Protocol):
    def __len__(self) -> int: ...

    def take(self, positions: slice | np.ndarray) -> Draws: ...


class Augmentation(Protocol):
    """A recipe: ``draw`` the augmentation of ``n`` images, ``apply`` it to a batch."""

    def draw(self, n: int, rng: np.random.Generator) -> Draws: ...

    def apply(self, images: np.ndarray, draws: Draws) -> np.ndarray: ...


@dataclass(frozen=True)
class GreyAugment:
    """Fashion-MNIST's recipe: flip and shift (:func:`draw_flip_and_shift`); with
    ``mirror=False`` the flips are drawn (the stream stays the recipe's) but not applied."""

    shift: int = 2
    mirror: bool = True

    def draw(self, n: int, rng: np.random.Generator) -> FlipShift:
        draws = draw_flip_and_shift(n, rng, self.shift)
        return draws if self.mirror else replace(draws, flip=np.zeros_like(draws.flip))

    def apply(self, images: np.ndarray, draws: FlipShift) -> np.ndarray:
        return apply_flip_and_shift(images, draws)


@dataclass(frozen=True)
class PhotoDraws:
    """Per image: the crop box (left, top, width, height) as fractions of the image's side,
    the mirror flag, and the brightness, contrast and saturation factors."""

    box: np.ndarray      # (N, 4) float
    flip: np.ndarray     # (N,) bool
    jitter: np.ndarray   # (N, 3) float

    def __len__(self) -> int:
        return len(self.flip)

    def take(self, positions: slice | np.ndarray) -> PhotoDraws:
        return PhotoDraws(self.box[positions], self.flip[positions], self.jitter[positions])


_LUMA = np.asarray((0.299, 0.587, 0.114), np.float32)


@dataclass(frozen=True)
class PhotoAugment:
    """Random resized crop (area ``scale`` of the image, aspect ``ratio``) resized to ``size``
    with ``interpolation``, a flip (when ``mirror``) and factors in [1 - jitter, 1 + jitter]
    for brightness, contrast and (colour only) saturation. Square uint8 (N, S, S[, 3]) in,
    (N, size, size[, 3]) out."""

    size: int
    mirror: bool = True
    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: float = 0.2
    interpolation: str = "bilinear"

    def draw(self, n: int, rng: np.random.Generator) -> PhotoDraws:
        area = rng.uniform(*self.scale, n)
        aspect = np.exp(rng.uniform(np.log(self.ratio[0]), np.log(self.ratio[1]), n))
        w = np.minimum(np.sqrt(area * aspect), 1.0)
        h = np.minimum(np.sqrt(area / aspect), 1.0)
        left, top = rng.random(n) * (1.0 - w), rng.random(n) * (1.0 - h)
        flip = (rng.random(n) < 0.5) & self.mirror
        jitter = rng.uniform(1.0 - self.jitter, 1.0 + self.jitter, (n, 3))
        return PhotoDraws(np.stack([left, top, w, h], 1), flip, jitter)

    def apply(self, images: np.ndarray, draws: PhotoDraws) -> np.ndarray:
        n, side = len(images), images.shape[1]
        if len(draws) != n:
            raise ValueError(f"{len(draws)} augmentation draws for {n} images")
        resample = RESAMPLE[self.interpolation]
        out = np.empty((n, self.size, self.size) + images.shape[3:], np.uint8)
        for i in range(n):
            left, top, w, h = draws.box[i] * side
            crop = Image.fromarray(images[i]).resize((self.size, self.size), resample,
                                                     box=(left, top, left + w, top + h))
            out[i] = np.asarray(crop)[:, ::-1] if draws.flip[i] else np.asarray(crop)
        return _jittered(out, draws.jitter)


def _jittered(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Brightness, contrast (around each image's mean luma) and saturation (around each
    pixel's luma; colour only) scaled by ``factors`` (N, 3), as torchvision's ColorJitter."""
    x = images.astype(np.float32)
    colour = x.ndim == 4
    shape = (-1,) + (1,) * (x.ndim - 1)
    x = np.clip(x * factors[:, 0].reshape(shape).astype(np.float32), 0, 255)
    luma = x @ _LUMA if colour else x
    mean = luma.reshape(len(x), -1).mean(1).reshape(shape)
    c = factors[:, 1].reshape(shape).astype(np.float32)
    x = np.clip((x - mean) * c + mean, 0, 255)
    if colour:
        grey = (x @ _LUMA)[..., None]
        x = np.clip((x - grey) * factors[:, 2].reshape(shape).astype(np.float32) + grey, 0, 255)
    return np.rint(x).astype(np.uint8)
