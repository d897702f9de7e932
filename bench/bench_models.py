"""The shipped models side by side: where adaptation pays, and how much.

For each shipped model (the grey Fashion-MNIST one in models/, the colour one in models/colour/):
- from its profile table: the full network's accuracy on the test split, the fastest variant
  within 1.5 points of it, and the table's speed-up;
- measured here, in one run: the full network and that variant in ONNX Runtime (1 thread, batch
  1, the node's engine), round-robin, ``--rounds`` calls each; medians and spreads, their ratio;
- from a run of ``adaspring demo`` on the model (``--demo NAME=DIR`` reads one already made,
  else the demo runs here, ~2.5 minutes a model): the energy of a 640x480 frame with the full
  network pinned (the static run, median of its metrics windows), the share of it the forward
  pass is (the forward's median time on the node x the device power model, and the table's
  forward energy), and what adaptation saved through the scenario (energy per frame, adaptive
  vs static full), with the deadline hits and the test-split accuracy of the variants served.

    .venv/bin/python -m bench.bench_models [--demo grey=runs/demo-1 --demo colour=runs/demo-c]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from adaspring_ros.core import energy, paths
from adaspring_ros.core.model.checkpoint_reader import load_weight_bank
from adaspring_ros.core.model.compact import materialise
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.engine import make_engine
from adaspring_ros.core.model.profile_table import fastest_within, load_profile_table
from adaspring_ros.core.offline.latency import noise_frame
from adaspring_ros.core.offline.profiler import time_round_robin
from bench.report import ROOT, markdown_table, spread, write_section

MODELS = {"grey": None, "colour": "colour"}     # bench name -> adaspring demo --model NAME
POWER_PROFILE = "cloud_x86_vcpu"                 # the demo's perception node's (config/)


def model_files(name: str | None) -> tuple[Path, Path]:
    root = paths.models_dir() / name if name else paths.models_dir()
    return root / "backbone.pt", root / "profile_table.json"


def speedup(name: str | None, rounds: int) -> dict:
    """Full vs fastest within 1.5 points: the table's figures and a side-by-side timing."""
    backbone_path, table_path = model_files(name)
    bank = load_weight_bank(backbone_path)
    table = load_profile_table(table_path)
    if table.backbone_sha256 != bank.sha256:
        raise SystemExit(f"{table_path} was measured for another backbone than {backbone_path}")
    full = CompressionConfig.full(bank.space)
    fast = fastest_within(table.entries, full.id)
    engine = make_engine("onnxruntime", threads=1)
    runners = {}
    for config in (full, fast.config):
        entry = table.get(config.id)
        ranges = dict(entry.int8_ranges) if entry.int8_ranges else None
        runners[config.id] = engine.prepare(materialise(bank, config), ranges)
    timed = time_round_robin(runners, None, rounds, warmup=20, meter=None,
                             frames=lambda c: noise_frame(bank.card, c.resolution))
    stats = {k: spread(v[0]) for k, v in timed.items()}
    full_entry = table.get(full.id)
    return {"full": full_entry, "fast": fast, "stats": stats, "card": bank.card,
            "measured": stats[full.id]["p50"] / stats[fast.id]["p50"],
            "table": full_entry.latency_ms_p50 / fast.latency_ms_p50}


def demo_dir(bench_name: str, given: dict[str, Path], out_root: Path) -> Path:
    if bench_name in given:
        return given[bench_name]
    out = out_root / bench_name
    cmd = [sys.executable, "-m", "adaspring_ros.cli", "demo", "--quiet", "--out", str(out)]
    if MODELS[bench_name]:
        cmd += ["--model", MODELS[bench_name]]
    print("running", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def demo_figures(out: Path, full_id: str) -> dict:
    """Frame energy of the static full run, the forward's share of it, and the savings."""
    events = json.loads((out / "events.json").read_text())
    whole = {r["run"]: r for r in events["summary"] if r["phase"] == "whole scenario"}
    static = next(r for r in events["runs"] if r["name"] == "static full")
    windows = [m for m in static["metrics"] if m["config_id"] == full_id
               and m["energy_per_frame_mj"] and m["model_latency_ms_p50"]]
    frame_mj = statistics.median(m["energy_per_frame_mj"] for m in windows)
    forward_ms = statistics.median(m["model_latency_ms_p50"] for m in windows)
    watts = energy.load_device(POWER_PROFILE).active_watts_per_core
    a, f = whole["adaptive"], whole["static full"]
    return {"frame_mj": frame_mj, "forward_ms": forward_ms, "forward_mj": forward_ms * watts,
            "adaptive_mj": a["energy_mj_per_frame"], "static_mj": f["energy_mj_per_frame"],
            "hits": (a["deadline_hit_percent"], f["deadline_hit_percent"]),
            "served": (a["table_accuracy_percent"], f["table_accuracy_percent"]),
            "variants": len(a["variants"]), "out": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=300, help="timed calls per variant")
    p.add_argument("--demo", action="append", default=[], metavar="NAME=DIR",
                   help="read this adaspring demo output for model NAME (grey, colour) "
                        "instead of running the demo")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-models",
                   help="where demos run here write")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    given = {}
    for item in args.demo:
        name, _, where = item.partition("=")
        if name not in MODELS or not where:
            p.error(f"--demo {item!r}: NAME=DIR with NAME one of {', '.join(MODELS)}")
        given[name] = Path(where)
    rows, notes = [], []
    for bench_name, model in MODELS.items():
        s = speedup(model, args.rounds)
        d = demo_figures(demo_dir(bench_name, given, args.out), s["full"].id)
        full, fast, st = s["full"], s["fast"], s["stats"]
        saved = 1.0 - d["adaptive_mj"] / d["static_mj"]
        rows.append([
            bench_name, f"{s['card'].channels} x {max(s['card'].resolutions)} px, "
            f"{len(s['card'].classes)} classes", f"{100 * full.accuracy:.2f}",
            f"`{fast.id}` {100 * fast.accuracy:.2f}",
            f"{st[full.id]['p50']:.3f} ({st[full.id]['min']:.3f}-{st[full.id]['p95']:.3f})",
            f"{st[fast.id]['p50']:.3f} ({st[fast.id]['min']:.3f}-{st[fast.id]['p95']:.3f})",
            f"{s['measured']:.2f}x (table {s['table']:.2f}x)",
            f"{d['frame_mj']:.2f}",
            f"{100 * d['forward_mj'] / d['frame_mj']:.0f} % (table "
            f"{100 * full.energy_mj / d['frame_mj']:.0f} %)",
            f"{d['adaptive_mj']:.2f} vs {d['static_mj']:.2f} ({100 * saved:.0f} % less)",
            f"{d['hits'][0]:.1f} vs {d['hits'][1]:.1f}",
            f"{d['served'][0]:.2f} vs {d['served'][1]:.2f}", d["variants"]])
        notes.append(f"- {bench_name}: demo output `{d['out']}`")
    headers = ["model", "input", "full top-1 % (test)", "fastest within 1.5 pt, top-1 %",
               "full p50 ms (min-p95)", "fastest p50 ms (min-p95)", "speed-up (ORT, here)",
               "frame mJ, full pinned", "forward share of a frame, full",
               "mJ/frame adaptive vs static full", "deadline hits %",
               "served top-1 % (test)", "variants visited"]
    body = (f"ONNX Runtime, 1 thread, batch 1, {args.rounds} calls per variant round-robin "
            "(medians, min-p95). Frame energy: CPU time of the perception process x "
            f"`{POWER_PROFILE}` ({energy.load_device(POWER_PROFILE).active_watts_per_core:g} W "
            "per busy core); the forward share is the forward's median time on the node x that "
            "power over the frame's energy (the table's forward energy in brackets); the demo "
            "scenario is `mixed` (60 s adaptive, 30 s static).\n\n"
            + markdown_table(headers, rows) + "\n\n" + "\n".join(notes) + "\n")
    if args.no_write:
        print(body)
    else:
        write_section("models", "The shipped models side by side (bench_models)",
                      "python -m bench.bench_models", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
