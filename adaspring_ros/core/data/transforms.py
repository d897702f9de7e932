"""THE preprocessing: uint8 image(s) in, the backbone's normalised float32 input out, as the
backbone's model card says.

Training, profiling and the live perception node all go through :func:`preprocess` (a camera
frame through :func:`preprocess_frame`, the same conversion of exactly one image), so a frame
on the robot is converted exactly like the training images were. What the conversion is comes
from the model card (``core/model/card.py``; anything with the fields of :class:`InputSpec`):

* channels: a grey model (1) takes colour as BT.601 luma; a colour model (3, RGB) takes grey
  replicated to its three channels; alpha is dropped;
* resize policy: ``centre_crop`` keeps the centred square of a non-square image (a 640x480
  frame keeps its aspect ratio, its sides are cut); ``letterbox`` keeps the whole image,
  centred on a square padded with the card's mean colour (so the padding normalises to 0);
* interpolation to the variant's resolution: bilinear or bicubic, antialiased when
  downscaling, or nearest;
* normalisation with the card's per-channel mean/std (pixels scaled to [0, 1]).

Without a card it is Fashion-MNIST's grey recipe (:data:`FASHION_MNIST_INPUT`): grey, centre
crop, bilinear, Fashion-MNIST's mean/std. It is numpy only, so a serving process needs no torch;
training wraps the array with ``torch.from_numpy`` (:func:`preprocess_tensor`).

The resize computes what ``torch.nn.functional.interpolate(mode=interpolation,
align_corners=False, antialias=downscaling)`` computes (test/test_data_transforms.py holds it
to that within float rounding): a separable resampling written as two small matrix products,
whose rows are the interpolation kernel, stretched by the scale factor when downscaling
(Pillow's and torch's antialiasing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.lib.stride_tricks import as_strided

from adaspring_ros.core.data.datasets import DataError

if TYPE_CHECKING:  # torch only for the training side's tensor form
    from torch import Tensor

__all__ = ["MEAN", "STD", "LUMA", "InputSpec", "FASHION_MNIST_INPUT", "preprocess",
           "preprocess_frame", "preprocess_tensor"]

# Pixel statistics of the Fashion-MNIST train split (after scaling to [0, 1]).
MEAN = 0.2860
STD = 0.3530
# ITU-R BT.601 luma weights, the same as Pillow's "L" mode and OpenCV's RGB2GRAY.
LUMA = (0.299, 0.587, 0.114)


class InputSpec(Protocol):
    """What the preprocessing reads of a model card (``core.model.card.ModelCard``)."""

    channels: int                 # 1 (grey) or 3 (RGB)
    mean: tuple[float, ...]       # per channel, pixels scaled to [0, 1]
    std: tuple[float, ...]
    resize: str                   # "centre_crop" or "letterbox"
    interpolation: str            # "bilinear", "bicubic" or "nearest"


@dataclass(frozen=True)
class _Input:
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str
    interpolation: str


FASHION_MNIST_INPUT: InputSpec = _Input(1, (MEAN,), (STD,), "centre_crop", "bilinear")


def _planes(images: np.ndarray, grey: bool) -> np.ndarray:
    """uint8 image(s) -> (N, C, H, W) float32 in [0, 255]: C = 1 when ``grey`` (colour as
    luma) or the images are grey, else 3 (RGB; alpha dropped)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"expected uint8 images, got dtype {images.dtype}")
    if images.ndim == 2:                                    # (H, W)
        images = images[None]
    elif images.ndim == 3 and images.shape[-1] in (1, 3, 4) and \
            images.shape[-1] < images.shape[0]:
        images = images[None]                               # (H, W, C)
    if images.ndim == 3:                                    # (N, H, W)
        return images[:, None].astype(np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"expected (H, W), (H, W, C), (N, H, W) or (N, H, W, C) with C in 1/3/4, "
            f"got shape {images.shape}"
        )
    if images.shape[-1] == 1:
        return images[..., 0][:, None].astype(np.float32)
    if grey:                                                # RGBA: alpha is dropped
        rgb = images[..., :3].astype(np.float32)
        return (rgb @ np.asarray(LUMA, dtype=np.float32))[:, None]
    if images.shape[-1] == 3 and images.strides[-2:] in ((3, 1), (3, -1)):
        # RGB pixels side by side (or BGR ones read backwards, as a bgr8 frame is): converted
        # in their own (channels-last) order and viewed as planes. A transposing conversion
        # cost 0.29 ms for a 480x480 crop against 0.07 here (a cast read backwards, 0.9); the
        # row resize reads such a view through its base (_resize_rows).
        if images.strides[-1] < 0:
            return images[..., ::-1].astype(np.float32)[..., ::-1].transpose(0, 3, 1, 2)
        return images.astype(np.float32).transpose(0, 3, 1, 2)
    # RGBA, or strided pixels: planes laid out in the one pass that converts them (a cast of
    # every fourth value left out runs 1.6 ms for a 480x480 crop; this 0.3).
    return np.ascontiguousarray(images[..., :3].transpose(0, 3, 1, 2), dtype=np.float32)


def _centre_square(h: int, w: int) -> tuple[slice, slice]:
    """(rows, columns) of the centred square of an h x w image."""
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return slice(top, top + side), slice(left, left + side)


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.float32(1.0) - np.abs(x), np.float32(0.0))


def _cubic(a: float) -> Callable[[np.ndarray], np.ndarray]:
    """Keys' cubic convolution kernel with parameter ``a``, in float32."""
    a = np.float32(a)

    def kernel(x: np.ndarray) -> np.ndarray:
        x = np.abs(np.asarray(x, np.float32))
        near = ((a + 2) * x - (a + 3)) * x * x + 1
        far = (((x - 5) * x + 8) * x - 4) * a
        return np.where(x < 1, near, np.where(x < 2, far, np.float32(0.0))).astype(np.float32)
    return kernel


# interpolation -> (taps of the kernel at scale 1, kernel when antialiasing, when upscaling)
_KERNELS = {"bilinear": (2, _triangle, _triangle),
            "bicubic": (4, _cubic(-0.5), _cubic(-0.75))}


def _antialiased(size_in: int, size_out: int, taps: int,
                 kernel: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Downscaling: the kernel widened by the scale (support = taps / 2 x scale), each row
    normalised to sum 1, as torch's antialiased kernels and Pillow compute it; scalars are
    float32, as torch computes them for a float32 image."""
    f32 = np.float32
    scale = f32(size_in) / f32(size_out)
    support = f32(taps / 2) * scale
    max_taps = int(np.ceil(support)) * 2 + 1
    invscale = f32(1.0 / float(scale))
    out = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        center = f32(float(scale) * (i + 0.5))
        xmin = max(int(float(center - support) + 0.5), 0)
        end = min(int(float(center + support) + 0.5), size_in)
        count = min(max(end - xmin, 0), max_taps)
        offset = np.arange(xmin, xmin + count, dtype=np.float32) - center
        w = kernel(((offset.astype(np.float64) + 0.5) * float(invscale)).astype(np.float32))
        total = np.cumsum(w, dtype=np.float32)[-1] if count else f32(0.0)
        out[i, xmin:xmin + count] = w / total if total != 0 else w
    return out


def _upscaling(size_in: int, size_out: int, taps: int,
               kernel: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Upscaling (or the same size): plain interpolation with pixel centres aligned
    (align_corners=False), the taps clamped to the image. Bilinear clamps the source index at
    0, as torch does."""
    f32 = np.float32
    scale = f32(size_in) / f32(size_out)
    out = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        src = float(scale * f32(i + 0.5) - f32(0.5))
        if taps == 2:
            src = max(src, 0.0)
            i0 = int(src)
            i1 = i0 + (1 if i0 < size_in - 1 else 0)
            frac = f32(min(max(f32(src) - f32(i0), f32(0.0)), f32(1.0)))
            out[i, i0] += f32(1.0) - frac
            out[i, i1] += frac
            continue
        i0 = int(np.floor(src))
        t = f32(src) - f32(i0)
        weights = kernel(np.asarray([t + 1, t, 1 - t, 2 - t], np.float32))
        for k, w in enumerate(weights):
            out[i, min(max(i0 - 1 + k, 0), size_in - 1)] += w
    return out


@lru_cache(maxsize=64)
def _resize_matrix(size_in: int, size_out: int, interpolation: str = "bilinear") -> np.ndarray:
    """(size_out, size_in) float32 weights of a resize along one axis (see the module
    docstring); nearest picks the source pixel floor(i x scale), as torch's "nearest"."""
    if interpolation == "nearest":
        scale = np.float32(size_in) / np.float32(size_out)
        src = np.minimum(np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(int),
                         size_in - 1)
        out = np.zeros((size_out, size_in), np.float32)
        out[np.arange(size_out), src] = 1.0
    elif interpolation in _KERNELS:
        taps, smooth, sharp = _KERNELS[interpolation]
        out = (_antialiased(size_in, size_out, taps, smooth) if size_in > size_out
               else _upscaling(size_in, size_out, taps, sharp))
    else:
        raise ValueError(f"interpolation must be nearest, bilinear or bicubic, got "
                         f"{interpolation!r}")
    out.flags.writeable = False  # shared by every call (cached)
    return out


@lru_cache(maxsize=128)
def _band(size_in: int, size_out: int, interpolation: str, offset: int = 0,
          length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Columns ``offset:offset + length`` of :func:`_resize_matrix` as a band: (size_out, K)
    source indices and their weights. A row's weights are a few neighbouring taps (15 for
    480 -> 64 px), so the products run on them alone: a 640x480 colour frame's resize fell
    from 9.8 to 2.5 ms on an AVX2 host (the dense products were 44 MFLOP of mostly zeros), and
    to 0.32 ms (dense 1.32) on an AVX-512 one with :func:`_resize_rows` a product per row."""
    dense = _resize_matrix(size_in, size_out, interpolation)
    length = size_in - offset if length is None else length
    part = dense[:, offset:offset + length]
    nonzero = part != 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), 0)
    last = np.where(nonzero.any(axis=1), length - 1 - nonzero[:, ::-1].argmax(axis=1), 0)
    taps = max(int((last - first).max()) + 1, 1)
    start = np.clip(np.minimum(first, length - taps), 0, None)
    index = start[:, None] + np.arange(min(taps, length))
    weights = np.take_along_axis(part, index, axis=1).astype(np.float32)
    # Every kernel here has a compact support, so a row's taps are contiguous and the band
    # holds all of its weights.
    assert np.count_nonzero(weights) == np.count_nonzero(part)
    index.flags.writeable = weights.flags.writeable = False
    return index, weights


@lru_cache(maxsize=128)
def _row_groups(size_in: int, size_out: int, interpolation: str, offset: int = 0,
                length: int | None = None) -> tuple[tuple[slice, int, int], ...]:
    """The output rows of :func:`_band` in as few groups as possible whose first taps step
    evenly: (rows, first tap of the group's first row, step between the rows' first taps).

    A side of p rows resized to q is a ratio p/q in lowest terms: every q-th output row starts
    p rows further on, but at the edges, where the taps are clipped. Each group is then one
    batched product (:func:`_resize_rows`) instead of one call per output row: 96 calls become
    3 for 480 -> 96 px (the rows' pass of a colour frame 0.29-0.33 -> 0.15-0.18 ms here), with
    the same numbers.
    """
    starts = [int(s) for s in _band(size_in, size_out, interpolation, offset, length)[0][:, 0]]
    best: list[tuple[slice, int, int]] = []
    for period in range(1, min(16, len(starts)) + 1):
        groups = []
        for first_row in range(period):
            rows = list(range(first_row, len(starts), period))
            i = 0
            while i < len(rows):
                j = i + 1
                step = starts[rows[j]] - starts[rows[i]] if j < len(rows) else 0
                while j < len(rows) and starts[rows[j]] - starts[rows[j - 1]] == step:
                    j += 1
                groups.append((slice(rows[i], rows[j - 1] + 1, period), starts[rows[i]],
                               step if j - i > 1 else 0))
                i = j
        if not best or len(groups) < len(best):
            best = groups
    # _resize_rows reads each group through a strided view: a start that is not where the
    # band has it would read outside the frame
    assert all(starts[row] == first + k * step for rows, first, step in best
               for k, row in enumerate(range(*rows.indices(len(starts)))))
    return tuple(best)


def _banded_pays(size_in: int, size_out: int, interpolation: str, planes: int) -> bool:
    """Whether the band beats the dense products: it costs a numpy call per output row and
    per tap, so it pays when the taps are few against the row (three planes, 480 -> 64 px, 15
    taps: 0.32 against 1.32 ms on an AVX-512 host; 480 -> 96: 0.43 against 3.5 ms). One plane
    stays dense (0.6 ms for 480 -> 28): the grey recipe keeps its numbers bit for bit (the
    shipped grey tables were measured with them)."""
    return planes > 1 and _band(size_in, size_out, interpolation)[0].shape[1] * 16 <= size_in


def _resize_rows(x: np.ndarray, band: tuple[np.ndarray, np.ndarray],
                 groups: tuple[tuple[slice, int, int], ...]) -> np.ndarray:
    """The resize along axis -2 (matrix @ x): each output row its taps' weights against the
    block of rows they cover, a view (a band's taps are contiguous), a group of rows
    (:func:`_row_groups`) one batched product. Products rather than a gathered copy per tap:
    0.19 against 1.36 ms for a 640x480 colour frame at 64 px here, no frame-sized temporary
    either way."""
    index, weights = band
    taps = index.shape[1]
    base = x.transpose(0, 2, 3, 1) if x.ndim == 4 and x.shape[1] > 1 else None
    backwards = base is not None and base.strides[-1] < 0      # BGR read as RGB (_planes)
    if backwards:
        base = base[..., ::-1]
    # Channels-last planes (_planes) are resized through their base, each output row one
    # product over whole pixel rows; the few rows out are then laid out as planes for the
    # column resize, which gathers along a row (0.15 ms on planes against 0.49 on
    # channels-last, 96 px here).
    channels_last = base is not None and base.flags.c_contiguous
    src = base.reshape(base.shape[0], base.shape[1], -1) if channels_last else x
    out = np.empty(src.shape[:-2] + (index.shape[0], src.shape[-1]), np.float32)
    lead, (row_stride, col_stride) = src.strides[:-2], src.strides[-2:]
    for rows, first, step in groups:
        # the group's blocks of rows, one per output row, as a view over the source rows
        count = len(range(*rows.indices(index.shape[0])))
        blocks = as_strided(src[..., first:, :], src.shape[:-2] + (count, taps, src.shape[-1]),
                            lead + (step * row_stride, row_stride, col_stride),
                            writeable=False)
        np.matmul(weights[rows, None, :], blocks, out=out[..., rows, None, :])
    if not channels_last:
        return out
    n, _, w, c = base.shape
    planes = out.reshape(n, index.shape[0], w, c).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(planes[:, ::-1] if backwards else planes)


def _resize_columns(x: np.ndarray, band: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The resize along axis -1 (x @ matrix.T)."""
    index, weights = band
    return np.einsum("...rk,rk->...r", x[..., index], weights)


def preprocess(images: np.ndarray, resolution: int,
               card: InputSpec | None = None) -> np.ndarray:
    """uint8 image(s) -> normalised float32 array (N, channels, resolution, resolution), as
    the model card ``card`` says (default: :data:`FASHION_MNIST_INPUT`; see the module
    docstring for what each field does).

    Accepts (H, W) grey, (H, W, C) with C in {1, 3 (RGB), 4 (RGBA)}, or batches (N, H, W[, C]);
    a 3-d array is one colour image when its last axis is a channel count smaller than its
    first, else a grey batch (a camera frame of a few rows: :func:`preprocess_frame`).
    """
    images = np.asarray(images)
    if images.ndim == 3 and images.shape[-1] in (1, 3, 4) and images.shape[-1] < images.shape[0]:
        return preprocess_frame(images, resolution, card)
    card = card or FASHION_MNIST_INPUT
    return _normalised(_planes(images, card.channels == 1), resolution, card)


def preprocess_frame(pixels: np.ndarray, resolution: int,
                     card: InputSpec | None = None) -> np.ndarray:
    """One camera frame, (H, W) grey or (H, W, C) with C in {1, 3, 4}, as :func:`preprocess`
    converts it -> (1, channels, resolution, resolution), whatever its size."""
    card = card or FASHION_MNIST_INPUT
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] in (1, 3, 4):
        h, w = pixels.shape[:2]  # crop the uint8 pixels before converting: the conversion is
        if h != w and h and w and card.resize == "centre_crop":  # per pixel, so this is exact
            rows, cols = _centre_square(h, w)                    # and spares the margins
            pixels = pixels[rows, cols]
    elif pixels.ndim != 2:
        raise DataError(f"expected one (H, W) or (H, W, C) frame with C in 1/3/4, got shape "
                        f"{pixels.shape}")
    return _normalised(_planes(pixels[None], card.channels == 1), resolution, card)


def _normalised(planes: np.ndarray, resolution: int, card: InputSpec) -> np.ndarray:
    """(N, C, H, W) float32 in [0, 255] -> squared, resized, as many channels as the card's
    and normalised: (N, channels, R, R)."""
    if int(resolution) <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    resolution = int(resolution)
    n, c, h, w = planes.shape
    if n == 0 or h == 0 or w == 0:
        raise DataError(f"empty image batch of shape {planes.shape}")
    if c != card.channels:  # a grey image for a colour model: its grey on every channel
        planes = np.broadcast_to(planes, (n, card.channels, h, w))
    mean = np.asarray(card.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(card.std, np.float32).reshape(1, -1, 1, 1)
    if h != w and card.resize == "letterbox":
        # The square of side max(h, w) holds the image centred on the mean colour f: resizing
        # it is f plus the image minus f through the matching rows and columns of the weights
        # (the bars contribute f alone, and every row of weights sums to 1). f is taken off
        # the small result, Wr (X - f) Wc' = Wr X Wc' - f (Wr 1)(Wc 1)', sparing a frame-sized
        # array; the rows go first, as in the square case (_resize_rows reads channels-last).
        side = max(h, w)
        weights = _resize_matrix(side, resolution, card.interpolation)
        top, left = (side - h) // 2, (side - w) // 2
        rows, cols = weights[:, top:top + h], weights[:, left:left + w]
        fill = mean * 255.0
        if _banded_pays(side, resolution, card.interpolation, planes.shape[1]):
            rows_of = (side, resolution, card.interpolation, top, h)
            x = _resize_columns(_resize_rows(planes, _band(*rows_of), _row_groups(*rows_of)),
                                _band(side, resolution, card.interpolation, left, w)) \
                - fill * np.outer(rows.sum(axis=1), cols.sum(axis=1)) + fill
        else:
            x = rows @ (planes @ cols.T - fill * cols.sum(axis=1)) + fill
    else:
        if h != w:
            rows, cols = _centre_square(h, w)
            planes = planes[:, :, rows, cols]
        side = planes.shape[-1]
        x = planes
        banded = _banded_pays(side, resolution, card.interpolation, planes.shape[1])
        if side != resolution and banded:
            band = _band(side, resolution, card.interpolation)
            x = _resize_columns(
                _resize_rows(planes, band, _row_groups(side, resolution, card.interpolation)),
                band)
        elif side != resolution:
            weights = _resize_matrix(side, resolution, card.interpolation)
            x = weights @ (planes @ weights.T)  # along the rows' pixels first, then the columns
    # planes laid out contiguously first (a channels-last view when nothing was resized): the
    # arithmetic then runs along whole rows, and its result is laid out the same way
    x = np.ascontiguousarray(x, dtype=np.float32)
    return (x * np.float32(1.0 / 255.0) - mean) / std


def preprocess_tensor(images: np.ndarray, resolution: int,
                      card: InputSpec | None = None) -> Tensor:
    """:func:`preprocess` as a torch tensor (shares the array's memory), for training code."""
    import torch  # training and profiling only: a serving process never loads torch

    return torch.from_numpy(preprocess(images, resolution, card))
