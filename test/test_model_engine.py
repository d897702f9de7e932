"""Inference engines: ONNX Runtime computes what the torch compact module computes.

fp32 (and weight-only int8) must match torch to float rounding for every operator of the
catalogue, whether the variant is materialised by the torch backbone or, torch-free, from the
checkpoint's arrays (as the perception node serves it); static int8 is allowed a small, stated
loss.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from adaspring_ros.core import paths
from adaspring_ros.core.data.datasets import load_fashion_mnist
from adaspring_ros.core.data.transforms import preprocess
from adaspring_ros.core.model import compact
from adaspring_ros.core.model.bn_stats import variant_bn_stats
from adaspring_ros.core.model.card import FASHION_MNIST_CARD
from adaspring_ros.core.model.checkpoint import load_backbone, save_backbone
from adaspring_ros.core.model.checkpoint_reader import load_weight_bank
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig, StageConfig
from adaspring_ros.core.model.engine import EngineError, classify_logits, make_engine
from adaspring_ros.core.model.onnx_graph import onnx_graph
from adaspring_ros.core.model.profile_table import ProfileError, ProfileTable
from adaspring_ros.core.model.supernet import build_backbone
from adaspring_ros.core.offline.profiler import bn_calibration_images, time_round_robin

pytest.importorskip("onnxruntime")

# fp32 logits agree to float rounding (the two engines sum in different orders).
FP32_ATOL = 1e-4
# Static int8 (activations quantised too) against the same variant in fp32, on 1000 test images:
# the profile table measures the real cost on the whole test split (<= 0.5 points there).
INT8_MIN_AGREEMENT = 0.97
INT8_MAX_LOSS_PT = 1.0


@pytest.fixture(scope="module")
def backbone():
    return load_backbone()  # the shipped, trained one: int8 bounds mean something on it


@pytest.fixture(scope="module")
def bank():
    return load_weight_bank(paths.default_backbone())  # the same file, read without torch


@pytest.fixture(scope="module")
def test_images():
    test = load_fashion_mnist("test")
    return test.images[:1000], test.labels[:1000]


def _with(resolution: int = 28, **changes) -> CompressionConfig:
    changed = dataclasses.replace(StageConfig(), **changes)
    return CompressionConfig((changed,) * DEFAULT_SPACE.num_stages, resolution)


# One variant per operator of the catalogue, and a mix of all of them.
OPERATORS = {
    "full": _with(),
    "width": _with(width=0.5),
    "depth": _with(depth=1),
    "dwsep": _with(operator="dwsep"),
    "low rank": _with(rank=0.25),
    "int8": _with(int8=True),
    "resolution": _with(resolution=16),
    "mixed": CompressionConfig.from_id("r20-w50d2sk50q-w75d1ck25f-w25d3sk100q"),
}


@pytest.mark.parametrize("name", list(OPERATORS))
def test_onnxruntime_matches_torch_for_every_operator(backbone, test_images, name):
    config = OPERATORS[name]
    net = backbone.materialise(config)
    x = preprocess(test_images[0][:200], config.resolution)
    reference = make_engine("torch").prepare(net, batch=None)(x)
    # No activation ranges: int8 stays weight-only, the arithmetic torch does.
    ort = make_engine("onnxruntime").prepare(net, None, batch=None)(x)
    assert ort.shape == reference.shape
    np.testing.assert_allclose(ort, reference, atol=FP32_ATOL, rtol=0)
    assert (ort.argmax(1) == reference.argmax(1)).all()


def _tuned_and_profiled(backbone) -> dict[str, CompressionConfig]:
    """Variants that carry their own BN: tuned (variant_affine: own scale/shift and classifier
    bias) and profiled only (variant_bn: own statistics), int8 among them."""
    tuned = list(backbone.variant_affine)
    profiled = [c for c in backbone.variant_bn if c not in backbone.variant_affine]
    picks = {"tuned": tuned[0], "tuned int8": next(c for c in tuned if "q" in c.split("-")[1]),
             "profiled": profiled[0],
             "profiled int8 low rank": next(c for c in profiled if "k50q" in c or "k25q" in c)}
    return {name: CompressionConfig.from_id(cid, backbone.space) for name, cid in picks.items()}


@pytest.mark.parametrize("name", [*OPERATORS, "tuned", "tuned int8", "profiled",
                                  "profiled int8 low rank"])
def test_torch_free_variants_compute_what_the_torch_path_computes(backbone, bank, test_images,
                                                                   name):
    """Materialised from the checkpoint's arrays (no torch), a variant gives the logits of the
    torch backbone's compact module, in ONNX Runtime and in torch, per-variant BN included."""
    config = OPERATORS.get(name) or _tuned_and_profiled(backbone)[name]
    x = preprocess(test_images[0][:200], config.resolution)
    reference = make_engine("torch").prepare(backbone.materialise(config), batch=None)(x)
    weights = compact.materialise(bank, config)
    assert weights.storage_bytes == backbone.materialise(config).storage_bytes
    for engine in ("onnxruntime", "torch"):
        logits = make_engine(engine).prepare(weights, None, batch=None)(x)
        np.testing.assert_allclose(logits, reference, atol=FP32_ATOL, rtol=0)
    if config.id in backbone.variant_bn:  # the variant's own BN is what makes it differ
        del bank.variant_bn[config.id]
        try:
            shared = make_engine("onnxruntime").prepare(compact.materialise(bank, config), None,
                                                        batch=None)(x)
        finally:
            bank.variant_bn[config.id] = backbone.weight_bank(config.id).variant_bn[config.id]
        assert np.abs(shared - reference).max() > 100 * FP32_ATOL


@pytest.mark.parametrize("stem_stride", [2, 4])
def test_a_strided_colour_stem_is_served_torch_free_as_trained(stem_stride, tmp_path):
    """A 3-channel backbone whose stem divides the input side by 2 or 4, read back without
    torch: numpy materialise and its ONNX graph (strides from the checkpoint's arch) give the
    elastic torch forward's logits."""
    torch.manual_seed(stem_stride)
    space = dataclasses.replace(DEFAULT_SPACE, resolutions=(32, 48))
    model = build_backbone(space, (8, 12, 16), in_channels=3, stem_stride=stem_stride).eval()
    card = dataclasses.replace(FASHION_MNIST_CARD, channels=3, channel_order="RGB",
                               mean=(0.5,) * 3, std=(0.25,) * 3, resolutions=(32, 48),
                               classes=model.classes)
    save_backbone(model, tmp_path / "bb.pt", card=card)
    bank = load_weight_bank(tmp_path / "bb.pt")
    assert bank.arch.stem_stride == stem_stride
    frames = np.random.default_rng(0).integers(0, 256, (4, 60, 50, 3), dtype=np.uint8)
    for config in (CompressionConfig.full(space), CompressionConfig.smallest(space),
                   _with(48, operator="dwsep", depth=1)):
        x = preprocess(frames, config.resolution, card)
        model.set_active(config)
        with torch.no_grad():
            reference = model(torch.from_numpy(x)).numpy()
        weights = compact.materialise(bank, config)
        assert weights.stem[0].stride == min(stem_stride, 2)
        logits = make_engine("onnxruntime").prepare(weights, None, batch=None)(x)
        np.testing.assert_allclose(logits, reference, atol=FP32_ATOL, rtol=0)


@pytest.mark.parametrize("name", ["int8", "mixed"])
def test_static_int8_stays_within_its_bound(backbone, test_images, name):
    config = OPERATORS[name]
    images, labels = test_images
    # As served: with the variant's own BN statistics, as the profiler stores them. Without
    # them the mixed variant is a 63 % net, whose few int8 flips move its accuracy by +-1 point
    # either way from one backbone to the next.
    unprofiled = config.id not in backbone.variant_bn
    if unprofiled:
        backbone.variant_bn[config.id] = variant_bn_stats(backbone, config,
                                                          bn_calibration_images(512))
    try:
        net = backbone.materialise(config)
    finally:
        if unprofiled:  # the fixture is shared by the module
            del backbone.variant_bn[config.id]
    engine = make_engine("onnxruntime")
    ranges = engine.calibrate(net, preprocess(bn_calibration_images(256), config.resolution))
    assert ranges and all(lo <= hi for lo, hi in ranges.values())
    x = preprocess(images, config.resolution)
    reference = engine.prepare(net, None, batch=None)(x)
    runner = engine.prepare(net, ranges, batch=None)
    assert runner.static_int8
    quantised = runner(x)
    agreement = (quantised.argmax(1) == reference.argmax(1)).mean()
    loss_pt = 100 * ((reference.argmax(1) == labels).mean() - (quantised.argmax(1) == labels)
                     .mean())
    assert agreement >= INT8_MIN_AGREEMENT
    assert loss_pt <= INT8_MAX_LOSS_PT


def test_static_int8_runs_integer_convolutions(backbone, tmp_path):
    """int8 pays only if ONNX Runtime fuses every Q/DQ-wrapped conv into an integer conv."""
    import onnx
    import onnxruntime

    config = OPERATORS["int8"]
    net = backbone.materialise(config)
    engine = make_engine("onnxruntime")
    ranges = engine.calibrate(net, preprocess(bn_calibration_images(64), 28))
    options = engine._options()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    onnxruntime.InferenceSession(onnx_graph(net, ranges=ranges), options)
    ops = Counter(n.op_type for n in onnx.load(tmp_path / "optimised.onnx").graph.node)
    convs = sum(1 for m in net.modules() if m.__class__.__name__.endswith("Conv2d"))
    assert ops["QLinearConv"] == convs and ops["Conv"] == 0
    assert ops["QLinearAdd"] == len(net.blocks)


def test_classify_logits_is_softmax_top1():
    logits = np.array([[0.5, 2.0, -1.0]], np.float32)
    index, score = classify_logits(logits)
    probs = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert index == 1 and score == pytest.approx(probs[1], rel=1e-6)


def test_unknown_or_missing_engine_is_a_clear_error(monkeypatch):
    with pytest.raises(EngineError, match="unknown engine 'tensorrt'.*onnxruntime, torch"):
        make_engine("tensorrt")
    with pytest.raises(EngineError, match="threads"):
        make_engine("torch", threads=0)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # as if not installed
    with pytest.raises(EngineError, match="not installed.*pip install onnxruntime"):
        make_engine("onnxruntime")


def test_an_onnxruntime_that_is_there_but_does_not_import_is_not_called_missing(monkeypatch,
                                                                                tmp_path):
    broken = tmp_path / "onnxruntime"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('libonnxruntime.so: bad ELF')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    with pytest.raises(EngineError, match="installed but does not import: libonnxruntime.so"):
        make_engine("onnxruntime")
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)


def test_round_robin_timing_covers_every_runner(backbone, test_images):
    engine = make_engine("onnxruntime")
    runners = {c.id: engine.prepare(backbone.materialise(c)) for c in
               (OPERATORS["full"], OPERATORS["resolution"])}
    timed = time_round_robin(runners, test_images[0], repeats=7, warmup=1, meter=None)
    assert set(timed) == set(runners)
    for times, energy_mj in timed.values():
        assert len(times) == 7 and all(t > 0 for t in times) and energy_mj == 0.0


def test_profile_table_names_its_engine_and_refuses_another(tmp_path):
    from tools.synthetic_tables import synthetic_table

    table = synthetic_table(4)
    table.require_engine("onnxruntime")        # made-up numbers fit any engine
    table.engine = {"name": "torch", "version": "2.13.0", "threads": 1}
    path = tmp_path / "t.json"
    table.save(path)
    loaded = ProfileTable.load(path)
    assert loaded.engine_name == "torch"
    loaded.require_engine("torch")
    with pytest.raises(ProfileError, match="measured in engine 'torch'.*'onnxruntime'"):
        loaded.require_engine("onnxruntime")


def test_profile_table_int8_ranges_round_trip_and_are_validated(tmp_path):
    from tools.synthetic_tables import synthetic_table

    table = synthetic_table(3)
    entry = dataclasses.replace(table.entries[0], int8_ranges={"image": (-0.8, 2.0)})
    table = ProfileTable(table.space, [entry, *table.entries[1:]], engine={"name": "x"})
    path = tmp_path / "t.json"
    table.save(path)
    assert dict(ProfileTable.load(path).entries[0].int8_ranges) == {"image": (-0.8, 2.0)}
    data = table.to_dict()
    data["entries"][0]["int8_ranges"] = {"image": [2.0, -1.0]}
    with pytest.raises(ProfileError, match="lo <= hi"):
        ProfileTable.from_dict(data)
    data["entries"][0]["int8_ranges"] = {"image": [float("nan"), 1.0]}
    with pytest.raises(ProfileError, match="finite"):
        ProfileTable.from_dict(data)
    data["entries"][0]["int8_ranges"] = {"image": "wide"}
    with pytest.raises(ProfileError, match="pair"):
        ProfileTable.from_dict(data)
    data["entries"][0].pop("int8_ranges")
    data["engine"] = {"version": "1"}
    with pytest.raises(ProfileError, match="name the engine"):
        ProfileTable.from_dict(data)


def test_variant_builder_serves_profiled_int8_variants_in_int8(backbone):
    from adaspring_ros.core.serving.server import VariantBuilder
    from tools.synthetic_tables import table_from_rows

    config = OPERATORS["int8"]
    engine = make_engine("onnxruntime")
    ranges = engine.calibrate(backbone.materialise(config),
                              preprocess(bn_calibration_images(64), 28))
    table = table_from_rows([{}])
    entry = dataclasses.replace(table.entries[0], config=config, int8_ranges=ranges)
    table = ProfileTable(table.space, [entry], engine={"name": "onnxruntime"})
    build = VariantBuilder(backbone.materialise, engine, table)
    assert build(config).static_int8                       # profiled: ranges from the table
    assert not build(_with(int8=True, width=0.5)).static_int8   # unprofiled: weight-only
    table.engine = {"name": "torch"}
    with pytest.raises(ProfileError, match="measured in engine 'torch'"):
        VariantBuilder(backbone.materialise, engine, table)
    VariantBuilder(backbone.materialise, make_engine("torch"), table)  # torch needs no ranges


def test_shipped_table_int8_costs_at_most_half_a_point():
    """Issue target, on the whole test split: every profiled int8 variant against the same
    variant in float32, both measured in ONNX Runtime by the profiler. Like with like: a pair
    where only one of the two has its own tuned BN scale/shift (``tune-variants`` tunes the
    front, which holds one of them) would count that tuning's gain as an int8 loss."""
    import re
    import statistics

    from adaspring_ros.core.model.checkpoint import load_backbone
    from adaspring_ros.core.model.profile_table import load_profile_table

    table = load_profile_table(None, "onnxruntime")
    tuned = set(load_backbone().variant_affine)
    by_id = {e.id: e for e in table.entries}
    losses = []
    for e in table.entries:
        twin = by_id.get(re.sub(r"(k\d+)q", r"\1f", e.id))
        if twin is not None and twin is not e and (e.id in tuned) == (twin.id in tuned):
            losses.append(100 * (twin.accuracy - e.accuracy))
    print(f"\nint8 vs float32 twin, {len(losses)} pairs: {min(losses):+.2f} to "
          f"{max(losses):+.2f} points lost (median {statistics.median(losses):+.2f})")
    assert len(losses) >= 20
    assert max(losses) <= 0.5
