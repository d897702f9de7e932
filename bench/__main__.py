"""`adaspring bench`: run the benchmarks of bench/ (a source checkout) one after another.

Each benchmark is a module ``bench.bench_<name>`` run as ``python -m`` from the checkout root; it
prints its table and rewrites its own section of docs/benchmarks.md. Benchmarks measure and print;
they never assert a time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def available() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in (ROOT / "bench").glob("bench_*.py"))


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="adaspring bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args, passthrough = parser.parse_known_args(argv)
    if not (ROOT / "bench").is_dir():
        print("adaspring bench: needs a source checkout (bench/ is not installed)",
              file=sys.stderr)
        return 2
    names = available()
    if args.list:
        print("\n".join(names))
        return 0
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        print(f"adaspring bench: unknown benchmark(s) {unknown}; have {names}", file=sys.stderr)
        return 2
    failed = []
    for name in args.names or names:
        print(f"=== bench {name} ===", flush=True)
        start = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", f"bench.bench_{name}", *passthrough], cwd=ROOT)
        took = time.monotonic() - start
        print(f"=== bench {name}: exit {rc} after {took:.0f} s ===", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0
