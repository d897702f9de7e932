"""Runtime search and evolution policy: speed, optimality, and behaviour on the shipped scenarios.

    python -m bench.bench_search            (or: python -m bench search)

1. Latency of one search, and of one full evolution decision (budgets + λ + search + the running
   variant's prediction), over the shipped profile table (or --table) and over a synthetic
   10,000-variant table.
2. Optimality: the vectorised search against plain exhaustive search on random budgets, λ and
   contention.
3. Every shipped scenario simulated against the profile table, frame by frame, for four
   policies: this search + evolution policy; width-only switching (the same policy restricted to
   variants that differ from the full model only in width, as Slimmable networks do); a static
   hand-picked variant; the static full model. Simulated latency of a frame = profiled median x
   the scenario's contention x a lognormal draw whose 95th percentile is the table's median
   p95/p50 ratio; the contention is 1 + 2 x (CPU load of other processes) / 100 (3x with the CPU
   fully taken).
   Context, metrics and decisions run at 1 Hz as the nodes do; swaps take effect at once.

It prints tables and rewrites its section of docs/benchmarks.md; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.model.profile_table import ProfileEntry, ProfileTable, load_profile_table
from adaspring_ros.core.policy.budgets import Budgets
from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.evolution import Evolver
from adaspring_ros.core.policy.lambdas import Lambdas
from adaspring_ros.core.policy.scenario import ScenarioTrace, shipped_scenarios
from adaspring_ros.core.policy.search import RuntimeSearch, table_tail_ratio
from bench.report import markdown_table, spread, write_section
from tools.search_oracle import exhaustive_search
from tools.synthetic_tables import synthetic_table, width_only_configs

CONTENTION_PER_LOAD = 2.0  # simulated slowdown per unit of other processes' CPU share


# --------------------------------------------------------------------------------------------
# 1 + 2: speed and optimality
# --------------------------------------------------------------------------------------------
def random_query(rng: np.random.Generator, search: RuntimeSearch) -> tuple[Budgets, Lambdas,
                                                                            float]:
    """Budgets around the table's own ranges (some, all or no variants fit), sometimes an
    accuracy floor, λ, contention."""
    def pick(values: np.ndarray) -> float:
        if rng.random() < 0.25:
            return math.inf
        return float(rng.uniform(values.min() * 0.7, values.max() * 1.05))

    floor = 0.0 if rng.random() < 0.5 else float(rng.uniform(search.accuracy.min(),
                                                             search.accuracy.max()))
    budgets = Budgets(latency_ms=pick(search.latency_p95), memory_mb=pick(search.memory),
                      storage_bytes=pick(search.storage), energy_mj=pick(search.energy),
                      min_accuracy=floor)
    lambda2 = float(rng.uniform(0, 1))
    return budgets, Lambdas(1 - lambda2, lambda2), float(rng.uniform(0.8, 3.0))


def time_search(search: RuntimeSearch, n: int, seed: int) -> tuple[dict[str, float],
                                                                  dict[str, float]]:
    """Wall-clock and CPU-time (this thread) spreads of one search, ms. On a busy machine the
    wall-clock tail is scheduling delay; the CPU time is the work."""
    rng = np.random.default_rng(seed)
    queries = [random_query(rng, search) for _ in range(n)]
    for q in queries[:20]:  # warm-up
        search.search(*q)
    wall, cpu = [], []
    for q in queries:
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        search.search(*q)
        cpu.append((time.thread_time_ns() - start_cpu) / 1e6)
        wall.append((time.perf_counter_ns() - start) / 1e6)
    return spread(wall), spread(cpu)


def time_decisions(search: RuntimeSearch, n: int, seed: int) -> dict[str, float]:
    """One Evolver.decide per sample, on a fresh random context and measured latency."""
    rng = np.random.default_rng(seed)
    evolver = Evolver(search)
    evolver.observe_context(Context(latency_budget_ms=50.0), 0.0)
    evolver.swap_done(evolver.decide(0.0).config_id, 0.0)
    samples = []
    for i in range(n):
        now = 2.0 + i
        budget = float(rng.uniform(0.5, 3.0) * np.median(search.latency_p95))
        evolver.observe_context(Context(battery_percent=float(rng.uniform(5, 100)),
                                        cpu_load_other_percent=float(rng.uniform(0, 90)),
                                        latency_budget_ms=budget), now)
        row = search.row(evolver.active_id)
        factor = float(rng.uniform(0.9, 2.5))
        evolver.observe_metrics(evolver.active_id, float(search.latency_p50[row]) * factor,
                                float(search.latency_p95[row]) * factor, now)
        start = time.perf_counter_ns()
        decision = evolver.decide(now)
        samples.append((time.perf_counter_ns() - start) / 1e6)
        if decision.swap:
            evolver.swap_done(decision.config_id, now)
    return spread(samples)


def optimality(table: ProfileTable, n: int, seed: int) -> dict[str, float]:
    search = RuntimeSearch(table)
    rng = np.random.default_rng(seed)
    same = within = infeasible = same_rule = 0
    worst_gap = 0.0
    exhaustive_ms = []
    for _ in range(n):
        budgets, lambdas, contention = random_query(rng, search)
        result = search.search(budgets, lambdas, contention)
        start = time.perf_counter_ns()
        best_id, best_value, rule = exhaustive_search(table, budgets, lambdas, contention)
        exhaustive_ms.append((time.perf_counter_ns() - start) / 1e6)
        infeasible += int(rule == "nothing-fits")
        same_rule += int(result.rule == rule)
        gap = (best_value - result.prediction.objective) / max(abs(best_value), 1e-12)
        worst_gap = max(worst_gap, gap)
        same += int(result.config_id == best_id)
        within += int(gap <= 0.01)
    return {"queries": n, "same": same, "within": within, "infeasible": infeasible,
            "same_rule": same_rule,
            "worst_gap": worst_gap, "exhaustive_p50_ms": spread(exhaustive_ms)["p50"]}


# --------------------------------------------------------------------------------------------
# 3: scenarios
# --------------------------------------------------------------------------------------------
def width_only(table: ProfileTable) -> ProfileTable:
    """The entries that differ from the full model only in their widths (Slimmable-style)."""
    family = {c.id for c in width_only_configs(table.space)}
    entries = [e for e in table.entries if e.id in family]
    return ProfileTable(space=table.space, entries=entries, energy_method=table.energy_method)


def hand_picked(table: ProfileTable) -> ProfileEntry:
    """What an engineer would ship as a fixed compromise: the most accurate variant whose
    profiled p95 latency is at most half of the full model's (ties: smallest id)."""
    full = table.get(CompressionConfig.full(table.space).id)
    limit = (full.latency_ms_p95 if full else max(e.latency_ms_p95 for e in table.entries)) / 2
    fits = [e for e in table.entries if e.latency_ms_p95 <= limit] or list(table.entries)
    return min(fits, key=lambda e: (-e.accuracy, e.id))


@dataclass
class Outcome:
    accuracy: float
    miss_percent: float
    energy_mj: float
    energy_j: float
    mission: str
    swaps: int


def frame_latency(entry: ProfileEntry, contention: float, tail: float,
                  rng: np.random.Generator) -> float:
    """Lognormal around the profiled median whose 95th percentile is ``tail`` x the median."""
    sigma = math.log(max(tail, 1.0)) / 1.645
    return entry.latency_ms_p50 * contention * float(rng.lognormal(0.0, sigma))


def mission_verdict(trace: ScenarioTrace, energies: list[float], fps: float) -> str:
    """Projected: does the perception share of the battery left at the end of the trace cover
    the rest of the mission at the energy per frame of the variant running at the end?"""
    params = trace.budget_params()
    end = trace.context_at(trace.duration_s)
    if params.mission_duration_s is None or end.charging or end.battery_percent is None:
        return "n/a"
    remaining_s = max(params.mission_duration_s - trace.duration_s, 0.0)
    available = (end.battery_percent / 100 * params.battery_capacity_wh * 3600
                 * params.perception_energy_share)
    needed = energies[-1] / 1000 * fps * remaining_s
    ratio = available / needed if needed > 0 else math.inf
    return f"{'yes' if ratio >= 1 else 'NO'} ({ratio:.2f}x)"


def simulate(trace: ScenarioTrace, table: ProfileTable, policy: str | ProfileEntry,
             seed: int, tail: float) -> Outcome:
    """Run ``trace`` frame by frame; ``policy`` is "adaptive" (an Evolver over ``table``) or a
    fixed entry. ``tail`` is the device's p95/p50 latency ratio (the whole table's)."""
    params = trace.budget_params()
    fps = params.fps
    rng = np.random.default_rng(seed)
    evolver = None
    if policy == "adaptive":
        search = RuntimeSearch(table, tail_ratio=tail)
        evolver = Evolver(search, budget_params=params, mission_start=0.0)
    active = policy if isinstance(policy, ProfileEntry) else None
    accuracies, energies, window = [], [], []
    misses = 0
    frames = int(trace.duration_s * fps)
    next_tick = 0.0
    for k in range(frames):
        t = k / fps
        context = trace.context_at(t)
        if evolver is not None and t >= next_tick:  # the nodes' 1 Hz loop
            next_tick += 1.0
            evolver.observe_context(context, t)
            if window and evolver.active_id is not None:
                p50, p95 = np.percentile(window, [50, 95])
                deadline = context.latency_budget_ms * params.latency_margin
                missed = sum(v > deadline for v in window)
                evolver.observe_metrics(evolver.active_id, float(p50), float(p95), t, missed)
            window = []
            decision = evolver.decide(t)
            if decision.swap:
                evolver.swap_done(decision.config_id, t)
            active = table.get(evolver.active_id)
        contention = 1.0 + CONTENTION_PER_LOAD * context.cpu_load_other_percent / 100.0
        latency = frame_latency(active, contention, tail, rng)
        window.append(latency)
        misses += latency > context.latency_budget_ms * params.latency_margin
        accuracies.append(active.accuracy)
        energies.append(active.energy_mj)
    return Outcome(
        accuracy=float(np.mean(accuracies)), miss_percent=100.0 * misses / frames,
        energy_mj=float(np.mean(energies)), energy_j=float(np.sum(energies)) / 1000,
        mission=mission_verdict(trace, energies, fps),
        swaps=evolver.swaps if evolver is not None else 0,
    )


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", type=Path, help="profile table (default: the shipped one)")
    args = parser.parse_args(argv)
    reps = 300 if args.quick else 2000
    opt_n = 100 if args.quick else 400

    table = load_profile_table(args.table)
    note = f"{args.table or 'the shipped one'} ({table.engine_name}, {len(table)} variants)"
    big = synthetic_table(10_000, seed=1)
    small_label = f"{'given' if args.table else 'shipped'} ({len(table)} variants)"
    print(note)

    load_before = os.getloadavg()[0]
    sections = [f"Profile table: {note}.", ""]
    rows = []
    for label, tab in ((small_label, table), ("synthetic 10,000 variants", big)):
        start = time.perf_counter()
        search = RuntimeSearch(tab)
        build_ms = (time.perf_counter() - start) * 1000
        s, cpu = time_search(search, reps, args.seed)
        d = time_decisions(search, reps // 2, args.seed)
        rows.append([label, f"{build_ms:.1f}", f"{s['p50']:.3f}", f"{s['p95']:.3f}",
                     f"{s['p99']:.3f}", f"{cpu['p95']:.3f}", f"{d['p50']:.3f}",
                     f"{d['p95']:.3f}", f"{d['p99']:.3f}"])
    sections += [
        "### Search and decision latency (ms)", "",
        markdown_table(["table", "precompute", "search p50", "search p95", "search p99",
                        "search p95 CPU time", "decide p50", "decide p95", "decide p99"],
                       rows), "",
        f"{reps} searches on random budgets / λ / contention (wall clock, and the CPU time of "
        "the searching thread, which leaves out time the scheduler gave to other processes); "
        "a decision is one `Evolver.decide` (budgets, λ, search, prediction of the running "
        "variant), wall clock.", "",
    ]

    rows = []
    for label, tab in ((small_label, table), ("synthetic 10,000 variants", big)):
        o = optimality(tab, opt_n if len(tab) < 5000 else opt_n // 4, args.seed + 1)
        rows.append([label, o["queries"], o["same"], o["same_rule"], o["within"],
                     o["infeasible"],
                     f"{o['worst_gap']:.2e}", f"{o['exhaustive_p50_ms']:.2f}"])
    sections += [
        "### Optimality against exhaustive search", "",
        markdown_table(["table", "queries", "same variant", "same rule",
                        "objective within 1 %", "nothing fits", "worst relative gap",
                        "exhaustive p50 (ms)"], rows), "",
    ]

    slim = width_only(table)
    picked = hand_picked(table)
    full = table.get(CompressionConfig.full(table.space).id)
    policies: list[tuple[str, ProfileTable, str | ProfileEntry]] = [
        ("adaspring (this search)", table, "adaptive"),
        (f"width-only switching ({len(slim)} variants)", slim, "adaptive"),
        (f"static hand-picked {picked.id}", table, picked),
    ]
    if full is not None:
        policies.append(("static full model", table, full))
    rows = []
    for path in shipped_scenarios():
        trace = ScenarioTrace.load(path)
        for label, tab, policy in policies:
            if not len(tab):
                continue
            o = simulate(trace, tab, policy, args.seed, table_tail_ratio(table))
            rows.append([trace.name, label, f"{100 * o.accuracy:.2f}", f"{o.miss_percent:.1f}",
                         f"{o.energy_mj:.3g}", f"{o.energy_j:.3g}", o.mission, o.swaps])
    sections += [
        "### Shipped scenarios, simulated against the profile table", "",
        markdown_table(["scenario", "policy", "mean accuracy %", "deadline misses %",
                        "energy / frame (mJ)", "energy (J)", "mission survives (projected)",
                        "swaps"], rows), "",
        "Simulated, not run: frame latency = profiled p50 x contention x lognormal noise "
        "(95th percentile = the table's median p95/p50 ratio), contention = 1 + 2 x other "
        "processes' CPU share; "
        "accuracy and energy per frame are the profile table's. A deadline miss is a frame "
        "whose forward pass exceeds its share of the scenario's per-frame budget at that moment "
        "(latency_margin x budget; the rest is transport and preprocessing). 'Mission survives' "
        "projects the energy per frame of the variant running at the end over the rest of the "
        "mission against the perception share of the battery left (n/a without a mission or "
        "on mains power). "
        f"Width-only = the same policy over the {len(slim)} variants that differ from the full "
        "model only in width; hand-picked = the most accurate variant at most half the full "
        "model's p95 latency.",
    ]
    sections += ["", f"System load average (1 min) {load_before:.1f} at the start, "
                 f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs: the latency "
                 "tails above include whatever else the machine was running."]
    command = "python -m bench.bench_search" + (" --quick" if args.quick else "")
    write_section("search", "Runtime search and evolution policy", command,
                  "\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
