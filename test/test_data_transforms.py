"""THE preprocessing (numpy): shapes, grey conversion, crop, resize and normalisation, and the
same numbers as the torch transform the backbone was trained with (no ROS); driven by the model
card: colour, letterbox, per-channel statistics, interpolation, and the grey Fashion-MNIST
recipe bit for bit as it was before cards."""

from __future__ import annotations

from dataclasses import replace

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
from adaspring_ros.core.model.card import FASHION_MNIST_CARD, ModelCard

COLOUR_CARD = ModelCard(channels=3, channel_order="RGB", mean=(0.5, 0.4, 0.3),
                        std=(0.25, 0.2, 0.3), resolutions=(32, 40, 48), classes=("a", "b"))


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


# -- the card ------------------------------------------------------------------------------------
def _grey_recipe_before_cards(images: np.ndarray, resolution: int) -> np.ndarray:
    """The preprocessing as it was before model cards (grey, centre crop, bilinear resize
    antialiased when downscaling, Fashion-MNIST's mean/std), its arithmetic copied verbatim:
    the Fashion-MNIST card must give these numbers bit for bit."""
    f32 = np.float32
    x = np.asarray(images)
    if x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (1, 3, 4) and x.shape[-1] < x.shape[0]):
        x = x[None]
    if x.ndim == 4:
        x = x[..., 0] if x.shape[-1] == 1 else x[..., :3].astype(f32) @ np.asarray(
            (0.299, 0.587, 0.114), f32)
    grey = x.astype(f32)
    h, w = grey.shape[1:]
    side = min(h, w)
    grey = grey[:, (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    if side != resolution:
        scale = f32(side) / f32(resolution)
        m = np.zeros((resolution, side), f32)
        for i in range(resolution):
            if side > resolution:
                center = f32(float(scale) * (i + 0.5))
                xmin = max(int(float(center - scale) + 0.5), 0)
                taps = min(max(min(int(float(center + scale) + 0.5), side) - xmin, 0),
                           int(np.ceil(scale)) * 2 + 1)
                offset = np.arange(xmin, xmin + taps, dtype=f32) - center
                wt = f32(1.0) - np.abs(((offset.astype(np.float64) + 0.5)
                                        * float(f32(1.0 / float(scale)))).astype(f32))
                wt = np.maximum(wt, f32(0.0))
                m[i, xmin:xmin + taps] = wt / np.cumsum(wt, dtype=f32)[-1]
            else:
                src = max(float(scale * f32(i + 0.5) - f32(0.5)), 0.0)
                i0 = int(src)
                frac = f32(min(max(f32(src) - f32(i0), f32(0.0)), f32(1.0)))
                m[i, i0] += f32(1.0) - frac
                m[i, i0 + (1 if i0 < side - 1 else 0)] += frac
        grey = m @ (grey @ m.T)
    return np.ascontiguousarray((grey[:, None] * (1.0 / 255.0) - MEAN) / STD, dtype=np.float32)


@pytest.mark.parametrize("shape", [(8, 28, 28), (480, 640, 3), (480, 640), (641, 479, 4),
                                   (3, 13, 13), (28, 28, 1)])
@pytest.mark.parametrize("resolution", [16, 20, 24, 28, 40])
def test_the_fashion_mnist_card_gives_the_numbers_of_before_bit_for_bit(shape, resolution):
    images = np.random.default_rng(37).integers(0, 256, shape, dtype=np.uint8)
    before = _grey_recipe_before_cards(images, resolution)
    assert np.array_equal(preprocess(images, resolution, FASHION_MNIST_CARD), before)
    assert np.array_equal(preprocess(images, resolution), before)  # no card: the same recipe


def _torch_card_reference(images: np.ndarray, resolution: int, card: ModelCard) -> np.ndarray:
    """The card's recipe in torch, step by step on the whole image: channels, the square (crop,
    or the image on a square of the mean colour), F.interpolate, per-channel normalisation."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x = np.asarray(images)
    if x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (1, 3, 4) and x.shape[-1] < x.shape[0]):
        x = x[None]
    x = (x[..., None] if x.ndim == 3 else x)[..., :3].astype(np.float32)
    if card.channels == 1 and x.shape[-1] == 3:
        x = (x @ np.asarray((0.299, 0.587, 0.114), np.float32))[..., None]
    x = np.repeat(x, card.channels // x.shape[-1], axis=-1)
    n, h, w, c = x.shape
    mean = np.asarray(card.mean, np.float32)
    if h != w and card.resize == "centre_crop":
        side = min(h, w)
        x = x[:, (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    elif h != w:
        side = max(h, w)
        square = np.empty((n, side, side, c), np.float32)
        square[...] = mean * 255.0
        square[:, (side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = x
        x = square
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    if t.shape[-1] != resolution:
        smooth = card.interpolation != "nearest"
        t = F.interpolate(t, size=(resolution, resolution), mode=card.interpolation,
                          align_corners=False if smooth else None,
                          antialias=smooth and t.shape[-1] > resolution)
    stats = [torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (mean, card.std)]
    return ((t * (1.0 / 255.0) - stats[0]) / stats[1]).numpy()


@pytest.mark.parametrize("card", [FASHION_MNIST_CARD, COLOUR_CARD], ids=["grey", "colour"])
@pytest.mark.parametrize("resize", ["centre_crop", "letterbox"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_the_card_recipe_matches_torch(card, resize, interpolation):
    card = replace(card, resize=resize, interpolation=interpolation)
    rng = np.random.default_rng(len(resize) + len(interpolation))
    for shape in [(480, 640, 3), (640, 480), (30, 17, 4), (5, 28, 28), (3, 20, 20, 3), (13, 13)]:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        for resolution in (16, 24, 40):
            ours = preprocess(images, resolution, card)
            reference = _torch_card_reference(images, resolution, card)
            assert ours.shape == reference.shape
            assert ours.shape[1:] == (card.channels, resolution, resolution)
            np.testing.assert_allclose(ours, reference, atol=2e-5, rtol=0,
                                       err_msg=f"{shape} at {resolution}")


def test_a_colour_model_takes_grey_frames_replicated_and_keeps_colour():
    grey = np.random.default_rng(4).integers(0, 256, (480, 640), dtype=np.uint8)
    as_rgb = np.repeat(grey[..., None], 3, axis=2)
    x = preprocess_frame(grey, 32, COLOUR_CARD)
    assert x.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(x, preprocess_frame(as_rgb, 32, COLOUR_CARD), atol=1e-6, rtol=0)
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 255
    planes = preprocess(red, 40, COLOUR_CARD)
    expected = [(1.0 - 0.5) / 0.25, (0.0 - 0.4) / 0.2, (0.0 - 0.3) / 0.3]
    np.testing.assert_allclose(planes[0].mean(axis=(1, 2)), expected, atol=1e-5)


def test_letterbox_keeps_the_whole_frame_on_bars_of_the_mean_colour():
    frame = np.full((40, 80, 3), 255, np.uint8)  # white, twice as wide as high
    card = replace(COLOUR_CARD, resize="letterbox")
    x = preprocess_frame(frame, 40, card)[0]
    white = (1.0 - np.asarray(card.mean)) / np.asarray(card.std)
    # rows 10..29 are the frame, the bars above and below are the mean colour: exactly 0
    np.testing.assert_allclose(x[:, 12:28].mean(axis=(1, 2)), white, atol=1e-5)
    np.testing.assert_allclose(x[:, :9], 0.0, atol=1e-5)
    np.testing.assert_allclose(x[:, 31:], 0.0, atol=1e-5)
    cropped = preprocess_frame(frame, 40, COLOUR_CARD)[0]   # centre crop: all white
    np.testing.assert_allclose(cropped.mean(axis=(1, 2)), white, atol=1e-5)


@pytest.mark.parametrize("resize", ["centre_crop", "letterbox"])
@pytest.mark.parametrize("resolution", [40, 56, 64, 96])
@pytest.mark.parametrize("shape", [(480, 640), (720, 1280)])
def test_the_banded_resize_of_a_colour_frame_is_the_dense_one(resize, resolution, shape):
    """A colour frame goes through the band of each row's taps, its output rows in groups
    whose taps step evenly (one batched product each); it must give the dense products'
    numbers up to float rounding, whatever the ratio of the sides (480/56 groups rows by 7,
    720/96 by 2)."""
    from adaspring_ros.core.data import transforms

    card = replace(COLOUR_CARD, resolutions=(resolution,), resize=resize,
                   interpolation="bilinear")
    frame = np.random.default_rng(5).integers(0, 256, (*shape, 3), dtype=np.uint8)
    h, w = shape
    assert transforms._banded_pays(w if resize == "letterbox" else h, resolution, "bilinear", 3)
    planes = transforms._planes(frame[None], False)
    if resize == "centre_crop":
        planes = planes[:, :, :, (w - h) // 2:(w - h) // 2 + h]
    side, (h, w) = max(planes.shape[-2:]), planes.shape[-2:]
    weights = transforms._resize_matrix(side, resolution, "bilinear")
    rows = weights[:, (side - h) // 2:(side - h) // 2 + h]
    cols = weights[:, (side - w) // 2:(side - w) // 2 + w]
    fill = np.asarray(card.mean, np.float32).reshape(1, -1, 1, 1) * 255.0
    dense = rows @ (planes @ cols.T - fill * cols.sum(axis=1)) + fill
    std = np.asarray(card.std, np.float32).reshape(1, -1, 1, 1)
    expected = (dense / 255.0 - fill / 255.0) / std
    np.testing.assert_allclose(preprocess(frame, resolution, card), expected, atol=1e-4,
                               rtol=0)


@pytest.mark.parametrize("resize", ["centre_crop", "letterbox"])
@pytest.mark.parametrize("resolution", [40, 96])
def test_every_memory_layout_of_the_same_pixels_gives_the_same_input(resize, resolution):
    """RGB pixels side by side (or BGR read backwards) are converted channels-last, RGBA and
    strided pixels as planes: the network must see the same numbers either way, for frames
    and for batches."""
    card = replace(COLOUR_CARD, resolutions=(resolution,), resize=resize)
    rgba = np.random.default_rng(7).integers(0, 256, (480, 640, 4), dtype=np.uint8)
    rgb = np.ascontiguousarray(rgba[..., :3])
    reference = preprocess(rgb, resolution, card)
    wide = np.zeros((480, 1280, 3), np.uint8)
    wide[:, ::2] = rgb                                  # every other pixel: strided rows
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    for same in (rgba, wide[:, ::2], np.asfortranarray(rgb), bgr[..., ::-1]):
        np.testing.assert_allclose(preprocess(same, resolution, card), reference,
                                   atol=1e-5, rtol=0)
    batch = np.stack([rgb[:96, :96], rgb[100:196, 200:296]])
    one_by_one = np.concatenate([preprocess(b, resolution, card) for b in batch])
    np.testing.assert_allclose(preprocess(batch, resolution, card), one_by_one, atol=1e-5,
                               rtol=0)
    np.testing.assert_allclose(preprocess(np.asfortranarray(batch), resolution, card),
                               one_by_one, atol=1e-5, rtol=0)
    np.testing.assert_allclose(preprocess(np.ascontiguousarray(batch[..., ::-1])[..., ::-1],
                                          resolution, card), one_by_one, atol=1e-5, rtol=0)
