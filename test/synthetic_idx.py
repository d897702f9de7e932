"""A tiny synthetic data set in Fashion-MNIST's IDX layout, for training tests that must not
depend on the installed data set."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def write_idx_dataset(root: Path, n: int = 500, seed: int = 0) -> Path:
    """A tiny grey 28 px data set in Fashion-MNIST's IDX layout: 10 classes, each a bright
    bar at its own row, with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 + 2 * label: 5 + 2 * label, 4:24] = 220
    root.mkdir(parents=True, exist_ok=True)
    for name, array, magic in (("train-images-idx3-ubyte.gz", images, 0x0803),
                               ("train-labels-idx1-ubyte.gz", labels, 0x0801)):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(root / name, "wb") as fh:
            fh.write(header + array.tobytes())
    return root
