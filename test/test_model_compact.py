"""The numpy compact variant: weight transforms, copies not views, storage, layout (no ROS).

That a materialised variant computes what the elastic forward computes is
test_model_supernet's ``test_compact_equals_elastic_forward`` (the torch CompactNet is made of
these arrays); that every engine serves it alike is test_model_engine's.
"""

from __future__ import annotations

import numpy as np
import pytest

from adaspring_ros.core.model import compact
from adaspring_ros.core.model.config import CompressionConfig, StageConfig

torch = pytest.importorskip("torch")

from adaspring_ros.core.model import operators  # noqa: E402  (after the torch skip)
from adaspring_ros.core.model.supernet import build_backbone  # noqa: E402


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    model = build_backbone(stage_channels=(8, 12, 16)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, operators.SwitchableBatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    return model


def test_int8_is_one_rule_in_numpy_and_in_torch():
    w = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(1))
    q_t, scale_t = operators.quantise_int8(w)
    q, scale = compact.quantise_int8(w.numpy())
    assert q.dtype == np.int8 and np.array_equal(q, q_t.numpy())
    assert np.array_equal(scale, scale_t.numpy())
    # a dequantised (and per-channel scaled) weight quantises back to the same grid
    scaled = compact.dequantise_int8(w.numpy()) * np.linspace(0.5, 2, 16, dtype=np.float32)[
        :, None, None, None]
    assert np.array_equal(compact.quantise_int8(scaled)[0], q)


def test_low_rank_is_the_truncated_svd_and_the_elastic_forward_uses_the_same_factors():
    m = np.random.default_rng(3).standard_normal((12, 27)).astype(np.float32)
    first, second = compact.low_rank_factors(m, 0.25)
    assert first.shape == (3, 27) and second.shape == (12, 3)
    s = np.linalg.svd(m.astype(np.float64), compute_uv=False)
    assert np.linalg.norm(second @ first - m) == pytest.approx(np.linalg.norm(s[3:]), rel=1e-5)
    tall = m.T.copy()                                         # out > fan_in: the other branch
    first, second = compact.low_rank_factors(tall, 1.0)
    np.testing.assert_allclose(second @ first, tall, atol=1e-5)
    t_first, t_second = operators.low_rank_factors(torch.from_numpy(m), 0.5)
    n_first, n_second = compact.low_rank_factors(m, 0.5)
    assert np.array_equal(t_first.numpy(), n_first) and np.array_equal(t_second.numpy(), n_second)


def test_materialise_copies_and_leaves_the_bank_untouched(backbone):
    bank = backbone.weight_bank()
    before = {k: v.copy() for k, v in bank.state.items()}
    config = CompressionConfig((StageConfig(),) * 3, 28)        # full: no transform copies
    weights = compact.materialise(bank, config)
    arrays = [layer.weight for layer in weights.stem if isinstance(layer, compact.Conv)]
    for block in weights.blocks:
        arrays += [layer.weight for layer in block.body if isinstance(layer, compact.Conv)]
    arrays += [weights.classifier_weight, weights.classifier_bias]
    for a in arrays:
        assert not any(np.shares_memory(a, b) for b in bank.state.values())
        a += 1.0                                                 # writable, and private
    assert all(np.array_equal(before[k], bank.state[k]) for k in before)


def test_storage_counts_int8_weights_as_bytes_plus_scales(backbone):
    f32 = CompressionConfig((StageConfig(depth=1),) * 3, 16)
    q8 = CompressionConfig((StageConfig(depth=1, int8=True),) * 3, 16)
    wf, wq = compact.materialise(backbone.weight_bank(), f32), compact.materialise(
        backbone.weight_bank(), q8)
    params = sum(p.numel() for p in backbone.materialise(f32).parameters())
    assert wf.storage_bytes == 4 * params
    net = backbone.materialise(q8)
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    assert wq.storage_bytes == (sum(p.numel() + 4 * p.shape[0] for p in weights)
                                + 4 * sum(p.numel() for p in biases))


def test_compact_net_round_trips_through_its_arrays(backbone):
    config = CompressionConfig.from_id("r20-w50d2sk50q-w75d1ck25f-w25d3sk100q")
    net = backbone.materialise(config)
    again = type(net).from_weights(net.to_weights())
    x = torch.randn(2, 1, 20, 20)
    with torch.no_grad():
        assert torch.equal(net(x), again(x))
    assert again.storage_bytes == net.storage_bytes


def test_the_layout_is_the_supernet_s(backbone):
    """BackboneArch (torch-free) names and shapes every tensor exactly as the modules do."""
    for model in (backbone, build_backbone(stage_channels=(4, 8, 8))):
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert model.layout.state_shapes() == shapes
        units = {n for n, m in model.named_modules() if isinstance(m, operators.ElasticConvBN)}
        assert set(model.layout.units()) == units


def test_low_rank_factors_do_not_depend_on_the_eigensolver_s_signs(monkeypatch):
    """Either sign is an eigenvector; the factors (and the activations between them, which
    static int8 quantises with calibrated ranges) must come out the same on every machine."""
    rng = np.random.default_rng(4)
    eigh = np.linalg.eigh

    def flipped(a):
        values, vectors = eigh(a)
        return values, vectors * np.where(np.arange(len(values)) % 2, -1.0, 1.0)

    for shape in ((12, 27), (27, 12)):                    # wide (out <= fan_in) and tall
        m = rng.standard_normal(shape).astype(np.float32)
        first, second = compact.low_rank_factors(m, 0.5)
        basis = second if shape[0] <= shape[1] else first.T
        assert np.all(basis[np.abs(basis).argmax(0), np.arange(basis.shape[1])] > 0)
        monkeypatch.setattr(np.linalg, "eigh", flipped)
        again = compact.low_rank_factors(m, 0.5)
        monkeypatch.setattr(np.linalg, "eigh", eigh)
        assert np.array_equal(again[0], first) and np.array_equal(again[1], second)
