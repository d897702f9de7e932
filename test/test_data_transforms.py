"""THE preprocessing (numpy): shapes, grey conversion, crop, resize and normalisation, and the
same numbers as the torch transform the backbone was trained with (no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from adaspring_ros.core.data.datasets import DataError
from adaspring_ros.core.data.transforms import (
    MEAN,
    STD,
    preprocess,
    preprocess_frame,
    preprocess_tensor,
)


def _torch_reference(grey_square: np.ndarray, resolution: int) -> np.ndarray:
    """What training computed before the preprocessing moved to numpy: torch's bilinear resize
    (antialiased when downscaling) of a (N, S, S) float32 grey batch, then normalised."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(grey_square, np.float32)).unsqueeze(1)
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                          align_corners=False, antialias=x.shape[-1] > resolution)
    return ((x * (1.0 / 255.0) - MEAN) / STD).numpy()


@pytest.mark.parametrize("side", [20, 28, 100, 480, 481])
@pytest.mark.parametrize("resolution", [16, 20, 24, 28, 40])
def test_resize_matches_the_torch_transform_of_training(side, resolution):
    images = np.random.default_rng(side).integers(0, 256, (3, side, side), dtype=np.uint8)
    ours = preprocess(images, resolution)
    reference = _torch_reference(images.astype(np.float32), resolution)
    assert ours.shape == reference.shape == (3, 1, resolution, resolution)
    # float rounding only: the same weights, summed in another order
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    if side == 28 and resolution in (16, 20, 28):   # Fashion-MNIST at the served resolutions
        np.testing.assert_allclose(ours, reference, atol=1e-6, rtol=0)


def test_a_camera_frame_matches_the_torch_transform_of_training():
    frame = np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    grey = frame[:, 80:560].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    for resolution in (16, 28):
        np.testing.assert_allclose(preprocess(frame, resolution),
                                   _torch_reference(grey[None], resolution), atol=1e-5, rtol=0)


def test_preprocess_tensor_is_the_same_array_for_training():
    torch = pytest.importorskip("torch")
    images = np.random.default_rng(3).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    x = preprocess_tensor(images, 20)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert np.array_equal(x.numpy(), preprocess(images, 20))


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1), (28, 28, 3), (28, 28, 4),
                                   (5, 28, 28), (5, 28, 28, 3), (480, 640, 3), (480, 640)])
@pytest.mark.parametrize("resolution", [16, 28])
def test_preprocess_shapes(shape, resolution):
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    x = preprocess(images, resolution)
    n = shape[0] if len(shape) == 4 or (len(shape) == 3 and shape[-1] not in (1, 3, 4)) else 1
    assert x.shape == (n, 1, resolution, resolution) and x.dtype == np.float32
    assert x.flags.c_contiguous


@pytest.mark.parametrize("shape", [(1, 5, 3), (2, 7, 3), (3, 3, 4), (4, 9), (480, 640, 3)])
def test_a_camera_frame_is_one_image_whatever_its_size(shape):
    """A frame of a few rows is still one frame (the batch heuristic of preprocess would read
    a (2, 7, 3) colour frame as two grey images of 7x3)."""
    frame = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    x = preprocess_frame(frame, 16)
    assert x.shape == (1, 1, 16, 16)
    np.testing.assert_allclose(x, preprocess(frame[None], 16), rtol=0, atol=1e-6)
    with pytest.raises(DataError, match="one"):
        preprocess_frame(np.zeros((2, 4, 4, 3), np.uint8), 16)


def test_preprocess_grey_rgb_rgba_agree_and_normalise():
    grey = np.full((28, 28), 128, dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.zeros((28, 28, 1), np.uint8)], axis=2)  # alpha ignored
    a, b, c = preprocess(grey, 28), preprocess(rgb, 28), preprocess(rgba, 28)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-6)
    np.testing.assert_allclose(a, np.full_like(a, (128 / 255 - MEAN) / STD), rtol=1e-6)


def test_preprocess_uses_luma_and_antialiases():
    red = np.zeros((28, 28, 3), np.uint8)
    red[..., 0] = 255
    assert float(preprocess(red, 28).mean()) == pytest.approx((0.299 - MEAN) / STD, abs=1e-3)
    # A one-pixel checkerboard downscaled 8x must average to grey, not alias to black/white.
    board = ((np.indices((480, 640)).sum(0) % 2) * 255).astype(np.uint8)
    x = preprocess(board, 20) * STD + MEAN
    assert float(x.std()) < 0.02 and abs(float(x.mean()) - 0.5) < 0.02


def test_preprocess_rejects_bad_input():
    with pytest.raises(DataError, match="uint8"):
        preprocess(np.zeros((28, 28), np.float32), 28)
    with pytest.raises(DataError, match="shape"):
        preprocess(np.zeros((2, 28, 28, 5), np.uint8), 28)
    with pytest.raises(DataError, match="empty"):
        preprocess(np.zeros((0, 28, 28), np.uint8), 28)
    with pytest.raises(ValueError):
        preprocess(np.zeros((28, 28), np.uint8), 0)


@pytest.mark.parametrize("shape", [(480, 640, 3), (640, 480, 4), (481, 640, 3), (480, 640, 1)])
def test_a_camera_frame_equals_its_centre_square_bit_for_bit(shape):
    # The crop happens on the uint8 pixels before the grey conversion (cheaper for a 640x480
    # frame); grey is per pixel, so the result must not change at all.
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    h, w = shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(frame[top:top + side, left:left + side])
    for resolution in (16, 28):
        assert np.array_equal(preprocess(frame, resolution), preprocess(square, resolution))
