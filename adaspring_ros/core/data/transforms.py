"""THE preprocessing: uint8 image(s) in, the backbone's normalised float32 input out.

Training, profiling and the live perception node all go through :func:`preprocess` (a camera
frame through :func:`preprocess_frame`, the same conversion of exactly one image), so a frame
on the robot is converted exactly like the training images were: grey, centre square crop,
bilinear resize to the variant's resolution (antialiased when downscaling), Fashion-MNIST
normalisation. It is numpy only, so a serving process needs no torch; training wraps the array
with ``torch.from_numpy`` (:func:`preprocess_tensor`).

The resize computes what ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False, antialias=downscaling)`` computes (the function the backbone was trained
with; test/test_data_transforms.py holds it to that within float rounding): a separable
resampling whose weights are the triangle filter, stretched by the scale factor when
downscaling (Pillow's and torch's antialiasing), written as two small matrix products.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from adaspring_ros.core.data.datasets import DataError

if TYPE_CHECKING:  # torch only for the training side's tensor form
    from torch import Tensor

__all__ = ["MEAN", "STD", "LUMA", "preprocess", "preprocess_frame", "preprocess_tensor"]

# Pixel statistics of the Fashion-MNIST train split (after scaling to [0, 1]).
MEAN = 0.2860
STD = 0.3530
# ITU-R BT.601 luma weights, the same as Pillow's "L" mode and OpenCV's RGB2GRAY.
LUMA = (0.299, 0.587, 0.114)


def _as_batch(images: np.ndarray) -> np.ndarray:
    """uint8 image(s) -> (N, H, W) grey float32, in [0, 255]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"expected uint8 images, got dtype {images.dtype}")
    if images.ndim == 2:                                    # (H, W)
        return images[None].astype(np.float32)
    if images.ndim == 3 and images.shape[-1] in (1, 3, 4) and images.shape[-1] < images.shape[0]:
        images = images[None]                               # (H, W, C)
    elif images.ndim == 3:                                  # (N, H, W)
        return images.astype(np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"expected (H, W), (H, W, C), (N, H, W) or (N, H, W, C) with C in 1/3/4, "
            f"got shape {images.shape}"
        )
    if images.shape[-1] == 1:
        return images[..., 0].astype(np.float32)
    rgb, luma = images[..., :3], LUMA                       # RGBA: alpha is dropped
    if rgb.strides[-1] < 0:  # a BGR camera frame seen as RGB through a reversed view: read its
        rgb, luma = rgb[..., ::-1], LUMA[::-1]  # bytes in memory order (~3x faster here)
    return rgb.astype(np.float32) @ np.asarray(luma, dtype=np.float32)


def _centre_square(h: int, w: int) -> tuple[slice, slice]:
    """(rows, columns) of the centred square of an h x w image."""
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return slice(top, top + side), slice(left, left + side)


@lru_cache(maxsize=64)
def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float32 weights of a bilinear resize along one axis.

    Downscaling: the triangle filter widened by the scale (support = scale), each row
    normalised to sum 1, as torch's antialiased kernel and Pillow compute it. Upscaling: plain
    bilinear interpolation with pixel centres aligned (align_corners=False), the source index
    clamped at 0. Scalars are float32, as torch computes them for a float32 image.
    """
    f32 = np.float32
    scale = f32(size_in) / f32(size_out)
    out = np.zeros((size_out, size_in), np.float32)
    if size_in > size_out:
        support = scale
        max_taps = int(np.ceil(support)) * 2 + 1
        invscale = f32(1.0 / float(scale))
        for i in range(size_out):
            center = f32(float(scale) * (i + 0.5))
            xmin = max(int(float(center - support) + 0.5), 0)
            end = min(int(float(center + support) + 0.5), size_in)
            taps = min(max(end - xmin, 0), max_taps)
            offset = np.arange(xmin, xmin + taps, dtype=np.float32) - center
            w = f32(1.0) - np.abs(((offset.astype(np.float64) + 0.5) * float(invscale))
                                  .astype(np.float32))
            w = np.maximum(w, f32(0.0))
            total = np.cumsum(w, dtype=np.float32)[-1] if taps else f32(0.0)
            out[i, xmin:xmin + taps] = w / total if total != 0 else w
    else:
        for i in range(size_out):
            src = max(float(scale * f32(i + 0.5) - f32(0.5)), 0.0)
            i0 = int(src)
            i1 = i0 + (1 if i0 < size_in - 1 else 0)
            frac = f32(min(max(f32(src) - f32(i0), f32(0.0)), f32(1.0)))
            out[i, i0] += f32(1.0) - frac
            out[i, i1] += frac
    out.flags.writeable = False  # shared by every call (cached)
    return out


def preprocess(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 image(s) -> normalised float32 array (N, 1, resolution, resolution).

    Accepts (H, W) grey, (H, W, C) with C in {1, 3 (RGB), 4 (RGBA)}, or batches (N, H, W[, C]);
    a 3-d array is one colour image when its last axis is a channel count smaller than its
    first, else a grey batch (a camera frame of a few rows: :func:`preprocess_frame`).
    Colour is converted to grey (BT.601), a non-square frame is centre-cropped to a square (so a
    640x480 camera frame keeps its aspect ratio), then resized with bilinear interpolation,
    antialiased when downscaling, and normalised with the Fashion-MNIST mean/std.
    """
    images = np.asarray(images)
    if images.ndim == 3 and images.shape[-1] in (1, 3, 4) and images.shape[-1] < images.shape[0]:
        return preprocess_frame(images, resolution)
    return _normalised(_as_batch(images), resolution)


def preprocess_frame(pixels: np.ndarray, resolution: int) -> np.ndarray:
    """One camera frame, (H, W) grey or (H, W, C) with C in {1, 3, 4}, as :func:`preprocess`
    converts it -> (1, 1, resolution, resolution), whatever its size."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] in (1, 3, 4):
        h, w = pixels.shape[:2]  # crop the uint8 pixels before converting: grey is per pixel,
        if h != w and h and w:   # so this is exact and spares converting the frame's margins
            rows, cols = _centre_square(h, w)
            pixels = pixels[rows, cols]
    elif pixels.ndim != 2:
        raise DataError(f"expected one (H, W) or (H, W, C) frame with C in 1/3/4, got shape "
                        f"{pixels.shape}")
    return _normalised(_as_batch(pixels[None]), resolution)


def _normalised(grey: np.ndarray, resolution: int) -> np.ndarray:
    """(N, H, W) grey float32 in [0, 255] -> cropped, resized and normalised (N, 1, R, R)."""
    if int(resolution) <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    resolution = int(resolution)
    n, h, w = grey.shape
    if n == 0 or h == 0 or w == 0:
        raise DataError(f"empty image batch of shape {grey.shape}")
    if h != w:
        rows, cols = _centre_square(h, w)
        grey = grey[:, rows, cols]
    side = grey.shape[-1]
    if side != resolution:
        weights = _resize_matrix(side, resolution)
        grey = weights @ (grey @ weights.T)  # along the rows' pixels first, then the columns
    x = grey[:, None]
    return np.ascontiguousarray((x * (1.0 / 255.0) - MEAN) / STD, dtype=np.float32)


def preprocess_tensor(images: np.ndarray, resolution: int) -> Tensor:
    """:func:`preprocess` as a torch tensor (shares the array's memory), for training code."""
    import torch  # training and profiling only: a serving process never loads torch

    return torch.from_numpy(preprocess(images, resolution))
