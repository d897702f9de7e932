"""The model card (core/model/card.py): round trip, validation that names the field."""

import pytest

from adaspring_ros.core.model.card import FASHION_MNIST_CARD, CardError, ModelCard


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
