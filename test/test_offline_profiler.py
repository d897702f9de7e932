"""Profiler helpers, the profile table schema, energy meters (no ROS)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
import torch

from adaspring_ros.core.energy import (
    DevicePowerModel,
    PowerModelMeter,
    RaplMeter,
    load_device,
    make_meter,
)
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig
from adaspring_ros.core.model.profile_table import (
    ProfileEntry,
    ProfileError,
    ProfileTable,
    fastest_within,
    front_ids,
    most_accurate_within,
    pareto_front,
)
from adaspring_ros.core.model.supernet import build_backbone
from adaspring_ros.core.offline import profiler
from adaspring_ros.core.offline.profiler import (
    cold_start_sample,
    count_macs,
    neighbours,
    peak_memory_bytes,
    stratified_sample,
    time_cold_start,
)


def _entry(config_id: str, accuracy: float, latency: float) -> ProfileEntry:
    return ProfileEntry(config=CompressionConfig.from_id(config_id), accuracy=accuracy,
                        latency_ms_p50=latency, latency_ms_p95=latency * 1.2, macs=1000,
                        params=100, storage_bytes=400, peak_memory_mb=0.1, energy_mj=0.5)


FULL = CompressionConfig.full().id
SMALL = CompressionConfig.smallest().id
MID = "r20-w50d1ck100f-w50d1ck100f-w50d1ck100f"


def test_stratified_sample_covers_every_choice():
    configs = stratified_sample(DEFAULT_SPACE, 48, seed=1)
    assert len({c.id for c in configs}) == len(configs)
    assert configs[0].id == FULL and configs[1].id == SMALL
    for s in range(DEFAULT_SPACE.num_stages):
        for attr, field in (("width", "widths"), ("depth", "depths"), ("operator", "operators"),
                            ("rank", "ranks"), ("int8", "int8")):
            seen = Counter(getattr(c.stages[s], attr) for c in configs)
            assert set(seen) == set(getattr(DEFAULT_SPACE, field)), (s, attr)
    assert {c.resolution for c in configs} == set(DEFAULT_SPACE.resolutions)


def test_neighbours_move_one_operator_by_one_step():
    config = CompressionConfig.from_id(MID)
    for n in neighbours(config, DEFAULT_SPACE):
        diff = [a != b for a, b in zip(config.stages, n.stages, strict=True)]
        assert sum(diff) + (n.resolution != config.resolution) == 1
        n.validated()
    assert len(neighbours(CompressionConfig.full(), DEFAULT_SPACE)) == 1 + 3 * 5


def test_pareto_front_and_fastest_within():
    entries = [_entry(FULL, 0.93, 2.0), _entry(MID, 0.92, 0.4), _entry(SMALL, 0.80, 0.2),
               _entry("r28-w50d1ck100f-w50d1ck100f-w50d1ck100f", 0.91, 0.6)]
    assert [e.id for e in pareto_front(entries)] == [SMALL, MID, FULL]
    assert fastest_within(entries, FULL, 1.5).id == MID
    assert fastest_within(entries, FULL, 0.5).id == FULL
    assert fastest_within(entries, "r16-nope", 1.5) is None
    # the best at a given speed: never slower than asked, and the most accurate of those
    assert most_accurate_within(entries, 0.6).id == MID
    assert most_accurate_within(entries, 0.3).id == SMALL
    assert most_accurate_within(entries, 5.0).id == FULL
    assert most_accurate_within(entries, 0.1) is None


def test_front_ids_read_a_table_fastest_first(tmp_path):
    dominated = "r28-w50d1ck100f-w50d1ck100f-w50d1ck100f"
    entries = [_entry(FULL, 0.93, 2.0), _entry(dominated, 0.91, 0.6), _entry(SMALL, 0.80, 0.2),
               _entry(MID, 0.92, 0.4)]
    path = tmp_path / "table.json"
    ProfileTable(space=DEFAULT_SPACE, entries=entries).save(path)
    assert front_ids(path) == [SMALL, MID, FULL]
    assert front_ids(path, front_only=False) == [SMALL, MID, dominated, FULL]


def conv_macs(out_c: int, in_c: int, k: int, side: int) -> int:
    """MACs of a dense k x k convolution producing out_c maps of side x side."""
    return out_c * side * side * in_c * k * k


def test_count_macs_is_exact():
    """Counted by hand for stage channels (8, 12, 16) at 16 px: stage s works at 16 / 2**s px,
    the first block of stages 1 and 2 has a strided 1x1 shortcut, the classifier has 10
    outputs. Low rank r splits a conv into k x k -> r and 1x1 r -> out (r = round(ratio *
    min(out, in * k * k))); dwsep is a depthwise k x k (one input map per output) then a 1x1;
    int8 changes no MAC."""
    backbone = build_backbone(stage_channels=(8, 12, 16))
    plain = backbone.materialise(
        CompressionConfig.from_id("r16-w100d1ck100f-w100d1ck100f-w100d1ck100f"))
    expected = (conv_macs(8, 1, 3, 16)                                 # stem
                + 2 * conv_macs(8, 8, 3, 16)                           # stage 0, block 0
                + conv_macs(12, 8, 3, 8) + conv_macs(12, 12, 3, 8)     # stage 1, block 0
                + conv_macs(12, 8, 1, 8)                               #   shortcut
                + conv_macs(16, 12, 3, 4) + conv_macs(16, 16, 3, 4)    # stage 2, block 0
                + conv_macs(16, 12, 1, 4)                              #   shortcut
                + 16 * 10)                                             # classifier
    assert expected == 525_472
    assert count_macs(plain, 16) == expected

    mixed = backbone.materialise(
        CompressionConfig.from_id("r16-w100d1sk50f-w100d1ck50f-w50d2ck100q"))
    dwsep_half_rank = 8 * 16 * 16 * 9 + conv_macs(4, 8, 1, 16) + conv_macs(8, 4, 1, 16)
    expected = (conv_macs(8, 1, 3, 16)
                + 2 * dwsep_half_rank                                  # stage 0: r = 4 of 8
                + conv_macs(6, 8, 3, 8) + conv_macs(12, 6, 1, 8)       # stage 1: r = 6 of 12
                + conv_macs(6, 12, 3, 8) + conv_macs(12, 6, 1, 8)
                + conv_macs(12, 8, 1, 8)                               #   shortcut, full rank
                + conv_macs(8, 12, 3, 4) + conv_macs(8, 8, 3, 4)       # stage 2: 8 channels
                + conv_macs(8, 12, 1, 4)                               #   shortcut
                + 2 * conv_macs(8, 8, 3, 4)                            #   block 1
                + 8 * 10)
    assert expected == 215_632
    assert count_macs(mixed, 16) == expected


def test_a_colour_variant_is_counted_on_its_own_input_channels():
    grey = build_backbone(stage_channels=(8, 12, 16))
    colour = build_backbone(stage_channels=(8, 12, 16), in_channels=3)
    config = CompressionConfig.from_id("r16-w100d1ck100f-w100d1ck100f-w100d1ck100f")
    nets = grey.materialise(config), colour.materialise(config)
    # only the stem differs: 2 more input maps, 8 x 16 x 16 outputs of a 3 x 3 kernel each
    assert count_macs(nets[1], 16) - count_macs(nets[0], 16) == conv_macs(8, 2, 3, 16)
    assert peak_memory_bytes(nets[1], 16) >= peak_memory_bytes(nets[0], 16)


def test_peak_memory_holds_the_weights_and_the_stem():
    net = build_backbone(stage_channels=(8, 12, 16)).materialise(
        CompressionConfig.from_id("r16-w100d1ck100f-w100d1ck100f-w100d1ck100f"))
    # (weights) + at least the stem's input and output
    weights = 4 * sum(p.numel() for p in net.parameters())
    assert peak_memory_bytes(net, 16) >= weights + 4 * (16 * 16 + 8 * 16 * 16)


def test_profile_table_round_trip_and_rejection(tmp_path):
    table = ProfileTable(space=DEFAULT_SPACE, entries=[_entry(FULL, 0.93, 2.0),
                                                       _entry(SMALL, 0.8, 0.2)],
                         backbone_sha256="ab" * 32, energy_method="cpu_time_x_power_model:x")
    path = tmp_path / "t.json"
    table.save(path)
    from adaspring_ros.core.model.checkpoint import sha256_of

    loaded = ProfileTable.load(path, expected_sha256=sha256_of(path))
    assert loaded.to_dict() == table.to_dict()
    with pytest.raises(ProfileError, match="checksum"):
        ProfileTable.load(path, expected_sha256="0" * 64)
    data = json.loads(path.read_text())
    data["entries"][0]["accuracy"] = 93.0            # percent instead of a fraction
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="accuracy"):
        ProfileTable.load(path)
    data["entries"][0]["accuracy"] = 0.9
    del data["entries"][1]["energy_mj"]
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="energy_mj"):
        ProfileTable.load(path)
    path.write_text("{not json")
    with pytest.raises(ProfileError, match="JSON"):
        ProfileTable.load(path)


def test_the_cold_start_term_is_an_optional_field_of_the_table(tmp_path):
    entries = [_entry(FULL, 0.93, 2.0), _entry(SMALL, 0.8, 0.2)]
    old = ProfileTable(space=DEFAULT_SPACE, entries=entries)
    assert old.cold_start_ms is None and "cold_start_ms" not in old.to_dict()
    path = tmp_path / "t.json"
    ProfileTable(space=DEFAULT_SPACE, entries=entries, cold_start_ms=0.25).save(path)
    assert ProfileTable.load(path).cold_start_ms == 0.25
    data = json.loads(path.read_text())
    for bad in (-0.1, "0.2", float("nan"), True):
        data["cold_start_ms"] = bad
        with pytest.raises(ProfileError, match="cold_start_ms"):
            ProfileTable.from_dict(data)


class _FakeClock:
    """perf_counter and sleep of a clock that moves only when told (the profiler's ``time``)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy_until = -1.0  # end of the last forward of any runner

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _ColdRunner:
    """A forward of ``ms`` that costs ``cold_ms`` more when the CPU idled over 5 ms before."""

    def __init__(self, clock: _FakeClock, config: CompressionConfig, ms: float,
                 cold_ms: float) -> None:
        self.clock, self.config, self.ms, self.cold_ms = clock, config, ms, cold_ms

    def __call__(self, x):
        idle = self.clock.now - self.clock.busy_until > 0.005
        self.clock.now += (self.ms + (self.cold_ms if idle else 0.0)) / 1e3
        self.clock.busy_until = self.clock.now


def test_the_cold_start_is_what_an_idle_gap_adds_to_the_round_robin_median(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(profiler, "time", clock)
    runners = {cid: _ColdRunner(clock, CompressionConfig.from_id(cid), ms, cold)
               for cid, ms, cold in ((FULL, 1.3, 0.35), (MID, 0.4, 0.3), (SMALL, 0.1, 0.2))}
    cold = time_cold_start(runners, lambda config: None, rounds=5)
    assert cold == pytest.approx(0.3)  # the median over the variants
    assert clock.now > 3 * 5 * profiler.COLD_START_GAP_MS / 1e3  # one gap before each call
    warm = {cid: _ColdRunner(clock, r.config, r.ms, 0.0) for cid, r in runners.items()}
    assert time_cold_start(warm, lambda config: None, rounds=2) == 0.0
    with pytest.raises(ValueError):
        time_cold_start(runners, lambda config: None, rounds=0)


def test_the_cold_start_sample_spreads_over_the_latencies():
    ids = [f"v{i}" for i in range(100)]
    picked = cold_start_sample(ids, 5)
    assert picked == ["v0", "v25", "v50", "v74", "v99"]
    assert cold_start_sample(ids[:3], 16) == ids[:3] and cold_start_sample(ids, 1) == ["v0"]
    assert cold_start_sample([], 4) == [] and cold_start_sample(ids, 0) == []


def test_the_runtime_loader_refuses_a_table_without_latency(tmp_path):
    entries = [_entry(FULL, 0.93, 0.0), _entry(SMALL, 0.8, 0.0)]
    path = tmp_path / "acc.json"
    ProfileTable(space=DEFAULT_SPACE, entries=entries, measured=("accuracy",)).save(path)
    with pytest.raises(ProfileError, match="acc.json holds accuracies only") as exc:
        ProfileTable.load(path)
    assert "\n" not in str(exc.value) and "--latency-only --accuracy-from" in str(exc.value)
    with pytest.raises(ProfileError, match="accuracies only"):   # its front needs latencies
        front_ids(path)
    accuracy = ProfileTable.load(path, need_latency=False)
    assert accuracy.measured == ("accuracy",) and not accuracy.has_latency
    # a table that does not say what it holds (every table before the split) holds both
    data = json.loads(path.read_text())
    del data["measured"]
    path.write_text(json.dumps(data))
    assert ProfileTable.load(path).measured == ("accuracy", "latency")
    for bad, problem in ((["latency"], "accuracy"), ([], "non-empty"), ("accuracy", "list"),
                         (["accuracy", "speed"], "speed")):
        data["measured"] = bad
        path.write_text(json.dumps(data))
        with pytest.raises(ProfileError, match=problem):
            ProfileTable.load(path, need_latency=False)


def test_shipped_profile_table_matches_shipped_backbone():
    from adaspring_ros.core.model.checkpoint import sha256_of
    from adaspring_ros.core.paths import default_backbone, default_profile_table

    path = default_profile_table()
    sums = path.with_name(path.name + ".sha256")
    if not path.exists() or not sums.exists():
        pytest.skip("no shipped profile table in this checkout")
    table = ProfileTable.load(path, expected_sha256=sums.read_text().split()[0])
    assert table.backbone_sha256 == sha256_of(default_backbone())
    assert table.get(FULL) is not None and len(table) >= 50


def test_device_profiles_and_meters(tmp_path):
    for name in ("cloud_x86_vcpu", "raspberry_pi4", "jetson_nano_cpu"):
        assert load_device(name).active_watts_per_core > 0
    assert DevicePowerModel("d", 2.0, 1.0).energy_j(cpu_s=0.5, wall_s=2.0) == 3.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(ValueError, match="active_watts_per_core"):
        load_device(bad)
    meter = make_meter("cloud_x86_vcpu", prefer_rapl=False)
    assert isinstance(meter, PowerModelMeter)
    meter.start()
    torch.randn(200, 200) @ torch.randn(200, 200)
    reading = meter.stop()
    assert reading.joules >= 0 and reading.method.startswith("cpu_time_x_power_model")


def test_rapl_counter_wraps(tmp_path):
    domain = tmp_path / "intel-rapl:0"
    domain.mkdir()
    (domain / "energy_uj").write_text("999000\n")
    (domain / "max_energy_range_uj").write_text("1000000\n")
    meter = RaplMeter(root=str(tmp_path))
    assert meter.available()
    meter.start()
    (domain / "energy_uj").write_text("1000\n")
    assert meter.stop().joules == pytest.approx(0.002)
    assert not RaplMeter(root=str(tmp_path / "none")).available()


def test_count_macs_follows_the_input_channels_and_the_stem_stride():
    space = dataclasses.replace(DEFAULT_SPACE, resolutions=(32,))
    grey = build_backbone(space, (8, 12, 16)).materialise(CompressionConfig.full(space))
    colour = build_backbone(space, (8, 12, 16), in_channels=3, stem_stride=2).materialise(
        CompressionConfig.full(space))
    # the stem reads three maps at 32 px and writes 16 px; every stage then works at half size
    stem_grey, stem_colour = conv_macs(8, 1, 3, 32), conv_macs(8, 3, 3, 16)
    body_grey = count_macs(grey, 32) - stem_grey - 16 * 10
    assert count_macs(colour, 32) - stem_colour - 16 * 10 == body_grey // 4
    assert peak_memory_bytes(colour, 32) >= 4 * (3 * 32 * 32 + 8 * 16 * 16)


def test_profile_measures_a_colour_backbone_on_its_own_image_folder(tmp_path, capsys):
    from synthetic_folder import train_colour_backbone, write_colour_folder

    from adaspring_ros.commands.profile import cli_main as profile_main
    from adaspring_ros.core.data.folders import index_image_folder
    from adaspring_ros.core.model.checkpoint import load_backbone

    root = write_colour_folder(tmp_path / "photos")
    backbone = train_colour_backbone(root, tmp_path)
    out = tmp_path / "table.json"
    common = ["--backbone", str(backbone), "--sample", "3", "--rounds", "0", "--repeats", "2",
              "--warmup", "1", "--cold-start-rounds", "2", "--engine", "torch", "--bn-images",
              "16", "--no-progress"]
    assert profile_main(common + ["--data", str(root), "--out", str(out)]) == 0
    table = ProfileTable.load(out)
    assert table.card.channels == 3 and table.card.classes == ("apple", "leaf", "sky")
    assert table.meta["test_images"] == len(index_image_folder(root).splits["test"])
    assert all(0.0 <= e.accuracy <= 1.0 and e.latency_ms_p50 > 0 for e in table.entries)
    assert {e.id for e in table.entries} <= set(load_backbone(backbone).variant_bn)
    # another task's data is refused before anything is measured or written
    other = write_colour_folder(tmp_path / "other")
    (other / "sky").rename(other / "sea")
    assert profile_main(common + ["--data", str(other), "--out", str(tmp_path / "t2.json")]) == 1
    assert "holds the classes" in capsys.readouterr().err
    assert not (tmp_path / "t2.json").exists()
