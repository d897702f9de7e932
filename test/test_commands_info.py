"""`adaspring info` (commands/info.py): the card of a checkpoint or a table as JSON, verified;
files of neither kind get one line on stderr and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaspring_ros.commands.info import cli_main
from adaspring_ros.core.model.card import FASHION_MNIST_CARD, ModelCard
from adaspring_ros.core.model.checkpoint import save_backbone, write_checksum
from adaspring_ros.core.model.config import DEFAULT_SPACE
from adaspring_ros.core.model.supernet import build_backbone
from adaspring_ros.core.paths import default_backbone, default_profile_table

REPO = Path(__file__).resolve().parent.parent
CARD_KEYS = {"channels", "channel_order", "mean", "std", "resolutions", "classes", "resize",
             "interpolation", "mirror_symmetric", "data"}
COLOUR = ModelCard(channels=3, channel_order="RGB", mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2),
                   resolutions=DEFAULT_SPACE.resolutions, classes=("bird", "fruit", "tool"),
                   resize="letterbox", mirror_symmetric=False, data="a test folder")


def info(capsys, path) -> tuple[int, dict | None, str]:
    code = cli_main([str(path)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.fixture(scope="module")
def colour_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("info") / "colour.pt"
    model = build_backbone(stage_channels=(4, 8, 8), classes=COLOUR.classes, in_channels=3)
    digest = save_backbone(model, path, card=COLOUR)
    return path, digest


def test_a_fresh_colour_checkpoint(capsys, colour_checkpoint):
    path, digest = colour_checkpoint
    code, report, err = info(capsys, path)
    assert code == 0 and not err
    assert ModelCard.from_dict({k: report[k] for k in CARD_KEYS}) == COLOUR
    assert report["kind"] == "checkpoint" and report["format_version"] == 2
    assert report["sha256"] == digest and report["verified"] and report["card_stored"]


def test_a_checkpoint_without_its_checksum_is_reported_unverified(capsys, colour_checkpoint,
                                                                   tmp_path):
    copy = tmp_path / "copy.pt"
    copy.write_bytes(colour_checkpoint[0].read_bytes())
    code, report, err = info(capsys, copy)
    assert code == 0 and report["verified"] is False and "copy.pt.sha256 is missing" in err


def test_the_shipped_pre_card_files(capsys):
    backbone, table = default_backbone(), default_profile_table()
    if not backbone.exists() or not table.exists():
        pytest.skip("no shipped backbone in this checkout")
    code, report, _ = info(capsys, backbone)
    assert code == 0 and report["format_version"] == 1 and not report["card_stored"]
    assert report["channels"] == 1 and report["classes"] == list(FASHION_MNIST_CARD.classes)
    assert report["verified"] and report["sha256"] == (
        backbone.with_name(backbone.name + ".sha256").read_text().split()[0])
    code, report, _ = info(capsys, table)
    assert code == 0 and report["kind"] == "profile table" and report["format_version"] == 1
    assert report["resolutions"] == [16, 20, 24, 28] and report["mean"] == [0.286]
    assert report["engine"]["name"] == "onnxruntime" and report["variants"] > 100
    assert report["measured"] == ["accuracy", "latency"]   # a table that does not say: both
    assert report["cold_start_ms"] > 0  # measured here by adaspring profile --cold-start-only


def test_a_table_with_a_card_through_the_command_line(tmp_path):
    from tools.synthetic_tables import synthetic_table

    table = synthetic_table(3)
    table.card = COLOUR
    path = tmp_path / "t.json"
    table.save(path)
    done = subprocess.run([sys.executable, "-m", "adaspring_ros.cli", "info", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["channels"] == 3 and report["classes"] == ["bird", "fruit", "tool"]
    assert report["format_version"] == 2 and report["variants"] == 3
    assert report["cold_start_ms"] is None  # not measured


@pytest.mark.parametrize("damage", ["truncated", "other-torch-file", "stale-sum", "text",
                                    "bad-json", "missing"])
def test_corrupt_or_unknown_files_give_one_line_and_exit_2(capsys, colour_checkpoint, tmp_path,
                                                           damage):
    good = colour_checkpoint[0].read_bytes()
    path = tmp_path / "damaged.pt"
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
        write_checksum(path)
    elif damage == "other-torch-file":
        torch.save({"weights": torch.zeros(3)}, path)
        write_checksum(path)
    elif damage == "stale-sum":
        path.write_bytes(good + b"x")
        (tmp_path / "damaged.pt.sha256").write_text(
            colour_checkpoint[0].with_name("colour.pt.sha256").read_text())
    elif damage == "text":
        path.write_text("hello\n")
    elif damage == "bad-json":
        path.write_text('{"schema_version": 2, "entries": [')
    code, report, err = info(capsys, path)
    assert code == 2 and report is None
    assert err.count("\n") == 1 and err.startswith("adaspring info: ") and "damaged.pt" in err
