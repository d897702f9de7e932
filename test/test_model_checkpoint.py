"""core.model.checkpoint: the one checkpoint format, its checksum and shape checks, and the
shipped file."""

from __future__ import annotations

import pytest
import torch
from elastic_backbone import every_stage, tiny_backbone

from adaspring_ros.core.model.checkpoint import (
    CheckpointError,
    load_backbone,
    save_backbone,
    write_checksum,
)
from adaspring_ros.core.model.supernet import build_backbone


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone()




def test_checkpoint_round_trip(tmp_path, backbone):
    path = tmp_path / "bb.pt"
    digest = save_backbone(backbone, path, {"note": "test"})
    assert (tmp_path / "bb.pt.sha256").read_text().split()[0] == digest
    loaded = load_backbone(path)
    assert loaded.sha256 == digest and loaded.classes == backbone.classes
    assert loaded.space == backbone.space and loaded.meta["note"] == "test"
    config = every_stage(width=0.75, operator="dwsep")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.materialise(config)(x), backbone.materialise(config)(x))



def test_checkpoint_keeps_variant_bn_and_rejects_bad_ones(tmp_path, backbone):
    config = every_stage(width=0.5, depth=1)
    c = 4                                                      # half of 8 stem channels
    model = build_backbone(stage_channels=(8, 12, 16))
    model.load_state_dict(backbone.state_dict())
    model.variant_bn[config.id] = {"stem": torch.stack([torch.zeros(c), torch.full((c,), 4.0)])}
    path = tmp_path / "bb.pt"
    save_backbone(model, path)
    loaded = load_backbone(path)
    assert torch.equal(loaded.variant_bn[config.id]["stem"], model.variant_bn[config.id]["stem"])
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        with_bank = loaded.materialise(config)(x)
        loaded.variant_bn.clear()
        assert not torch.allclose(loaded.materialise(config)(x), with_bank)
    model.variant_bn[config.id] = {"stages.0.0.units.conv.0": torch.zeros(3, c)}
    save_backbone(model, path)
    with pytest.raises(CheckpointError, match="variant_bn"):
        load_backbone(path)



def test_checkpoint_checksum_mismatch_and_truncation(tmp_path, backbone):
    path = tmp_path / "bb.pt"
    save_backbone(backbone, path)
    sums = tmp_path / "bb.pt.sha256"
    good = sums.read_text()
    sums.write_text("0" * 64 + "  bb.pt\n")
    with pytest.raises(CheckpointError, match="does not match"):
        load_backbone(path)
    sums.write_text(good)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="does not match"):
        load_backbone(path)
    with pytest.raises(CheckpointError, match="cannot load"):
        load_backbone(path, verify=False)
    sums.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_backbone(path)



def test_checkpoint_wrong_shapes_rejected(tmp_path, backbone):
    other = build_backbone(stage_channels=(8, 12, 20))
    path = tmp_path / "bb.pt"
    save_backbone(other, path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["arch"]["stage_channels"] = [8, 12, 16]      # the arch disagrees with the weights
    torch.save(ckpt, path)
    write_checksum(path)
    with pytest.raises(CheckpointError, match="shape"):
        load_backbone(path)

