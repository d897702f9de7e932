"""The model card: what a backbone expects as input and what its outputs mean.

Every checkpoint and profile table carries one, so that training, profiling and the perception
node preprocess a frame the same way without guessing (the role of timm's ``pretrained_cfg`` and
torchvision's weights ``meta``): how many channels and in which order, the per-channel mean/std,
the input resolutions of the search space, how a frame of another shape is fitted, the class
names, whether the task is mirror-symmetric (horizontal flips are a valid augmentation), and where
the data came from. Files written before cards existed get :func:`legacy_card`: the Fashion-MNIST
preprocessing every input then went through, at the file's own resolutions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from adaspring_ros.core.data.transforms import MEAN, STD

__all__ = ["CardError", "ModelCard", "FASHION_MNIST_CARD", "CARD_VERSION", "RESIZE_POLICIES",
           "INTERPOLATIONS", "MAX_RESOLUTION", "legacy_card"]

CARD_VERSION = 1
RESIZE_POLICIES = ("centre_crop", "letterbox")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
CHANNEL_ORDERS = {1: ("L",), 3: ("RGB",)}
MAX_RESOLUTION = 224


class CardError(ValueError):
    """A model card that is missing a field, out of range, or contradicts its weights."""


@dataclass(frozen=True)
class ModelCard:
    """Input contract and label space of one backbone (see the module docstring)."""

    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resolutions: tuple[int, ...]
    classes: tuple[str, ...]
    channel_order: str = "L"
    resize: str = "centre_crop"
    interpolation: str = "bilinear"
    mirror_symmetric: bool = True
    data: str = ""

    def __post_init__(self) -> None:
        if self.channels not in CHANNEL_ORDERS:
            raise CardError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.channel_order not in CHANNEL_ORDERS[self.channels]:
            raise CardError(f"channel_order {self.channel_order!r} does not fit {self.channels} "
                            f"channel(s); expected one of {CHANNEL_ORDERS[self.channels]}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.channels:
                raise CardError(f"{name} has {len(values)} value(s) for "
                                f"{self.channels} channel(s)")
        if not all(0.0 <= m <= 1.0 for m in self.mean):
            raise CardError(f"mean must lie in [0, 1] (pixels scaled to [0, 1]), got {self.mean}")
        if not all(0.0 < s <= 1.0 for s in self.std):
            raise CardError(f"std must lie in (0, 1], got {self.std}")
        if not self.resolutions or list(self.resolutions) != sorted(set(self.resolutions)):
            raise CardError(f"resolutions must be distinct and ascending, got {self.resolutions}")
        if not all(8 <= r <= MAX_RESOLUTION for r in self.resolutions):
            raise CardError(f"resolutions must lie in [8, {MAX_RESOLUTION}] px, "
                            f"got {self.resolutions}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise CardError(f"a classifier needs at least 2 distinct class names, "
                            f"got {len(self.classes)} ({len(set(self.classes))} distinct)")
        if any(not c or not c.strip() for c in self.classes):
            raise CardError("class names must not be empty")
        if self.resize not in RESIZE_POLICIES:
            raise CardError(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise CardError(f"interpolation must be one of {INTERPOLATIONS}, "
                            f"got {self.interpolation!r}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_resolutions(self, resolutions: tuple[int, ...]) -> ModelCard:
        return replace(self, resolutions=tuple(int(r) for r in resolutions))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("mean", "std", "resolutions", "classes"):
            out[key] = list(out[key])
        out["card_version"] = CARD_VERSION
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Parse and validate; raises CardError naming the field."""
        if not isinstance(data, Mapping):
            raise CardError(f"a model card is a mapping, got {type(data).__name__}")
        version = data.get("card_version", CARD_VERSION)
        if version != CARD_VERSION:
            raise CardError(f"model card version {version!r} is not supported "
                            f"(this package reads version {CARD_VERSION})")
        try:
            return cls(
                channels=int(data["channels"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                resolutions=tuple(int(v) for v in data["resolutions"]),
                classes=tuple(str(v) for v in data["classes"]),
                channel_order=str(data.get("channel_order", "L" if int(data["channels"]) == 1
                                           else "RGB")),
                resize=str(data.get("resize", "centre_crop")),
                interpolation=str(data.get("interpolation", "bilinear")),
                mirror_symmetric=bool(data.get("mirror_symmetric", True)),
                data=str(data.get("data", "")),
            )
        except KeyError as exc:
            raise CardError(f"model card lacks the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, CardError):
                raise
            raise CardError(f"invalid model card: {exc}") from exc


FASHION_MNIST_CARD = ModelCard(
    channels=1,
    channel_order="L",
    mean=(MEAN,),
    std=(STD,),
    resolutions=(16, 20, 24, 28),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    resize="centre_crop",
    interpolation="bilinear",
    mirror_symmetric=True,
    data="Fashion-MNIST train split, Debian package dataset-fashion-mnist "
         "(/usr/share/datasets/fashion-mnist, 60,000 28x28 grey images)",
)


def legacy_card(resolutions: Sequence[int],
                classes: Sequence[str] | None = None) -> ModelCard:
    """The card of a file written before cards existed, or of a grey backbone saved without one.

    Every input of such a backbone went through the same preprocessing (grey, Fashion-MNIST's
    mean/std, centre crop, bilinear), so that part of the card is known; the resolutions are the
    file's own space's, and the class names its own (a table names none: Fashion-MNIST's, the
    only data the profiler read). The data is Fashion-MNIST's only when the class names are.
    """
    card = FASHION_MNIST_CARD.with_resolutions(tuple(resolutions))
    if classes is None or tuple(classes) == card.classes:
        return card
    return replace(card, classes=tuple(str(c) for c in classes),
                   data="not recorded (grey images normalised with Fashion-MNIST's mean/std)")
