"""core.model.supernet: the compact copy equals the elastic forward, materialise is
reversible, configs are checked."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from elastic_backbone import every_stage, tiny_backbone

from adaspring_ros.core.model.card import FASHION_MNIST_CARD
from adaspring_ros.core.model.checkpoint import load_backbone, save_backbone
from adaspring_ros.core.model.config import (
    DEFAULT_SPACE,
    CompressionConfig,
    ConfigError,
    StageConfig,
)
from adaspring_ros.core.model.operators import (
    ElasticConvBN,
)
from adaspring_ros.core.model.supernet import CompactNet, build_backbone


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone()



def _random_config(rng: random.Random) -> CompressionConfig:
    sp = DEFAULT_SPACE
    stages = tuple(StageConfig(rng.choice(sp.widths), rng.choice(sp.depths),
                               rng.choice(sp.operators), rng.choice(sp.ranks),
                               rng.choice(sp.int8)) for _ in range(sp.num_stages))
    return CompressionConfig(stages, rng.choice(sp.resolutions))


ONE_OPERATOR = (
    [every_stage(width=w) for w in DEFAULT_SPACE.widths]
    + [every_stage(depth=d) for d in DEFAULT_SPACE.depths[:-1]]
    + [every_stage(operator="dwsep"), every_stage(operator="dwsep", rank=0.25)]
    + [every_stage(rank=r) for r in DEFAULT_SPACE.ranks[:-1]]
    + [every_stage(int8=True), every_stage(int8=True, rank=0.5),
       every_stage(int8=True, operator="dwsep")]
    + [every_stage(resolution=r) for r in DEFAULT_SPACE.resolutions[:-1]]
    + [CompressionConfig.smallest()]
    + [_random_config(random.Random(i)) for i in range(6)]
)



@pytest.mark.parametrize("config", ONE_OPERATOR, ids=lambda c: c.id)
def test_compact_equals_elastic_forward(backbone, config):
    x = torch.randn(3, 1, config.resolution, config.resolution)
    backbone.set_active(config)
    with torch.no_grad():
        elastic = backbone(x)
        compact = backbone.materialise(config)(x)
    assert compact.shape == (3, 10)
    torch.testing.assert_close(compact, elastic, rtol=1e-4, atol=1e-4)



def test_compact_is_plain_and_independent(backbone):
    config = every_stage(width=0.5, depth=2, rank=0.5, operator="dwsep")
    net = backbone.materialise(config)
    assert isinstance(net, CompactNet) and net.config == config and net.resolution == 28
    kinds = {type(m).__name__ for m in net.modules()}
    assert "SwitchableBatchNorm2d" not in kinds and "BatchNorm2d" not in kinds
    supernet_storages = {p.untyped_storage().data_ptr() for p in backbone.parameters()}
    for p in net.parameters():
        assert p.untyped_storage().data_ptr() not in supernet_storages
    # Narrow, shallow, factorised: fewer parameters than the full compact copy.
    full = backbone.materialise(CompressionConfig.full())
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in full.parameters())



def test_materialise_is_reversible(backbone):
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    big = CompressionConfig.full()
    first = backbone.materialise(big).state_dict()
    for config in ONE_OPERATOR:
        backbone.materialise(config)
    again = backbone.materialise(big).state_dict()
    assert first.keys() == again.keys()
    for k in first:
        assert torch.equal(first[k], again[k]), k
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), f"supernet tensor {k} changed"



def test_depth_skips_blocks(backbone):
    shallow = backbone.materialise(every_stage(depth=1))
    deep = backbone.materialise(every_stage(depth=3))
    assert len(shallow.blocks) == 3 and len(deep.blocks) == 9



def test_reorder_channels_keeps_full_function():
    torch.manual_seed(1)
    model = build_backbone(stage_channels=(8, 12, 16)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ElasticConvBN):
                m.bn.weight.uniform_(0.2, 2.0)
        x = torch.randn(2, 1, 28, 28)
        before = model(x)
        model.reorder_channels()
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)
        # Hidden channels have a single writer: after the sort they are in importance order.
        imp = model.stages[1][1].units["conv"][0].output_importance()
    assert torch.all(imp[:-1] >= imp[1:])



def test_other_input_sides_keep_the_weights_and_take_the_nearest_statistics(backbone):
    wider = backbone.with_resolutions((20, 28, 36, 44))
    assert wider.space.resolutions == (20, 28, 36, 44)
    assert wider.active == CompressionConfig.full(wider.space)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        for side in (20, 28):      # sides of both spaces: the same function
            half = every_stage(resolution=side, width=0.5)
            backbone.set_active(half)
            wider.set_active(CompressionConfig(half.stages, side))
            small = torch.nn.functional.interpolate(x, size=side)
            torch.testing.assert_close(wider(small), backbone(small))
        # a new side normalises with the nearest old side's row: 36 and 44 with 28's
        for side in (36, 44):
            for width in DEFAULT_SPACE.widths:
                stage = StageConfig(width=width)
                for old_bn, new_bn in ((backbone.stem.bn, wider.stem.bn),
                                       (backbone.stages[2][0].units["conv"][0].bn,
                                        wider.stages[2][0].units["conv"][0].bn)):
                    assert torch.equal(old_bn.running_var[backbone.bn_key(stage, 28)],
                                       new_bn.running_var[wider.bn_key(stage, side)])
            wider.set_active(CompressionConfig(every_stage().stages, side))
            assert wider(torch.randn(1, 1, side, side)).shape == (1, 10)
    assert backbone.space.resolutions == DEFAULT_SPACE.resolutions     # the original is kept


@pytest.mark.parametrize("bad", [
    CompressionConfig((StageConfig(width=0.3),) * 3, 28),
    CompressionConfig((StageConfig(depth=4),) * 3, 28),
    CompressionConfig((StageConfig(operator="fft"),) * 3, 28),
    CompressionConfig((StageConfig(rank=0.1),) * 3, 28),
    CompressionConfig((StageConfig(),) * 2, 28),
    CompressionConfig((StageConfig(),) * 3, 32),
])
def test_invalid_configs_are_rejected(backbone, bad):
    with pytest.raises(ConfigError):
        backbone.materialise(bad)
    with pytest.raises(ConfigError):
        backbone.set_active(bad)



def test_wrong_input_resolution_is_rejected(backbone):
    backbone.set_active(every_stage(resolution=16))
    with pytest.raises(ValueError, match="expects 16x16"):
        backbone(torch.randn(1, 1, 28, 28))



def test_shipped_backbone_checksum():
    from adaspring_ros.core.paths import default_backbone

    path = default_backbone()
    if not path.exists():
        pytest.skip("no shipped backbone in this checkout")
    model = load_backbone(path)
    assert len(model.sha256) == 64 and len(model.classes) == 10
    net = model.materialise(CompressionConfig.smallest(model.space))
    assert net(torch.zeros(1, 1, 16, 16)).shape == (1, 10)


@pytest.mark.parametrize("stem_stride", [2, 4])
def test_a_strided_stem_divides_the_first_stage_and_its_compact_copy_follows(stem_stride,
                                                                              tmp_path):
    torch.manual_seed(1)
    space = dataclasses.replace(DEFAULT_SPACE, resolutions=(48, 64))
    model = build_backbone(space, (8, 12, 16), in_channels=3, stem_stride=stem_stride).eval()
    sides = []
    handle = model.stages[0][0].register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]))
    x = torch.randn(2, 3, 64, 64)
    for config in (CompressionConfig.full(space), CompressionConfig.smallest(space),
                   CompressionConfig.full(space)):
        model.set_active(config)
        with torch.no_grad():
            xi = x[..., :config.resolution, :config.resolution]
            elastic = model(xi)
            compact = model.materialise(config)(xi)
        torch.testing.assert_close(compact, elastic, rtol=1e-4, atol=1e-4)
    handle.remove()
    assert sides[0] == 64 // stem_stride and sides[1] == 48 // stem_stride
    path = tmp_path / "bb.pt"
    save_backbone(model, path, card=dataclasses.replace(
        FASHION_MNIST_CARD, channels=3, channel_order="RGB", mean=(0.5,) * 3, std=(0.25,) * 3,
        resolutions=(48, 64), classes=model.classes))
    loaded = load_backbone(path)
    assert loaded.stem_stride == stem_stride and loaded.arch()["stem_stride"] == stem_stride
    with torch.no_grad():
        torch.testing.assert_close(loaded.materialise(config)(x), model.materialise(config)(x))
    with pytest.raises(ValueError, match="stem_stride"):
        build_backbone(space, (8, 12, 16), stem_stride=3)
