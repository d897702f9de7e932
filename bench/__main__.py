"""Run the benchmarks of bench/ one after another: ``python -m bench [names] [options]``.

From the root of a source checkout (bench/ is not installed with the package, and the checkout's
``adaspring_ros`` must come first on ``sys.path``). Each benchmark is the module
``bench.bench_<name>``, run in a child interpreter; options the runner does not know are passed
to every benchmark named. A benchmark prints its table and rewrites its own section of
docs/benchmarks.md; benchmarks measure and print, they never assert a time.

    .venv/bin/python -m bench --list
    .venv/bin/python -m bench engines search
    .venv/bin/python -m bench.bench_backbone --help      (one benchmark's own options)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def available() -> list[str]:
    """The benchmark names: ``bench/bench_<name>.py``."""
    return sorted(p.stem[len("bench_"):] for p in (ROOT / "bench").glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args, passthrough = parser.parse_known_args(argv)
    names = available()
    if args.list:
        print("\n".join(names))
        return 0
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        print(f"python -m bench: unknown benchmark(s) {unknown}; have {names}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
