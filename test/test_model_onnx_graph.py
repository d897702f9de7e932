"""The ONNX writer: valid ONNX for every operator of the catalogue, the arrays it was given,
int8 in both forms, calibration probes (no ROS; the logits are test_model_engine's)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adaspring_ros.core import paths
from adaspring_ros.core.model import compact
from adaspring_ros.core.model.checkpoint_reader import load_weight_bank
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig, StageConfig
from adaspring_ros.core.model.onnx_graph import OPSET, _varint, onnx_graph

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402  (after the skip)


def _with(resolution: int = 28, **changes) -> CompressionConfig:
    changed = dataclasses.replace(StageConfig(), **changes)
    return CompressionConfig((changed,) * DEFAULT_SPACE.num_stages, resolution)


OPERATORS = [_with(), _with(width=0.5), _with(depth=1), _with(operator="dwsep"),
             _with(rank=0.25), _with(int8=True), _with(resolution=16),
             CompressionConfig.from_id("r20-w50d2sk50q-w75d1ck25f-w25d3sk100q")]


@pytest.fixture(scope="module")
def bank():
    if not paths.default_backbone().is_file():
        pytest.skip("no shipped backbone in this checkout")
    return load_weight_bank(paths.default_backbone())


@pytest.mark.parametrize("config", OPERATORS, ids=lambda c: c.id)
def test_every_operator_writes_valid_onnx(bank, config):
    model = onnx.load_from_string(onnx_graph(compact.materialise(bank, config), batch=None))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.name == config.id and model.opset_import[0].version == OPSET
    image, = model.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims == ["N", 1, config.resolution, config.resolution]


def test_the_graph_holds_the_arrays_it_was_given(bank):
    weights = compact.materialise(bank, _with(width=0.5, depth=1))
    model = onnx.load_from_string(onnx_graph(weights))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert np.array_equal(inits["stem.0.weight"], weights.stem[0].weight)
    assert np.array_equal(inits["stem.0.bias"], weights.stem[0].bias)
    assert np.array_equal(inits["classifier.weight"], weights.classifier_weight)
    conv = next(n for n in model.graph.node if n.name == "blocks.1.body.0")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    assert attrs == {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                     "group": 1}
    shortcut = next(n for n in model.graph.node if n.name == "blocks.1.add")
    assert list(shortcut.input) == ["blocks.1.body.2", "blocks.1.shortcut.0"]


def test_int8_weights_are_stored_as_a_shifted_int8_grid_with_their_scales(bank):
    weights = compact.materialise(bank, _with(int8=True, depth=1))
    model = onnx.load_from_string(onnx_graph(weights))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q, scale = inits["stem.0.weight_q"], inits["stem.0.weight_scale"]
    zero = inits["stem.0.weight_zp"]
    assert q.dtype == np.uint8 and zero.dtype == np.uint8 and np.all(zero == 128)
    assert scale.dtype == np.float32
    grid = q.astype(np.float32) - 128  # the int8 grid, shifted: exact in u8u8 on every CPU
    assert grid.min() >= -127 and grid.max() <= 127
    np.testing.assert_allclose(grid * scale[:, None, None, None],
                               weights.stem[0].weight, rtol=1e-6, atol=0)
    assert not any(n.op_type == "QuantizeLinear" for n in model.graph.node)  # weight-only


def test_static_int8_quantises_activations_with_the_given_ranges(bank):
    weights = compact.materialise(bank, _with(int8=True, depth=1))
    probe = onnx.load_from_string(onnx_graph(weights, batch=None, probe=True))
    points = [o.name for o in probe.graph.output[1:]]
    assert points[0] == "image" and "blocks.0.relu" in points
    ranges = {p: (-1.0, 3.0) for p in points}
    model = onnx.load_from_string(onnx_graph(weights, ranges=ranges))
    onnx.checker.check_model(model, full_check=True)
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) == len(points)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert inits["image_as"] == np.float32(4.0 / 255) and inits["image_az"] == 64
    assert inits["image_az"].dtype == np.uint8 and inits["image_as"].shape == ()


def test_varints_are_protobuf_s():
    assert _varint(1) == b"\x01" and _varint(300) == b"\xac\x02"
    assert _varint(-1) == b"\xff" * 9 + b"\x01"      # an int64 in two's complement
