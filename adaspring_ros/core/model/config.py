"""CompressionConfig: which compression operator choice every stage of the backbone uses.

One config type with one serialisation (dict / JSON / short id) is shared by training, profiling,
the runtime search and the ROS messages (``msg_convert`` maps it to the CompressionConfig message).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = [
    "ConfigError",
    "SearchSpace",
    "StageConfig",
    "CompressionConfig",
    "DEFAULT_SPACE",
]


class ConfigError(ValueError):
    """A compression config (or a part of one) that does not fit the search space."""


@dataclass(frozen=True)
class SearchSpace:
    """The catalogue of choices the backbone was trained for (the operator catalogue Δ).

    Choices are ordered from the most compressed to the least compressed, so the last entry of
    every tuple is the uncompressed backbone.
    """

    num_stages: int = 3
    widths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    depths: tuple[int, ...] = (1, 2, 3)
    operators: tuple[str, ...] = ("dwsep", "conv")
    ranks: tuple[float, ...] = (0.25, 0.5, 1.0)
    int8: tuple[bool, ...] = (True, False)
    resolutions: tuple[int, ...] = (16, 20, 24, 28)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_stages": self.num_stages,
            "widths": list(self.widths),
            "depths": list(self.depths),
            "operators": list(self.operators),
            "ranks": list(self.ranks),
            "int8": list(self.int8),
            "resolutions": list(self.resolutions),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpace":
        try:
            return cls(
                num_stages=int(data["num_stages"]),
                widths=tuple(float(v) for v in data["widths"]),
                depths=tuple(int(v) for v in data["depths"]),
                operators=tuple(str(v) for v in data["operators"]),
                ranks=tuple(float(v) for v in data["ranks"]),
                int8=tuple(bool(v) for v in data["int8"]),
                resolutions=tuple(int(v) for v in data["resolutions"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid search space description: {exc}") from exc

    @property
    def size(self) -> int:
        """Number of distinct configs in the space."""
        per_stage = (
            len(self.widths) * len(self.depths) * len(self.operators) * len(self.ranks)
            * len(self.int8)
        )
        return per_stage**self.num_stages * len(self.resolutions)


DEFAULT_SPACE = SearchSpace()

_OP_CODES = {"conv": "c", "dwsep": "s"}
_OP_FROM_CODE = {v: k for k, v in _OP_CODES.items()}
# ASCII digits only (re.ASCII): ids are machine-written, and int() reads other scripts' digits.
_STAGE_ID = re.compile(r"^w(\d+)d(\d+)([a-z])k(\d+)([qf])$", re.ASCII)
_RESOLUTION_ID = re.compile(r"^r(\d+)$", re.ASCII)
_MAX_ID_LENGTH = 512


@dataclass(frozen=True)
class StageConfig:
    """The choice of every operator for one stage of the backbone.

    width:    fraction of the stage's channels kept (channels are ordered by importance).
    depth:    number of residual blocks executed (the rest are skipped).
    operator: "conv" (standard 3x3 convolution) or "dwsep" (depthwise-separable variant).
    rank:     kept fraction of the rank of each block's convolutions (1.0 = no factorisation).
    int8:     weights quantised to int8 per output channel.
    """

    width: float = 1.0
    depth: int = 3
    operator: str = "conv"
    rank: float = 1.0
    int8: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "depth": self.depth,
            "operator": self.operator,
            "rank": self.rank,
            "int8": self.int8,
        }

    @property
    def code(self) -> str:
        op = _OP_CODES.get(self.operator, "?")
        quant = "q" if self.int8 else "f"
        return f"w{round(self.width * 100)}d{self.depth}{op}k{round(self.rank * 100)}{quant}"


def _match(value: Any, choices: Iterable[Any], what: str, where: str) -> Any:
    """Return the choice equal to ``value`` (floats within 1e-6) or raise ConfigError."""
    choices = tuple(choices)
    for choice in choices:
        if isinstance(choice, bool) or isinstance(value, bool):
            if isinstance(choice, bool) and isinstance(value, bool) and choice == value:
                return choice
            continue
        if isinstance(choice, str):
            if value == choice:
                return choice
            continue
        try:
            if abs(float(value) - float(choice)) < 1e-6:
                return choice
        except (TypeError, ValueError):
            break
    raise ConfigError(f"{where}: {what}={value!r} is not one of {list(choices)}")


@dataclass(frozen=True)
class CompressionConfig:
    """One variant of the backbone: a StageConfig per stage and the input resolution."""

    stages: tuple[StageConfig, ...] = field(
        default_factory=lambda: tuple(StageConfig() for _ in range(DEFAULT_SPACE.num_stages))
    )
    resolution: int = 28

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def full(cls, space: SearchSpace = DEFAULT_SPACE) -> "CompressionConfig":
        """The uncompressed backbone."""
        stage = StageConfig(
            width=space.widths[-1], depth=space.depths[-1], operator=space.operators[-1],
            rank=space.ranks[-1], int8=space.int8[-1],
        )
        return cls(stages=(stage,) * space.num_stages, resolution=space.resolutions[-1])

    @classmethod
    def smallest(cls, space: SearchSpace = DEFAULT_SPACE) -> "CompressionConfig":
        """The most compressed variant the space holds."""
        stage = StageConfig(
            width=space.widths[0], depth=space.depths[0], operator=space.operators[0],
            rank=space.ranks[0], int8=space.int8[0],
        )
        return cls(stages=(stage,) * space.num_stages, resolution=space.resolutions[0])

    def validated(self, space: SearchSpace = DEFAULT_SPACE) -> "CompressionConfig":
        """Return this config with values snapped to the space's choices, or raise ConfigError."""
        if len(self.stages) != space.num_stages:
            raise ConfigError(
                f"config has {len(self.stages)} stages, the backbone has {space.num_stages}"
            )
        stages = []
        for i, s in enumerate(self.stages):
            where = f"stage {i}"
            if not isinstance(s, StageConfig):
                raise ConfigError(f"{where}: expected a StageConfig, got {type(s).__name__}")
            stages.append(StageConfig(
                width=_match(s.width, space.widths, "width", where),
                depth=_match(s.depth, space.depths, "depth", where),
                operator=_match(s.operator, space.operators, "operator", where),
                rank=_match(s.rank, space.ranks, "rank", where),
                int8=_match(s.int8, space.int8, "int8", where),
            ))
        resolution = _match(self.resolution, space.resolutions, "resolution", "config")
        return CompressionConfig(stages=tuple(stages), resolution=resolution)

    # -- identity -----------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """Stable short id, e.g. ``r28-w100d3ck100f-w50d2sk50f-w25d1ck25q``; parse with from_id."""
        return f"r{self.resolution}-" + "-".join(s.code for s in self.stages)

    @classmethod
    def from_id(cls, config_id: str, space: SearchSpace = DEFAULT_SPACE) -> "CompressionConfig":
        """Parse an id written by :attr:`id`; ConfigError naming what is wrong.

        Only ASCII digits count: ``str.isdigit`` and ``\\d`` also accept "²" or "٢", which
        ``int()`` then refuses (a bare ValueError) or reads as another number.
        """
        text = str(config_id).strip()
        if len(text) > _MAX_ID_LENGTH:  # also keeps int() below its digit limit
            raise ConfigError(f"config id of {len(text)} characters is longer than any valid "
                              f"one ({_MAX_ID_LENGTH})")
        if not text.isascii():
            bad = sorted({c for c in text if not c.isascii()})
            raise ConfigError(f"malformed config id {config_id!r}: non-ASCII character(s) "
                              f"{''.join(bad)!r}")
        parts = text.split("-")
        head = _RESOLUTION_ID.match(parts[0])
        if len(parts) < 2 or head is None:
            raise ConfigError(f"malformed config id {config_id!r}: expected r<resolution>-"
                              f"<stage>-..., e.g. {cls.full(space).id}")
        stages = []
        for i, code in enumerate(parts[1:]):
            m = _STAGE_ID.match(code)
            if m is None or m.group(3) not in _OP_FROM_CODE:
                raise ConfigError(f"malformed stage {i} code {code!r} in config id {config_id!r}")
            stages.append(StageConfig(
                width=int(m.group(1)) / 100.0, depth=int(m.group(2)),
                operator=_OP_FROM_CODE[m.group(3)], rank=int(m.group(4)) / 100.0,
                int8=m.group(5) == "q",
            ))
        return cls(stages=tuple(stages), resolution=int(head.group(1))).validated(space)

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], space: SearchSpace = DEFAULT_SPACE
    ) -> "CompressionConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {"resolution", "stages", "id"}
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        raw_stages = data.get("stages")
        if not isinstance(raw_stages, (list, tuple)):
            raise ConfigError("config needs a 'stages' list")
        stages = []
        for i, raw in enumerate(raw_stages):
            if not isinstance(raw, Mapping):
                raise ConfigError(f"stage {i}: expected a mapping, got {type(raw).__name__}")
            unknown = set(raw) - {"width", "depth", "operator", "rank", "int8"}
            if unknown:
                raise ConfigError(f"stage {i}: unknown operator(s) {sorted(unknown)}")
            missing = {"width", "depth", "operator", "rank", "int8"} - set(raw)
            if missing:
                raise ConfigError(f"stage {i}: missing operator(s) {sorted(missing)}")
            stages.append(StageConfig(
                width=raw["width"], depth=raw["depth"], operator=raw["operator"],
                rank=raw["rank"], int8=raw["int8"],
            ))
        resolution = data.get("resolution", space.resolutions[-1])
        config = cls(stages=tuple(stages), resolution=resolution)
        return config.validated(space)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, space: SearchSpace = DEFAULT_SPACE) -> "CompressionConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from exc
        return cls.from_dict(data, space)

    def __str__(self) -> str:
        return self.id
