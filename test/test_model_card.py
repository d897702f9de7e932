"""The model card (core/model/card.py): round trip, validation that names the field, and the card
in checkpoints and profile tables: stored, read back, defaulted for older files, checked against
the weights."""

import dataclasses
import json

import pytest
import torch

from adaspring_ros.core.model.card import FASHION_MNIST_CARD, CardError, ModelCard
from adaspring_ros.core.model.checkpoint import (
    CheckpointError,
    backbone_checkpoint,
    load_backbone,
    save_backbone,
    write_checksum,
)
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig
from adaspring_ros.core.model.profile_table import ProfileError, ProfileTable
from adaspring_ros.core.model.supernet import build_backbone


def colour_card(**overrides):
    fields = dict(channels=3, channel_order="RGB", mean=(0.5, 0.4, 0.3), std=(0.25, 0.25, 0.25),
                  resolutions=(32, 48, 64), classes=("bird", "fruit", "tool"),
                  resize="letterbox", interpolation="bicubic", mirror_symmetric=False,
                  data="a test folder")
    fields.update(overrides)
    return ModelCard(**fields)


def test_round_trip_keeps_every_field():
    for card in (FASHION_MNIST_CARD, colour_card()):
        data = card.to_dict()
        assert data["card_version"] == 1
        assert ModelCard.from_dict(data) == card


def test_fashion_mnist_card_describes_the_shipped_task():
    card = FASHION_MNIST_CARD
    assert (card.channels, card.num_classes, card.resolutions[-1]) == (1, 10, 28)
    assert card.classes[0] == "T-shirt/top" and card.classes[-1] == "Ankle boot"


@pytest.mark.parametrize("overrides, field", [
    (dict(channels=2), "channels"),
    (dict(channel_order="BGR"), "channel_order"),
    (dict(mean=(0.5,)), "mean"),
    (dict(std=(0.0, 0.1, 0.1)), "std"),
    (dict(resolutions=(64, 32)), "resolutions"),
    (dict(resolutions=(512,)), "resolutions"),
    (dict(classes=("only",)), "class"),
    (dict(classes=("a", "a")), "class"),
    (dict(resize="stretch"), "resize"),
    (dict(interpolation="lanczos9"), "interpolation"),
])
def test_invalid_fields_are_refused_by_name(overrides, field):
    with pytest.raises(CardError, match=field):
        colour_card(**overrides)


def test_from_dict_names_a_missing_field_and_refuses_a_newer_version():
    data = colour_card().to_dict()
    del data["classes"]
    with pytest.raises(CardError, match="classes"):
        ModelCard.from_dict(data)
    with pytest.raises(CardError, match="version"):
        ModelCard.from_dict({**colour_card().to_dict(), "card_version": 99})
    with pytest.raises(CardError, match="mapping"):
        ModelCard.from_dict(["not", "a", "card"])


# -- the card in checkpoints and profile tables -------------------------------------------------
@pytest.fixture(scope="module")
def colour_backbone():
    torch.manual_seed(0)
    return build_backbone(stage_channels=(4, 8, 8), classes=("bird", "fruit", "tool"),
                          in_channels=3).eval()


def space_card(**overrides):
    """The colour card at the default space's resolutions (a backbone's card must match)."""
    return colour_card(resolutions=DEFAULT_SPACE.resolutions, **overrides)


def pre_card_file(model, path):
    """Write ``model`` as a version-1 checkpoint, the format before cards."""
    ckpt = backbone_checkpoint(model)
    ckpt["version"] = 1
    del ckpt["card"], ckpt["arch"]["in_channels"]
    torch.save(ckpt, path)
    write_checksum(path)


def test_colour_card_round_trips_through_a_checkpoint(tmp_path, colour_backbone):
    path = tmp_path / "colour.pt"
    save_backbone(colour_backbone, path, card=space_card())
    loaded = load_backbone(path)
    assert loaded.card == space_card() and loaded.in_channels == 3
    x = torch.randn(2, 3, 16, 16)
    config = CompressionConfig.smallest(loaded.space)
    with torch.no_grad():
        loaded.set_active(config)
        net = loaded.materialise(config)
        torch.testing.assert_close(net(x), loaded(x))
    assert net.in_channels == 3
    again = tmp_path / "again.pt"
    save_backbone(loaded, again)            # a loaded backbone keeps its card when re-saved
    assert load_backbone(again).card == space_card()


def test_a_backbone_saved_without_a_card_gets_the_legacy_grey_card(tmp_path, colour_backbone):
    grey = build_backbone(stage_channels=(4, 8, 8), classes=("cat", "dog"))
    save_backbone(grey, tmp_path / "grey.pt")
    card = load_backbone(tmp_path / "grey.pt").card
    assert card.classes == ("cat", "dog") and card.mean == FASHION_MNIST_CARD.mean
    assert "not recorded" in card.data
    with pytest.raises(CheckpointError, match="1 input channel.*take 3"):
        save_backbone(colour_backbone, tmp_path / "colour.pt")
    assert not (tmp_path / "colour.pt").exists()


def test_pre_card_checkpoint_loads_with_the_fashion_mnist_card(tmp_path):
    torch.manual_seed(0)
    small_space = dataclasses.replace(DEFAULT_SPACE, resolutions=(16, 20))
    for space in (DEFAULT_SPACE, small_space):
        path = tmp_path / "v1.pt"
        pre_card_file(build_backbone(space, (4, 8, 8), FASHION_MNIST_CARD.classes), path)
        model = load_backbone(path)
        assert model.card == FASHION_MNIST_CARD.with_resolutions(space.resolutions)
        assert model.in_channels == 1


def test_shipped_pre_card_files_get_the_fashion_mnist_card():
    from adaspring_ros.core.paths import default_backbone, default_profile_table

    backbone, table = default_backbone(), default_profile_table()
    if not backbone.exists() or not table.exists():
        pytest.skip("no shipped backbone in this checkout")
    recorded = backbone.with_name(backbone.name + ".sha256").read_text().split()[0]
    model = load_backbone(backbone)
    assert model.sha256 == recorded and model.card == FASHION_MNIST_CARD
    loaded = ProfileTable.load(table)
    assert loaded.card == FASHION_MNIST_CARD
    loaded.require_card(model.card)


@pytest.mark.parametrize("card, message", [
    (dict(channels=3, channel_order="RGB", mean=(0.5,) * 3, std=(0.2,) * 3),
     r"3 input channel\(s\), the stem's weights take 1"),
    (dict(classes=("a", "b", "c")), "names 3 classes, the classifier has 10 outputs"),
    (dict(classes=tuple(f"c{i}" for i in range(10))), "class names"),
    (dict(resolutions=(32, 48)), r"resolutions \[32, 48\] differ from the space's \[16, 20"),
])
def test_a_card_that_contradicts_its_weights_is_refused(tmp_path, card, message):
    model = build_backbone(stage_channels=(4, 8, 8))
    path = tmp_path / "bb.pt"
    save_backbone(model, path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["card"] = dataclasses.replace(FASHION_MNIST_CARD, **card).to_dict()
    torch.save(ckpt, path)
    write_checksum(path)
    with pytest.raises(CheckpointError, match=message):
        load_backbone(path)
    with pytest.raises(CheckpointError, match=message):
        save_backbone(model, tmp_path / "other.pt",
                      card=dataclasses.replace(FASHION_MNIST_CARD, **card))


def test_a_damaged_card_in_a_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "bb.pt"
    save_backbone(build_backbone(stage_channels=(4, 8, 8)), path)
    ckpt = torch.load(path, weights_only=True)
    for card in ({**FASHION_MNIST_CARD.to_dict(), "std": [0.0]}, "grey", None):
        ckpt["card"] = card
        if card is None:
            del ckpt["card"]
        torch.save(ckpt, path)
        write_checksum(path)
        with pytest.raises(CheckpointError, match="bb.pt.*(std|card)"):
            load_backbone(path)


def test_colour_card_round_trips_through_a_profile_table(tmp_path):
    from tools.synthetic_tables import synthetic_table

    table = synthetic_table(3)
    assert table.card == FASHION_MNIST_CARD         # a table built without a card
    table.card = space_card()
    path = tmp_path / "t.json"
    table.save(path)
    assert json.loads(path.read_text())["schema_version"] == 2
    loaded = ProfileTable.load(path)
    assert loaded.card == space_card()
    loaded.require_card(space_card())
    with pytest.raises(ProfileError, match="channels: table 3, backbone 1.*adaspring profile"):
        loaded.require_card(FASHION_MNIST_CARD)


def test_pre_card_table_loads_with_the_fashion_mnist_card_and_bad_cards_are_refused():
    from tools.synthetic_tables import synthetic_table

    small_space = dataclasses.replace(DEFAULT_SPACE, resolutions=(16, 20))
    data = synthetic_table(3, space=small_space).to_dict()
    data["schema_version"] = 1
    card = data.pop("card")
    assert ProfileTable.from_dict(data).card == FASHION_MNIST_CARD.with_resolutions((16, 20))
    data["schema_version"] = 2
    with pytest.raises(ProfileError, match="no model card"):
        ProfileTable.from_dict(data)
    with pytest.raises(ProfileError, match="std"):
        ProfileTable.from_dict({**data, "card": {**card, "std": [2.0]}})
    with pytest.raises(ProfileError, match=r"resolutions \[16, 20, 24, 28\] differ"):
        ProfileTable.from_dict({**data, "card": FASHION_MNIST_CARD.to_dict()})
