"""A profile in two stages (core/offline/latency.py, ``adaspring profile --accuracy-only`` and
``--latency-only``): the latency stage reads no data, refuses a table of another backbone,
engine or model card, and the two stages give the accuracies of a one-shot profile."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adaspring_ros.commands.profile import cli_main as profile_main
from adaspring_ros.core.data.datasets import FASHION_MNIST_DIR
from adaspring_ros.core.model.card import ModelCard
from adaspring_ros.core.model.checkpoint import load_backbone, save_backbone, sha256_of
from adaspring_ros.core.model.config import CompressionConfig, SearchSpace
from adaspring_ros.core.model.engine import make_engine
from adaspring_ros.core.model.profile_table import ProfileEntry, ProfileError, ProfileTable
from adaspring_ros.core.model.supernet import build_backbone
from adaspring_ros.core.offline.latency import noise_frame
from adaspring_ros.core.offline.profiler import count_macs

SPACE = SearchSpace(widths=(0.5, 1.0), depths=(1,), ranks=(0.5, 1.0), resolutions=(16, 20))
CONFIGS = ("r16-w50d1sk100f-w50d1ck100f-w50d1ck100f",
           "r20-w100d1ck100q-w50d1ck50q-w100d1ck100q",    # static int8 in onnxruntime
           "r20-w100d1ck100f-w100d1ck100f-w100d1ck100f")
FAST = ["--repeats", "3", "--warmup", "1", "--cold-start-rounds", "2", "--no-progress"]
needs_data = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                                reason="dataset-fashion-mnist not installed")


def _backbone(seed: int):
    torch.manual_seed(seed)
    return build_backbone(SPACE, stage_channels=(8, 12, 16)).eval()


@pytest.fixture()
def fleet(tmp_path):
    """A tiny backbone and a hand-made accuracy table of it (int8 ranges calibrated on noise):
    what a robot receives. Returns (backbone path, accuracy table path, the table)."""
    bb = tmp_path / "bb.pt"
    digest = save_backbone(_backbone(0), bb)
    model = load_backbone(bb)   # with its model card
    engine = make_engine("onnxruntime")
    entries = []
    for i, cid in enumerate(CONFIGS):
        config = CompressionConfig.from_id(cid)
        net = model.materialise(config)
        frames = np.concatenate([noise_frame(model.card, config.resolution, s) for s in range(8)])
        ranges = engine.calibrate(net, frames)
        entries.append(ProfileEntry(
            config=config, accuracy=0.5 + 0.1 * i, latency_ms_p50=0.0, latency_ms_p95=0.0,
            macs=count_macs(net, config.resolution), params=sum(p.numel() for p in
                                                                  net.parameters()),
            storage_bytes=net.storage_bytes, peak_memory_mb=0.1, energy_mj=0.0,
            int8_ranges={k: tuple(v) for k, v in ranges.items()}))
    table = ProfileTable(space=SPACE, entries=entries, backbone_sha256=digest,
                         engine=engine.info.to_dict(), card=model.card, measured=("accuracy",),
                         device={"machine": "the workstation"},
                         meta={"pareto_front": list(CONFIGS[1:]), "test_images": 10000,
                               "created": "then"})
    path = tmp_path / "acc.json"
    table.save(path)
    return bb, path, table


def latency_only(bb, acc, out, *extra: str) -> int:
    return profile_main(["--latency-only", "--accuracy-from", str(acc), "--backbone", str(bb),
                         "--out", str(out), "--data", str(out.parent / "no-dataset-here"),
                         *FAST, *extra])


def test_noise_frames_follow_the_card():
    colour = ModelCard(channels=3, channel_order="RGB", mean=(0.5, 0.4, 0.3),
                       std=(0.25, 0.2, 0.2), resolutions=(32, 48), classes=("a", "b"))
    x = noise_frame(colour, 48, seed=1)
    assert x.shape == (1, 3, 48, 48) and x.dtype == np.float32
    assert np.array_equal(x, noise_frame(colour, 48, seed=1))
    assert not np.array_equal(x, noise_frame(colour, 48, seed=2))
    # pixels 0..255 normalised per channel: channel c spans (0 - mean) / std .. (1 - mean) / std
    for c in range(3):
        lo, hi = (0 - colour.mean[c]) / colour.std[c], (1 - colour.mean[c]) / colour.std[c]
        assert lo - 1e-5 <= x[0, c].min() < lo + 0.1 and hi - 0.1 < x[0, c].max() <= hi + 1e-5


def test_latency_only_times_every_variant_without_data(fleet, tmp_path, capsys):
    bb, acc, before = fleet
    out = tmp_path / "table_robot.json"
    assert latency_only(bb, acc, out) == 0
    table = ProfileTable.load(out)   # the runtime loader takes it: it holds latencies
    assert table.measured == ("accuracy", "latency")
    assert sorted(e.id for e in table.entries) == sorted(CONFIGS)
    assert before.get(CONFIGS[1]).int8_ranges      # copied below, as the robot serves them
    for old in before.entries:
        new = table.get(old.id)
        assert (new.accuracy, new.macs, new.params, new.storage_bytes, new.int8_ranges) == (
            old.accuracy, old.macs, old.params, old.storage_bytes, old.int8_ranges)
        assert 0 < new.latency_ms_p50 <= new.latency_ms_p95 and new.energy_mj > 0
    assert table.backbone_sha256 == before.backbone_sha256 and table.card == before.card
    source = table.meta["accuracy_from"]
    assert source["sha256"] == sha256_of(acc) and source["machine"] == "the workstation"
    assert table.meta["test_images"] == 10000 and table.meta["created"] != "then"
    assert table.device["machine"] != "the workstation" and table.engine_name == "onnxruntime"
    assert table.cold_start_ms >= 0 and "sleep" in table.meta["cold_start_method"]
    assert out.with_name(out.name + ".sha256").read_text().split()[0] == sha256_of(out)
    assert not (tmp_path / "pareto.png").exists()   # no plot unless --plot names one
    # --front-only: the front of the machine that measured the accuracies
    assert latency_only(bb, acc, tmp_path / "front.json", "--front-only") == 0
    front = ProfileTable.load(tmp_path / "front.json")
    assert sorted(e.id for e in front.entries) == sorted(CONFIGS[1:])
    assert front.meta["variants_timed"] == "pareto front"
    assert "warning" not in capsys.readouterr().err


def test_cold_start_only_adds_the_term_and_leaves_every_other_byte(fleet, tmp_path, capsys):
    bb, acc, _ = fleet
    out = tmp_path / "robot.json"
    assert latency_only(bb, acc, out) == 0
    data = json.loads(out.read_text())
    del data["cold_start_ms"], data["meta"]["cold_start_method"]
    data["schema_version"] = 1  # a table of the older schema stays of it
    del data["card"], data["measured"]
    before = json.dumps(data, indent=1, sort_keys=True) + "\n"
    out.write_text(before)
    assert ProfileTable.load(out).cold_start_ms is None
    assert profile_main(["--cold-start-only", "--backbone", str(bb), "--out", str(out),
                         "--cold-start-rounds", "2"]) == 0
    after = json.loads(out.read_text())
    assert after.pop("cold_start_ms") >= 0
    assert "--cold-start-only" in after["meta"].pop("cold_start_method")
    assert json.dumps(after, indent=1, sort_keys=True) + "\n" == before
    assert out.with_name(out.name + ".sha256").read_text().split()[0] == sha256_of(out)
    assert "cold_start_ms" in capsys.readouterr().out
    other = tmp_path / "other.pt"
    save_backbone(_backbone(1), other)
    assert profile_main(["--cold-start-only", "--backbone", str(other), "--out",
                         str(out)]) == 1
    assert "was measured on backbone" in capsys.readouterr().err


def test_latency_only_refuses_another_backbone(fleet, tmp_path, capsys):
    _, acc, _ = fleet
    other = tmp_path / "other.pt"
    save_backbone(_backbone(1), other)
    out = tmp_path / "t.json"
    assert latency_only(other, acc, out) == 1
    assert "was measured on backbone" in capsys.readouterr().err and not out.exists()


def test_latency_only_refuses_another_engine_or_card_and_warns_of_another_version(
        fleet, tmp_path, capsys):
    bb, acc, _ = fleet
    out = tmp_path / "t.json"
    assert latency_only(bb, acc, out, "--engine", "torch") == 1
    err = capsys.readouterr().err
    assert "measured in engine 'onnxruntime'" in err and len(err.strip().splitlines()) == 1
    data = json.loads(acc.read_text())
    data["card"]["classes"][0] = "something else"
    other_card = tmp_path / "card.json"
    other_card.write_text(json.dumps(data))
    assert latency_only(bb, other_card, out) == 1
    assert "another model card" in capsys.readouterr().err and not out.exists()
    data = json.loads(acc.read_text())
    data["engine"]["version"] = "0.1.0"
    old_version = tmp_path / "old.json"
    old_version.write_text(json.dumps(data))
    assert latency_only(bb, old_version, out) == 0
    assert "warning" in capsys.readouterr().err and out.exists()


@pytest.mark.parametrize("argv, problem", [
    (["--latency-only", "--out", "t.json"], "needs --accuracy-from"),
    (["--latency-only", "--accuracy-from", "a.json"], "need --out"),
    (["--accuracy-only"], "need --out"),
    (["--accuracy-only", "--latency-only", "--out", "t.json"], "exclude each other"),
    (["--latency-only", "--accuracy-from", "a.json", "--out", "t.json", "--extend"],
     "no --extend"),
    (["--accuracy-only", "--out", "t.json", "--extend"], "no --extend"),
    (["--front-only"], "go with --latency-only"),
    (["--cold-start-only", "--latency-only", "--accuracy-from", "a.json", "--out", "t.json"],
     "no other mode"),
    (["--cold-start-rounds", "0"], "--cold-start-rounds must be >= 1"),
])
def test_split_options_that_do_not_go_together(argv, problem, capsys):
    assert profile_main(argv) == 2
    assert problem in capsys.readouterr().err


@needs_data
def test_accuracy_then_latency_equals_a_one_shot_profile(tmp_path, capsys):
    model = _backbone(0)
    one_bb, acc_bb = tmp_path / "one.pt", tmp_path / "acc.pt"
    save_backbone(model, one_bb)
    save_backbone(model, acc_bb)
    common = ["--sample", "2", "--rounds", "0", "--test-size", "200", "--bn-images", "64",
              *FAST]
    assert profile_main(["--backbone", str(one_bb), "--out", str(tmp_path / "one.json"),
                         "--plot", str(tmp_path / "one.png"), *common]) == 0
    acc = tmp_path / "acc.json"
    assert profile_main(["--accuracy-only", "--backbone", str(acc_bb), "--out", str(acc),
                         *common]) == 0
    with pytest.raises(ProfileError, match="acc.json holds accuracies only"):
        ProfileTable.load(acc)
    accuracy = ProfileTable.load(acc, need_latency=False)
    assert accuracy.measured == ("accuracy",) and accuracy.energy_method == ""
    assert all(e.latency_ms_p50 == e.energy_mj == 0 for e in accuracy.entries)
    assert accuracy.meta["pareto_front"] and not (tmp_path / "pareto.png").exists()
    out = tmp_path / "robot.json"
    assert latency_only(acc_bb, acc, out) == 0   # --data points at a missing directory
    one, split = ProfileTable.load(tmp_path / "one.json"), ProfileTable.load(out)
    assert sorted(e.id for e in split.entries) == sorted(e.id for e in one.entries)
    assert any(e.int8_ranges for e in one.entries)
    for e in one.entries:
        s = split.get(e.id)
        assert (s.accuracy, s.int8_ranges, s.macs, s.params, s.storage_bytes,
                s.peak_memory_mb) == (e.accuracy, e.int8_ranges, e.macs, e.params,
                                      e.storage_bytes, e.peak_memory_mb)
        assert s.latency_ms_p50 > 0 and s.energy_mj > 0
    assert split.card == one.card == load_backbone(one_bb).card
    assert split.measured == one.measured
