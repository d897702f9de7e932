"""Shared by the benchmarks: print a table and write it as one section of docs/benchmarks.md.

Each benchmark owns one section, delimited by HTML comments, so benchmarks can be re-run one at a
time without clobbering the others' results.
"""

from __future__ import annotations

import platform
import re
import statistics
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from adaspring_ros.core import energy

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Measured on the machine named in each section; every section says the command that "
    "produced it. Ratios are measured side by side in one run.\n"
)


def shown(path: Path) -> str:
    """``path`` relative to the checkout when inside it, as the sections name files."""
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def describe_machine() -> str:
    return f"{energy.describe_machine()}, Python {platform.python_version()}"


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, p95, p99, min, max of a sample (for latency tables)."""
    ordered = sorted(values)

    def pct(p: float) -> float:
        if not ordered:
            return float("nan")
        k = min(len(ordered) - 1, max(0, round(p / 100.0 * (len(ordered) - 1))))
        return ordered[k]

    return {
        "p50": statistics.median(ordered) if ordered else float("nan"),
        "p95": pct(95),
        "p99": pct(99),
        "min": ordered[0] if ordered else float("nan"),
        "max": ordered[-1] if ordered else float("nan"),
    }


def write_section(name: str, title: str, command: str, body: str) -> None:
    """Replace (or append) section ``name`` of docs/benchmarks.md and print it."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- BEGIN {name} -->\n## {title}\n\n"
        f"Command: `{command}`  \nMachine: {describe_machine()}  \nRun: {stamp}\n\n"
        f"{body.strip()}\n<!-- END {name} -->\n"
    )
    print(section)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    key = re.escape(name)
    pattern = re.compile(rf"<!-- BEGIN {key} -->.*?<!-- END {key} -->\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)
