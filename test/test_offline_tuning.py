"""Per-variant tuned BN scale/shift: storage, compact == elastic, validation, frozen weights."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from synthetic_idx import write_idx_dataset

from adaspring_ros.commands.tune_variants import cli_main
from adaspring_ros.core.data.datasets import FASHION_MNIST_DIR
from adaspring_ros.core.data.transforms import preprocess_tensor as preprocess
from adaspring_ros.core.model.bn_stats import variant_bn_stats
from adaspring_ros.core.model.checkpoint import (
    CheckpointError,
    load_backbone,
    save_backbone,
    write_checksum,
)
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.supernet import build_backbone
from adaspring_ros.core.offline.losses import distillation_loss
from adaspring_ros.core.offline.tuning import (
    initial_affine,
    teacher_logits,
    tune_variant,
)

CONFIGS = (
    "r20-w50d2sk100f-w75d1ck100q-w100d2ck100f",   # separable, int8, mixed widths
    "r24-w25d1ck50f-w50d2ck100f-w75d1sk25q",      # low rank, int8 of a separable stage
    "r16-w100d3ck100f-w100d1ck100f-w50d3ck100f",
)
needs_data = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                                reason="dataset-fashion-mnist not installed")


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images (blobs, not white noise: BN statistics stay well scaled)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((n, 1, 7, 7), dtype=np.float32))
    x = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear")
    return (255 * x[:, 0]).round().clamp(0, 255).to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    m = build_backbone(stage_channels=(8, 12, 16)).eval()
    images = _images(128, seed=1)
    for cid in CONFIGS:
        m.variant_bn[cid] = variant_bn_stats(m, CompressionConfig.from_id(cid), images)
    return m


@pytest.fixture()
def model(trained):
    """A fresh copy per test (tests add tuned variants to it)."""
    return copy.deepcopy(trained)


def _random_affine(model, config_id: str, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in initial_affine(model, CompressionConfig.from_id(config_id)).items():
        out[name] = t + 0.3 * torch.randn(t.shape, generator=gen)
    return out


def test_initial_affine_reproduces_the_untuned_variant(model):
    cid = CONFIGS[0]
    config = CompressionConfig.from_id(cid)
    x = preprocess(_images(4, seed=2), config.resolution)
    with torch.no_grad():
        untuned = model.materialise(config)(x)
        model.variant_affine[cid] = initial_affine(model, config)
        torch.testing.assert_close(model.materialise(config)(x), untuned, rtol=0, atol=1e-6)
    # one (2, C) tensor per unit the variant runs, plus the classifier bias
    assert set(model.variant_affine[cid]) == set(model.variant_bn[cid]) | {"classifier"}


@pytest.mark.parametrize("cid", CONFIGS)
def test_tuned_compact_net_equals_the_elastic_forward(model, cid):
    config = CompressionConfig.from_id(cid)
    x = preprocess(_images(6, seed=3), config.resolution)
    with torch.no_grad():
        untuned = model.materialise(config)(x)
        model.variant_affine[cid] = _random_affine(model, cid, seed=4)
        model.set_active(config)
        elastic = model(x)
        compact = model.materialise(config)(x)
    torch.testing.assert_close(compact, elastic, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(compact, untuned, atol=1e-3)       # the tuned affine is used
    # other variants are untouched by one variant's tuned affine
    other = CONFIGS[(CONFIGS.index(cid) + 1) % len(CONFIGS)]
    assert other not in model.variant_affine


def test_bank_round_trips_through_save_and_load(tmp_path, model):
    for i, cid in enumerate(CONFIGS[:2]):
        model.variant_affine[cid] = _random_affine(model, cid, seed=10 + i)
    path = tmp_path / "bb.pt"
    save_backbone(model, path)
    loaded = load_backbone(path)
    assert set(loaded.variant_affine) == set(CONFIGS[:2])
    for cid, params in model.variant_affine.items():
        assert set(loaded.variant_affine[cid]) == set(params)
        for name, t in params.items():
            assert torch.equal(loaded.variant_affine[cid][name], t), (cid, name)
    config = CompressionConfig.from_id(CONFIGS[0])
    x = preprocess(_images(3, seed=5), config.resolution)
    with torch.no_grad():
        torch.testing.assert_close(loaded.materialise(config)(x), model.materialise(config)(x),
                                   rtol=0, atol=0)


def test_checkpoints_without_a_bank_still_load(tmp_path, model):
    path = tmp_path / "old.pt"
    save_backbone(model, path)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["variant_affine"]                                    # as written before the bank
    torch.save(ckpt, path)
    write_checksum(path)
    assert load_backbone(path).variant_affine == {}


def _saved_with_bank(tmp_path, model, bank) -> object:
    path = tmp_path / "bad.pt"
    save_backbone(model, path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["variant_affine"] = bank
    torch.save(ckpt, path)
    write_checksum(path)
    return path


@pytest.mark.parametrize("case, message", [
    ("not a mapping", "must be a mapping"),
    ("bad config id", "variant_affine"),
    ("no statistics", "no stored BN statistics"),
    ("params not a mapping", "must be a mapping of unit name"),
    ("unknown unit", "not a BN weight/bias tensor"),
    ("wrong channels", "not a BN weight/bias tensor"),
    ("three rows", "not a BN weight/bias tensor"),
    ("not a tensor", "not a BN weight/bias tensor"),
    ("classifier shape", "not a BN weight/bias tensor"),
    ("nan", "non-finite"),
    ("integer", "non-float32"),
    ("float64", "non-float32"),
])
def test_bad_banks_are_refused(tmp_path, model, case, message):
    cid = CONFIGS[0]
    good = initial_affine(model, CompressionConfig.from_id(cid))
    stem = good["stem"]
    bank = {
        "not a mapping": [1, 2],
        "bad config id": {"r99-nonsense": good},
        "no statistics": {"r28-w50d1ck100f-w50d1ck100f-w50d1ck100f": {"stem": stem}},
        "params not a mapping": {cid: stem},
        "unknown unit": {cid: {**good, "stages.2.2.units.conv.0": stem}},
        "wrong channels": {cid: {**good, "stem": torch.zeros(2, stem.shape[1] + 1)}},
        "three rows": {cid: {**good, "stem": torch.zeros(3, stem.shape[1])}},
        "not a tensor": {cid: {**good, "stem": [[1.0], [2.0]]}},
        "classifier shape": {cid: {**good, "classifier": torch.zeros(11)}},
        "nan": {cid: {**good, "stem": torch.full_like(stem, float("nan"))}},
        "integer": {cid: {**good, "stem": torch.zeros(stem.shape, dtype=torch.long)}},
        "float64": {cid: {**good, "classifier": good["classifier"].double()}},
    }[case]
    path = _saved_with_bank(tmp_path, model, bank)
    with pytest.raises(CheckpointError, match=message):
        load_backbone(path)


def test_tuning_changes_only_the_variant_affine(model):
    cid = CONFIGS[0]
    config = CompressionConfig.from_id(cid)
    images = _images(192, seed=6)
    teacher = teacher_logits(model, images, CompressionConfig.full())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    start = initial_affine(model, config)
    x = preprocess(images, config.resolution)
    with torch.no_grad():
        model.set_active(config)
        kl_before = float(distillation_loss(model(x), teacher))
        model.set_active(CompressionConfig.full())
    tuned, _ = tune_variant(model, config, images, teacher, epochs=3, batch_size=64, lr=1e-2)
    for k, v in model.state_dict().items():                # every weight and buffer, bit for bit
        assert torch.equal(v, before[k]), k
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not model.training and model.active == CompressionConfig.full()
    assert set(tuned) == set(start) and model.variant_affine[cid] is tuned
    assert all(not t.requires_grad for t in tuned.values())
    assert any(not torch.equal(tuned[n], start[n]) for n in start)
    assert not torch.equal(tuned["classifier"], start["classifier"])
    with torch.no_grad():
        model.set_active(config)
        kl_after = float(distillation_loss(model(x), teacher))
    assert kl_after < kl_before
    with torch.no_grad():                                   # and materialise serves it
        torch.testing.assert_close(model.materialise(config)(x[:4]), model(x[:4]),
                                   rtol=1e-4, atol=1e-4)


def test_tuning_needs_the_variant_statistics(model):
    config = CompressionConfig.from_id("r28-w50d1ck100f-w50d1ck100f-w50d1ck100f")
    images = _images(8)
    with pytest.raises(ValueError, match="variant_bn"):
        tune_variant(model, config, images, torch.zeros(8, 10))


def test_cli_refuses_bad_arguments(capsys):
    assert cli_main(["--variants", CONFIGS[0], "--epochs", "0"]) == 2
    assert cli_main([]) == 2
    assert "--variants-from" in capsys.readouterr().err


@needs_data
def test_cli_smoke_and_resume(tmp_path, model):
    bb = tmp_path / "bb.pt"
    save_backbone(model, bb)
    common = ["--backbone", str(bb), "--images", "256", "--val-size", "200", "--batch-size",
              "128", "--bn-images", "64", "--out", str(tmp_path / "tuned.pt"), "--workdir",
              str(tmp_path / "work"), "--no-progress", "--keep-worse", "--resume"]
    assert cli_main(["--variants", CONFIGS[0]] + common) == 0
    # resumed: the first variant is not tuned again, a new one (without stored BN) is added
    new = "r28-w50d1ck100f-w50d1ck100f-w50d1ck100f"
    assert cli_main(["--variants", f"{CONFIGS[0]},{new}"] + common) == 0
    tuned = load_backbone(tmp_path / "tuned.pt")
    assert set(tuned.variant_affine) == {CONFIGS[0], new}
    assert new in tuned.variant_bn
    for k, v in model.state_dict().items():
        assert torch.equal(tuned.state_dict()[k], v), k


@pytest.mark.parametrize("engine_name", ["torch", "onnxruntime"])
def test_engines_serve_the_tuned_variant(model, engine_name):
    if engine_name == "onnxruntime":
        pytest.importorskip("onnxruntime")
    from adaspring_ros.core.model.engine import make_engine

    cid = "r16-w100d3ck100f-w100d1ck100f-w50d3ck100f"         # float: no activation ranges
    config = CompressionConfig.from_id(cid)
    model.variant_affine[cid] = _random_affine(model, cid, seed=7)
    x = preprocess(_images(5, seed=8), config.resolution)
    with torch.no_grad():
        model.set_active(config)
        elastic = model(x).numpy()
    runner = make_engine(engine_name).prepare(model.materialise(config), batch=None)
    np.testing.assert_allclose(runner(x.numpy()), elastic, rtol=1e-4, atol=1e-4)


@needs_data
def test_resume_refuses_another_recipe(tmp_path, model, capsys):
    bb = tmp_path / "bb.pt"
    save_backbone(model, bb)
    common = ["--backbone", str(bb), "--variants", CONFIGS[0], "--images", "128", "--val-size",
              "100", "--batch-size", "128", "--out", str(tmp_path / "tuned.pt"), "--workdir",
              str(tmp_path / "work"), "--no-progress", "--resume"]
    assert cli_main(common) == 0
    capsys.readouterr()
    assert cli_main(common[:-1] + ["--epochs", "3", "--resume"]) == 1
    assert "was tuned with" in capsys.readouterr().err


@needs_data
def test_profile_remeasures_the_tuned_variants_of_a_table(tmp_path, model, capsys):
    import json

    from adaspring_ros.commands.profile import cli_main as profile_main
    from adaspring_ros.core.model.profile_table import ProfileTable

    bb, table_path = tmp_path / "bb.pt", tmp_path / "table.json"
    save_backbone(model, bb)
    common = ["--out", str(table_path), "--plot", str(tmp_path / "p.png"), "--engine", "torch",
              "--test-size", "300", "--bn-images", "64", "--no-progress", "--warmup", "1",
              "--cold-start-rounds", "2"]
    assert profile_main(["--backbone", str(bb), "--sample", "4", "--rounds", "0",
                         "--repeats", "3"] + common) == 0
    before = ProfileTable.load(table_path)
    shared = load_backbone(bb)                    # with the BN statistics the profiler stored
    cid = before.entries[1].id
    shared.variant_affine[cid] = _random_affine(shared, cid, seed=3)
    shared.variant_affine[cid]["classifier"] = torch.linspace(-4, 4, 10)  # moves the argmax
    tuned_path = tmp_path / "tuned.pt"
    save_backbone(shared, tuned_path, {"variant_tuning": json.dumps(
        {"source_sha256": before.backbone_sha256})})
    remeasure = ["--backbone", str(tuned_path), "--extend", "--rounds", "0", "--repeats", "0"]
    capsys.readouterr()
    assert profile_main(remeasure + common) == 1
    assert "add --remeasure-tuned" in capsys.readouterr().err
    assert profile_main(remeasure + ["--remeasure-tuned"] + common) == 0
    after = ProfileTable.load(table_path)
    tuned = load_backbone(tuned_path)
    assert after.backbone_sha256 == tuned.sha256 != before.backbone_sha256
    assert after.meta["remeasured_tuned"] == [cid]
    for old in before.entries:
        new = after.get(old.id)
        assert (new.latency_ms_p50, new.energy_mj) == (old.latency_ms_p50, old.energy_mj)
        if old.id != cid:
            assert new == old
    from adaspring_ros.core.data.datasets import load_fashion_mnist
    from adaspring_ros.core.model.engine import make_engine
    from adaspring_ros.core.offline.evaluate import runner_accuracy

    config = CompressionConfig.from_id(cid)
    test = load_fashion_mnist("test").subset(np.arange(300))
    runner = make_engine("torch").prepare(tuned.materialise(config), batch=None)
    assert after.get(cid).accuracy == runner_accuracy(runner, test, config.resolution)
    assert after.get(cid).accuracy != before.get(cid).accuracy
    # a backbone that was not tuned from the table's one is refused
    other = tmp_path / "other.pt"
    save_backbone(build_backbone(stage_channels=(8, 12, 16)), other)
    assert profile_main(["--backbone", str(other), "--extend", "--rounds", "0", "--repeats",
                         "0", "--remeasure-tuned"] + common) == 1
    assert "was measured on backbone" in capsys.readouterr().err
    assert profile_main(["--backbone", str(bb), "--repeats", "0"] + common) == 2


def test_a_colour_backbone_is_tuned_on_its_own_image_folder(tmp_path, capsys):
    from synthetic_folder import train_colour_backbone, write_colour_folder

    root = write_colour_folder(tmp_path / "photos")
    backbone = train_colour_backbone(root, tmp_path)
    variant = "r24-w50d1sk100f-w50d1ck100f-w50d1ck100f"
    common = ["--backbone", str(backbone), "--variants", variant, "--bn-images", "16",
              "--batch-size", "16", "--no-progress", "--keep-worse"]
    out, work = tmp_path / "tuned.pt", tmp_path / "work"
    assert cli_main(common + ["--data", str(root), "--out", str(out), "--workdir",
                              str(work)]) == 0
    tuned = load_backbone(out)
    assert tuned.card == load_backbone(backbone).card and variant in tuned.variant_affine
    results = json.loads((work / "results.json").read_text())
    # tuned on the folder's train split, validated on its (carved) validation split
    assert results["tuning_images"] == 62 and results["validation_images"] == 6
    # Fashion-MNIST-shaped data for this backbone is refused before anything is written
    other = write_idx_dataset(tmp_path / "idx")
    assert cli_main(common + ["--data", str(other), "--out", str(tmp_path / "t2.pt"),
                              "--workdir", str(tmp_path / "w2")]) == 2
    assert "holds the classes" in capsys.readouterr().err
    assert not (tmp_path / "t2.pt").exists() and not (tmp_path / "w2").exists()
