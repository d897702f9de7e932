"""ProfileTable: the measured cost and accuracy of each profiled variant.

Written by ``adaspring profile`` (core/offline/profiling.py), read by the runtime search, which
is why it is free of torch: the evolution side loads it cheaply. One JSON file, versioned by
``schema_version``. It carries the model card of the backbone it measured (its accuracies hold
for that input contract and label space only); schema 1 predates cards and gets the legacy one.
The questions asked of a table (its accuracy/latency Pareto front, the fastest variant within a
tolerance, the most accurate within a latency) live here with it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from adaspring_ros.core.model.card import CardError, ModelCard, legacy_card
from adaspring_ros.core.model.config import CompressionConfig, ConfigError, SearchSpace
from adaspring_ros.core.paths import default_profile_table

__all__ = [
    "SCHEMA_VERSION",
    "MEASUREMENTS",
    "ProfileError",
    "ProfileEntry",
    "ProfileTable",
    "pareto_front",
    "fastest_within",
    "most_accurate_within",
    "front_ids",
    "load_profile_table",
]

SCHEMA_VERSION = 2   # written; schema 1 (no model card) is still read
_READABLE_SCHEMAS = (1, SCHEMA_VERSION)
# What a table can hold: "accuracy" (top-1, int8 ranges, static costs; once per backbone, where
# the data is) and "latency" (latency and energy; once per device kind). A table that does not
# say holds both.
MEASUREMENTS = ("accuracy", "latency")


class ProfileError(ValueError):
    """A profile table file that cannot be used."""


# Every entry carries these measurements; units are in the names.
_METRICS = (
    "accuracy",          # top-1 on the held-out test split, fraction in [0, 1]
    "latency_ms_p50",    # batch-1 latency, median, fixed thread count, after warm-up
    "latency_ms_p95",
    "macs",              # multiply-accumulates per inference at the variant's resolution
    "params",            # parameter count of the compact module
    "storage_bytes",     # bytes to store the variant's weights (int8 weights count 1 byte)
    "peak_memory_mb",    # peak extra memory of one inference
    "energy_mj",         # energy per inference, millijoules (method in ProfileTable.energy_method)
)


@dataclass(frozen=True)
class ProfileEntry:
    config: CompressionConfig
    accuracy: float
    latency_ms_p50: float
    latency_ms_p95: float
    macs: int
    params: int
    storage_bytes: int
    peak_memory_mb: float
    energy_mj: float
    # Static int8 calibration: activation (lo, hi) per quantisation point of the engine's graph
    # (``engine.onnx_graph``), measured on training images. Empty for all-float variants, or
    # when the engine quantises weights only; a swap to this variant needs no data.
    int8_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.config.id

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.config.id, "config": self.config.to_dict()}
        for name in _METRICS:
            out[name] = getattr(self, name)
        if self.int8_ranges:
            out["int8_ranges"] = {k: [float(lo), float(hi)] for k, (lo, hi) in
                                  sorted(self.int8_ranges.items())}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], space: SearchSpace, where: str) -> "ProfileEntry":
        if not isinstance(data, Mapping):
            raise ProfileError(f"{where}: expected a mapping")
        try:
            config = CompressionConfig.from_dict(data["config"], space)
        except KeyError:
            raise ProfileError(f"{where}: missing 'config'") from None
        except ConfigError as exc:
            raise ProfileError(f"{where}: {exc}") from exc
        values: dict[str, Any] = {}
        for name in _METRICS:
            if name not in data:
                raise ProfileError(f"{where}: missing '{name}'")
            try:
                value = float(data[name])
            except (TypeError, ValueError):
                raise ProfileError(f"{where}: '{name}' is not a number: {data[name]!r}") from None
            if not math.isfinite(value) or value < 0:
                raise ProfileError(f"{where}: '{name}' must be finite and >= 0, got {value}")
            if name == "accuracy" and value > 1.0:
                raise ProfileError(f"{where}: 'accuracy' is a fraction in [0, 1], got {value}")
            values[name] = int(value) if name in ("macs", "params", "storage_bytes") else value
        return cls(config=config, int8_ranges=_ranges(data.get("int8_ranges", {}), where),
                   **values)


def _ranges(raw: Any, where: str) -> dict[str, tuple[float, float]]:
    if not isinstance(raw, Mapping):
        raise ProfileError(f"{where}: 'int8_ranges' must be a mapping")
    out = {}
    for name, pair in raw.items():
        try:
            lo, hi = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ProfileError(f"{where}: int8 range {name!r} is not a (lo, hi) pair") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ProfileError(f"{where}: int8 range {name!r} must be finite with lo <= hi, "
                               f"got ({lo}, {hi})")
        out[str(name)] = (lo, hi)
    return out


@dataclass
class ProfileTable:
    """Measured variants of one trained backbone on one device."""

    space: SearchSpace
    entries: list[ProfileEntry]
    backbone_sha256: str = ""
    device: dict[str, Any] = field(default_factory=dict)
    energy_method: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    # The inference engine every latency and accuracy was measured in: name, version, threads.
    # A table that names no engine was measured in torch.
    engine: dict[str, Any] = field(default_factory=lambda: {"name": "torch"})
    # The model card of the measured backbone; None stands for the legacy grey card at this
    # table's resolutions (what every table without a card was measured on).
    card: ModelCard | None = None
    # Which of MEASUREMENTS the entries hold; the others are 0 in every entry.
    measured: tuple[str, ...] = MEASUREMENTS
    # What a forward pass costs on top of its latency_ms_p50 when it follows an idle gap of a
    # camera frame (caches and power state gone cold), ms, one term for every variant; how it
    # was measured is in meta["cold_start_method"]. None: not measured (tables timed before it
    # was, or on a device where nothing idles); the policy then adds nothing.
    cold_start_ms: float | None = None

    def __post_init__(self) -> None:
        self._by_id = {e.id: e for e in self.entries}
        self.measured = _measured(self.measured)
        if self.cold_start_ms is not None:
            value = self.cold_start_ms
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value) or value < 0:
                raise ProfileError(f"profile table 'cold_start_ms' must be a finite number "
                                   f">= 0, got {value!r}")
            self.cold_start_ms = float(value)
        if self.card is None:
            try:
                self.card = legacy_card(self.space.resolutions)
            except CardError as exc:
                raise ProfileError(f"profile table without a model card: {exc}") from exc
        if self.card.resolutions != self.space.resolutions:
            raise ProfileError(f"profile table: the model card's resolutions "
                               f"{list(self.card.resolutions)} differ from the space's "
                               f"{list(self.space.resolutions)}")

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, config_id: str) -> ProfileEntry | None:
        return self._by_id.get(config_id)

    @property
    def engine_name(self) -> str:
        return str(self.engine.get("name", "torch"))

    def require_engine(self, name: str) -> None:
        """ProfileError unless this table was measured in engine ``name``: latencies of one
        engine say little about another (ONNX Runtime runs these variants 3-10x faster)."""
        if self.engine_name not in (name, "synthetic"):
            raise ProfileError(
                f"the profile table was measured in engine {self.engine_name!r}, but the "
                f"variants run in {name!r}; profile them in it (adaspring profile --engine "
                f"{name}) or set the engine parameter to {self.engine_name!r}")

    @property
    def has_latency(self) -> bool:
        return "latency" in self.measured

    def require_latency(self, where: str = "the profile table") -> None:
        """ProfileError unless this table holds latencies and energies: an accuracy table
        (``adaspring profile --accuracy-only``) is the input of a device's latency run, not
        something to search or serve from."""
        if not self.has_latency:
            raise ProfileError(
                f"{where} holds accuracies only (no latency measured on any device); measure "
                f"them on this device: adaspring profile --latency-only --accuracy-from {where} "
                f"--out TABLE")

    def require_card(self, card: ModelCard) -> None:
        """ProfileError unless this table was measured for a backbone with model card ``card``:
        its accuracies hold for that input contract and label space only."""
        if card == self.card:
            return
        mine, theirs = self.card.to_dict(), card.to_dict()
        fields = [k for k in mine if mine[k] != theirs.get(k)]
        diffs = "; ".join(f"{k}: table {mine[k]!r}, backbone {theirs.get(k)!r}" for k in fields)
        raise ProfileError(f"the profile table was measured for another model card than the "
                           f"backbone's ({diffs}); profile this backbone (adaspring profile)")

    def to_dict(self) -> dict[str, Any]:
        optional = {} if self.cold_start_ms is None else {"cold_start_ms": self.cold_start_ms}
        return {
            **optional,
            "schema_version": SCHEMA_VERSION,
            "backbone_sha256": self.backbone_sha256,
            "space": self.space.to_dict(),
            "device": self.device,
            "energy_method": self.energy_method,
            "engine": self.engine,
            "card": self.card.to_dict(),
            "measured": list(self.measured),
            "meta": self.meta,
            "entries": [e.to_dict() for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProfileTable":
        if not isinstance(data, Mapping):
            raise ProfileError("profile table must be a JSON object")
        version = data.get("schema_version")
        if version not in _READABLE_SCHEMAS:
            raise ProfileError(
                f"profile table schema_version {version!r} is not supported "
                f"(this package reads {', '.join(map(str, _READABLE_SCHEMAS))})"
            )
        try:
            space = SearchSpace.from_dict(data["space"])
        except KeyError:
            raise ProfileError("profile table has no 'space'") from None
        except ConfigError as exc:
            raise ProfileError(str(exc)) from exc
        raw_entries = data.get("entries")
        if not isinstance(raw_entries, list) or not raw_entries:
            raise ProfileError("profile table has no entries")
        entries = [
            ProfileEntry.from_dict(raw, space, f"entry {i}") for i, raw in enumerate(raw_entries)
        ]
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            raise ProfileError("profile table lists a config more than once")
        return cls(
            space=space,
            entries=entries,
            backbone_sha256=str(data.get("backbone_sha256", "")),
            device=dict(data.get("device", {}) or {}),
            energy_method=str(data.get("energy_method", "")),
            meta=dict(data.get("meta", {}) or {}),
            engine=_engine(data.get("engine", {"name": "torch"})),
            card=_card(data) if version != 1 else None,
            measured=data.get("measured", MEASUREMENTS),
            cold_start_ms=data.get("cold_start_ms"),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path, expected_sha256: str | None = None,
             need_latency: bool = True) -> "ProfileTable":
        """Load and validate a table; with ``expected_sha256`` the file's checksum must match.

        A table without latencies (an accuracy table) is refused unless ``need_latency`` is
        false: only ``adaspring profile --latency-only`` and tools that read accuracies alone
        ask for one."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ProfileError(f"cannot read profile table {path}: {exc}") from exc
        if expected_sha256 is not None:
            digest = hashlib.sha256(raw).hexdigest()
            if digest != expected_sha256.strip().lower():
                raise ProfileError(
                    f"profile table {path} checksum mismatch: {digest} != {expected_sha256}"
                )
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProfileError(f"profile table {path} is not valid JSON: {exc}") from exc
        table = cls.from_dict(data)
        if need_latency:
            table.require_latency(str(path))
        return table


def _card(data: Mapping[str, Any]) -> ModelCard:
    if "card" not in data:
        raise ProfileError("profile table has no model card ('card')")
    try:
        return ModelCard.from_dict(data["card"])
    except CardError as exc:
        raise ProfileError(f"profile table: {exc}") from exc


def _measured(raw: Any) -> tuple[str, ...]:
    """The ``measured`` field, checked: a non-empty list of MEASUREMENTS holding "accuracy"."""
    if isinstance(raw, str) or not isinstance(raw, Sequence) or not raw:
        raise ProfileError(f"profile table 'measured' must be a non-empty list, got {raw!r}")
    unknown = [m for m in raw if m not in MEASUREMENTS]
    if unknown:
        raise ProfileError(f"profile table 'measured' names {unknown!r}; known: "
                           f"{list(MEASUREMENTS)}")
    if "accuracy" not in raw:
        raise ProfileError("profile table 'measured' must include 'accuracy' (every table "
                           "holds the accuracies it was measured with)")
    return tuple(m for m in MEASUREMENTS if m in raw)


def load_profile_table(path: str | Path | None = None,
                       engine: str = "onnxruntime") -> ProfileTable:
    """The table at ``path``, or (None or "") the shipped table of ``engine``. Every failure,
    a missing file included, is a ProfileError that names the path: nothing runs on a table
    nobody measured."""
    if path is None or str(path) == "":
        try:
            path = default_profile_table(engine)
        except FileNotFoundError as exc:
            raise ProfileError(f"no shipped profile table of engine {engine!r}: {exc}") from None
        if not path.is_file():
            raise ProfileError(f"no shipped profile table of engine {engine!r} at {path}: "
                               f"measure one (adaspring profile --engine {engine}) or name one")
    try:
        return ProfileTable.load(path)
    except ProfileError as exc:
        if str(path) in str(exc):
            raise
        raise ProfileError(f"profile table {path}: {exc}") from exc


def _engine(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ProfileError(f"profile table 'engine' must name the engine, got {raw!r}")
    return dict(raw)


def pareto_front(entries: Sequence[ProfileEntry]) -> list[ProfileEntry]:
    """Entries no other entry beats on both accuracy (higher) and median latency (lower)."""
    front, best = [], -1.0
    for e in sorted(entries, key=lambda e: (e.latency_ms_p50, -e.accuracy)):
        if e.accuracy > best:
            front.append(e)
            best = e.accuracy
    return front


def fastest_within(entries: Sequence[ProfileEntry], full_id: str,
                   points: float = 1.5) -> ProfileEntry | None:
    """The lowest-latency entry whose accuracy is within ``points`` (percent) of ``full_id``."""
    by_id = {e.id: e for e in entries}
    if full_id not in by_id:
        return None
    floor = by_id[full_id].accuracy - points / 100.0
    ok = [e for e in entries if e.accuracy >= floor]
    return min(ok, key=lambda e: e.latency_ms_p50) if ok else None


def most_accurate_within(entries: Sequence[ProfileEntry], latency_ms: float
                         ) -> ProfileEntry | None:
    """The most accurate entry whose p50 latency is at most ``latency_ms`` (ties: the faster)."""
    ok = [e for e in entries if e.latency_ms_p50 <= latency_ms]
    return max(ok, key=lambda e: (e.accuracy, -e.latency_ms_p50)) if ok else None


def front_ids(table_path: str | Path, front_only: bool = True) -> list[str]:
    """Config ids of the profile table at ``table_path``, fastest first: its Pareto front or,
    with ``front_only=False``, every variant."""
    table = ProfileTable.load(table_path)
    entries = pareto_front(table.entries) if front_only else list(table.entries)
    return [e.id for e in sorted(entries, key=lambda e: e.latency_ms_p50)]
