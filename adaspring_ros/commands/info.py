"""`adaspring info FILE`: the model card of a backbone checkpoint or a profile table, as JSON.

What a user checks before pairing files or pointing a camera at a model: channels and their
order, mean/std, the resolutions of the space, the resize policy, the class names, where the
data came from; with the file's kind and format version, for a checkpoint its sha256 and
whether it matched ``<file>.sha256`` (a mismatch is an error, not a report), for a profile table
what it holds (``measured``: an accuracy table has no latencies yet). A checkpoint is
read with ``weights_only=True`` and rebuilt, so a card that contradicts its weights is refused
here as everywhere else. Exit status 2 with one line on stderr for a file that is neither.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaspring_ros.core.model.card import ModelCard
from adaspring_ros.core.model.checkpoint import (
    CheckpointError,
    backbone_from_checkpoint,
    checksum_path,
    read_checkpoint,
    sha256_of,
)
from adaspring_ros.core.model.profile_table import ProfileError, ProfileTable

__all__ = ["cli_main", "describe"]

_ZIP_MAGIC = b"PK\x03\x04"   # torch.save writes a zip archive


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adaspring info",
        description="Print the model card of a backbone checkpoint (.pt) or a profile table "
                    "(.json) as JSON.")
    p.add_argument("file", help="a backbone checkpoint or a profile table")
    return p


def _card_fields(card: ModelCard | None, stored: bool) -> dict[str, Any]:
    """The card's fields; ``card_stored`` is false for a file older than cards, which shows
    the legacy card it is read with."""
    if card is None:   # loaded checkpoints and tables always have one
        raise CheckpointError("no model card")
    return {**card.to_dict(), "card_stored": stored}


def _checkpoint(path: Path) -> dict[str, Any]:
    verified = checksum_path(path).is_file()
    ckpt, digest = read_checkpoint(path, verify=verified)
    model = backbone_from_checkpoint(ckpt, str(path))
    return {"file": str(path), "kind": "checkpoint", "format_version": ckpt["version"],
            **_card_fields(model.card, "card" in ckpt),
            "stage_channels": list(model.stage_channels), "space": model.space.to_dict(),
            "sha256": digest, "verified": verified}


def _table(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"profile table {path} is not valid JSON: {exc}") from exc
    table = ProfileTable.from_dict(data)
    return {"file": str(path), "kind": "profile table",
            "format_version": data["schema_version"],
            **_card_fields(table.card, "card" in data),
            "space": table.space.to_dict(), "engine": table.engine, "variants": len(table),
            "measured": list(table.measured), "cold_start_ms": table.cold_start_ms,
            "backbone_sha256": table.backbone_sha256, "sha256": sha256_of(path)}


def describe(path: str | Path) -> dict[str, Any]:
    """The report of ``path`` (see the module docstring); CheckpointError or ProfileError if the
    file is neither a valid checkpoint nor a valid profile table."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from exc
    if head.startswith(_ZIP_MAGIC):
        return _checkpoint(path)
    if head.lstrip()[:1] == b"{":
        return _table(path, path.read_bytes())
    raise CheckpointError(f"{path} is neither a backbone checkpoint (a torch zip archive) nor a "
                          "profile table (JSON)")


def cli_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = describe(args.file)
    except (CheckpointError, ProfileError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"adaspring info: {first_line}", file=sys.stderr)
        return 2
    if not report.get("verified", True):
        print(f"adaspring info: warning: {checksum_path(args.file).name} is missing; the "
              "checkpoint's sha256 is not verified", file=sys.stderr)
    print(json.dumps(report, indent=1))
    return 0
