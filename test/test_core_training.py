"""Training smoke run on a tiny subset (seconds), resume, sampling determinism (no ROS)."""

from __future__ import annotations

import json

import pytest
import torch

from adaspring_ros.core.config import DEFAULT_SPACE
from adaspring_ros.core.data import FASHION_MNIST_DIR
from adaspring_ros.core.supernet import load_backbone
from adaspring_ros.core.training import calibration_configs, cli_main, sample_config

needs_data = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                                reason="dataset-fashion-mnist not installed")


def test_sampling_uses_only_its_generator():
    a = [sample_config(DEFAULT_SPACE, torch.Generator().manual_seed(5)) for _ in range(3)]
    torch.manual_seed(123)                                  # the global RNG must not matter
    b = [sample_config(DEFAULT_SPACE, torch.Generator().manual_seed(5)) for _ in range(3)]
    assert [c.id for c in a] == [c.id for c in b]


def test_calibration_configs_visit_every_bn_row():
    configs = calibration_configs(DEFAULT_SPACE, torch.Generator().manual_seed(0), 0)
    keys = {(c.stages[0].operator, c.stages[0].width, c.stages[0].rank, c.resolution)
            for c in configs}
    sp = DEFAULT_SPACE
    assert len(keys) == len(sp.operators) * len(sp.widths) * len(sp.ranks) * len(sp.resolutions)


@needs_data
def test_training_smoke_and_resume(tmp_path):
    out, work = tmp_path / "bb.pt", tmp_path / "run"
    common = ["--subset", "256", "--batch-size", "64", "--channels", "4,8,8",
              "--calib-random", "2", "--out", str(out), "--workdir", str(work),
              "--no-progress", "--threads", "1", "--val-size", "500"]
    assert cli_main(["--epochs", "1", "--warmup-epochs", "1"] + common) == 0
    assert cli_main(["--epochs", "2", "--warmup-epochs", "1", "--resume"] + common) == 0
    model = load_backbone(out)                              # verifies the .sha256 too
    assert model.stage_channels == (4, 8, 8)
    history = json.loads(model.meta["history"])
    assert [h["epoch"] for h in history if "epoch" in h] == [1, 2]
    assert model.meta["bn_calibrated"] is True
