"""Datasets and the one preprocessing function (no ROS)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from adaspring_ros.core.data.datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    MEAN,
    STD,
    DataError,
    load_fashion_mnist,
    load_image_folder,
    preprocess,
    read_idx,
    train_val_split,
)


def _write_idx(path, array: np.ndarray, type_code: int = 0x08, extra: bytes = b"") -> None:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes() + extra)


def test_read_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)


def test_read_idx_rejects_bad_files(tmp_path):
    a = np.zeros((2, 3), dtype=np.uint8)
    _write_idx(tmp_path / "long.gz", a, extra=b"\x00")
    with pytest.raises(DataError, match="holds"):
        read_idx(tmp_path / "long.gz")
    _write_idx(tmp_path / "float.gz", a, type_code=0x0D)
    with pytest.raises(DataError, match="not supported"):
        read_idx(tmp_path / "float.gz")
    with gzip.open(tmp_path / "magic.gz", "wb") as fh:
        fh.write(b"\x12\x34\x08\x01\x00\x00\x00\x00")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic.gz")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing.gz")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_test_split():
    test = load_fashion_mnist("test")
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == np.uint8
    assert test.classes == FASHION_MNIST_CLASSES and set(np.unique(test.labels)) == set(range(10))
    with pytest.raises(ValueError):
        load_fashion_mnist("validation")


def test_train_val_split_is_deterministic_and_disjoint():
    a_train, a_val = train_val_split(1000, 100, seed=3)
    b_train, b_val = train_val_split(1000, 100, seed=3)
    np.testing.assert_array_equal(a_val, b_val)
    assert len(a_val) == 100 and len(a_train) == 900
    assert not set(a_train) & set(a_val)
    with pytest.raises(ValueError):
        train_val_split(10, 10)


def test_image_folder(tmp_path):
    from PIL import Image

    for name, value in (("cat", 10), ("dog", 200)):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), (value, value, value)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = load_image_folder(tmp_path)
    assert ds.classes == ("cat", "dog") and ds.images.shape == (4, 28, 28)
    assert list(ds.labels) == [0, 0, 1, 1]
    with pytest.raises(DataError):
        load_image_folder(tmp_path / "nothing")


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1), (28, 28, 3), (28, 28, 4),
                                   (5, 28, 28), (5, 28, 28, 3), (480, 640, 3), (480, 640)])
@pytest.mark.parametrize("resolution", [16, 28])
def test_preprocess_shapes(shape, resolution):
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    x = preprocess(images, resolution)
    n = shape[0] if len(shape) == 4 or (len(shape) == 3 and shape[-1] not in (1, 3, 4)) else 1
    assert x.shape == (n, 1, resolution, resolution) and x.dtype == torch.float32


def test_preprocess_grey_rgb_rgba_agree_and_normalise():
    grey = np.full((28, 28), 128, dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.zeros((28, 28, 1), np.uint8)], axis=2)  # alpha ignored
    a, b, c = preprocess(grey, 28), preprocess(rgb, 28), preprocess(rgba, 28)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a, torch.full_like(a, (128 / 255 - MEAN) / STD))


def test_preprocess_uses_luma_and_antialiases():
    red = np.zeros((28, 28, 3), np.uint8)
    red[..., 0] = 255
    torch.testing.assert_close(preprocess(red, 28).mean(), torch.tensor((0.299 - MEAN) / STD),
                               rtol=1e-3, atol=1e-3)
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
        assert torch.equal(preprocess(frame, resolution), preprocess(square, resolution))


def _card(**fields):
    from adaspring_ros.core.model.card import FASHION_MNIST_CARD, ModelCard

    base = dict(channels=3, channel_order="RGB", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5),
                resolutions=(16, 28), classes=("a", "b"))
    return FASHION_MNIST_CARD if fields.get("grey") else ModelCard(**{**base, **fields})


def test_preprocess_for_a_colour_card_keeps_rgb_and_its_statistics():
    card = _card()
    pixel = np.asarray((255, 102, 0), np.uint8)
    frame = np.broadcast_to(pixel, (30, 40, 3)).copy()
    x = preprocess(frame, 16, card)
    assert x.shape == (1, 3, 16, 16)
    expected = [(1.0 - 0.5) / 0.2, (0.4 - 0.4) / 0.25, (0.0 - 0.3) / 0.5]
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.tensor(expected), rtol=0, atol=1e-5)
    rgba = np.concatenate([frame, np.zeros((30, 40, 1), np.uint8)], axis=2)
    torch.testing.assert_close(preprocess(rgba, 16, card), x)          # alpha dropped
    grey = np.full((5, 28, 28), 51, np.uint8)                           # grey: replicated
    g = preprocess(grey, 28, card)
    assert g.shape == (5, 3, 28, 28)
    torch.testing.assert_close(g[:, 0] * 0.2 + 0.5, g[:, 2] * 0.5 + 0.3)


def test_preprocess_letterboxes_with_the_mean_colour_when_the_card_says_so():
    frame = np.zeros((10, 40, 3), np.uint8)                             # a black strip
    box = preprocess(frame, 40, _card(resize="letterbox", interpolation="nearest"))
    assert box[..., :15, :].abs().max() < 1e-5 and box[..., 25:, :].abs().max() < 1e-5  # mean
    black = torch.tensor(-0.5 / 0.2)
    torch.testing.assert_close(box[:, 0, 15:25], black.expand(1, 10, 40))   # the strip
    crop = preprocess(frame, 40, _card(interpolation="nearest"))
    torch.testing.assert_close(crop[:, 0], black.expand(1, 40, 40))         # all strip


def test_the_fashion_mnist_card_preprocesses_bit_for_bit_as_no_card():
    frames = np.random.default_rng(2).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    for resolution in (16, 28):
        assert torch.equal(preprocess(frames, resolution, _card(grey=True)),
                           preprocess(frames, resolution))
