"""``python -m bench.charging [--quick] [--json PATH] [--jobs N]``: real ACN days on one
substation, every sharing against the offline optimum, and the re-plan time."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench.charging.suite import (
    ALGORITHMS,
    FORMS,
    GRID_COLUMNS,
    POOLED,
    QUICK_DAYS,
    REPLAN_CARS,
    SHARES,
    SHARING_NAMES,
    SPLIT,
    STEP_S,
    DayResult,
    GridRow,
    above_optimum,
    days,
    grid_targets,
    replan_target,
    results_json,
    run,
    run_grids,
    targets,
    tasks_for,
)
from bench.output import Target, write_json
from bench.processes import default_jobs
from bench.table import render
from substation_worker.sharing import replan_seconds

DEFAULT_JSON = Path("bench/results/charging.json")
EXPLANATION = " ".join(
    [
        "One substation at 10-100 % of each day's uncontrolled peak (every car at 6.656 kW from",
        "arrival until full, no limit, in continuous time: loadgen/traces/acn/index.json),",
        "re-planned every {step_s:g} s and at every arrival and departure (simulated, a car",
        "spreads its last bit over its last step: its peak can be lower).",
        "energy: share of the demanded energy delivered; met: share of the demands met;",
        "peak: the highest total power (one row where every sharing's agrees).",
        "optimum: the most any scheduler could deliver knowing every car in advance (its 'met'",
        "is one optimal plan's). true deadlines: the sharing knows each car's energy and actual",
        "departure; stated: it is told what the driver stated where claimed (the car still",
        "takes its true energy and leaves at its true departure; told less than it takes, it",
        "gets what was stated). Sessions: ACN-Data, Caltech (loadgen/traces/acn, CC BY 4.0).",
    ]
)
# Peaks closer than this print as one row: the printed figure (0.1 kW) would not tell them apart.
PEAK_SAME_KW = 0.05


def day_lines(result: DayResult, form: str) -> list[str]:
    """One day in one form: a row per figure and algorithm, a column per capacity."""
    rows = [r for r in result.rows if r.form == form]
    header = [f"{form} deadlines", *(f"{r.share:.0%}" for r in rows)]
    body = [["capacity kW", *(f"{r.capacity_kw:.1f}" for r in rows)]]
    body += [[f"energy {n}", *(f"{r.cells[n].energy:.3f}" for r in rows)] for n in ALGORITHMS]
    body += [[f"met {n}", *(f"{r.cells[n].met:.3f}" for r in rows)] for n in ALGORITHMS]
    peaks = [[r.cells[n].peak_kw or 0.0 for n in SHARING_NAMES] for r in rows]
    if all(max(p) - min(p) < PEAK_SAME_KW for p in peaks):
        body.append(["peak kW every sharing", *(f"{p[0]:.1f}" for p in peaks)])
    else:
        body += [
            [f"peak kW {n}", *(f"{p[i]:.1f}" for p in peaks)] for i, n in enumerate(SHARING_NAMES)
        ]
    return render(header, body)


GRID_EXPLANATION = " ".join(
    [
        "Three substations holding 20/30/50 % of the capacity (in all: the share of the day's",
        "uncontrolled peak), each car dispatched on arrival by the dispatcher's headroom policy",
        "from the substations' state (fresh heartbeats, no latency), each substation running",
        "the worker's simulation. smartgrid: dispatch with deadlines + smartgrid sharing;",
        "headroom+fair: each car promised its max power, held while no substation has room",
        "(a car still held at its departure leaves unserved), fair sharing. pooled optimum: one",
        "substation with all the capacity, knowing every car (an upper bound). split optimum:",
        "the three substations, each car placed on one with every car known, then the best",
        "sharing (a MILP; its proven bound): the most any dispatch of these substations could",
        "deliver. Figures: share of the demanded energy delivered.",
    ]
)


def grid_lines(rows: Sequence[GridRow]) -> list[str]:
    """One day's three-substation rows: a row per grid, a column per capacity."""
    header = ["three substations", *(f"{r.share:.0%}" for r in rows)]
    body = [["capacity kW", *(f"{r.capacity_kw:.1f}" for r in rows)]]
    body += [[f"energy {g}", *(f"{r.energy[g]:.3f}" for r in rows)] for g in GRID_COLUMNS]
    for reference in (POOLED, SPLIT):
        body.append(
            [
                f"smartgrid / {reference.split()[0]}",
                *(f"{r.energy['smartgrid'] / r.energy[reference]:.3f}" for r in rows),
            ]
        )
    return render(header, body)


def target_lines(found: Sequence[Target]) -> list[str]:
    return [f"{'met   ' if t.met else 'MISSED'}  {t.what}: {t.figure}" for t in found]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.charging", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"two days: {', '.join(QUICK_DAYS)}")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write figures")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="worker processes")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    todo = days(only=QUICK_DAYS if args.quick else None)
    results = run(todo, args.jobs)
    grid_rows = run_grids(todo, args.jobs)
    # After the pool, alone: the re-plan time is a wall-clock figure.
    replans = {n: [t * 1000 for t in replan_seconds(n)] for n in REPLAN_CARS}
    elapsed = time.perf_counter() - started
    medians = {n: statistics.median(ms) for n, ms in replans.items()}
    cores = os.cpu_count() or 0
    now = datetime.now(UTC)
    command = "python -m bench.charging" + (" --quick" if args.quick else "")
    simulations = sum(len(tasks_for(d.day, SHARES)) for d in results)

    print(
        f"Charging: {len(results)} ACN days, {simulations} runs, {now:%Y-%m-%d %H:%M} UTC, "
        f"{cores} cores ({platform.machine()}, Python {platform.python_version()}), "
        f"{elapsed:.1f} s ({command})"
    )
    print(EXPLANATION.format(step_s=STEP_S))
    print(GRID_EXPLANATION)
    for result in results:
        d, u = result.day, result.uncontrolled
        print()
        print(
            f"{d.date} ({d.weekday}): {d.sessions} sessions, {d.energy_kwh:.3f} kWh; "
            f"uncontrolled (no limit, the reference): energy {u.energy:.3f}, met {u.met:.3f}, "
            f"peak {u.peak_kw:.1f} kW simulated, {d.uncontrolled_peak_kw:.1f} kW in continuous "
            "time (the capacities' basis)"
        )
        for form in FORMS:
            for line in day_lines(result, form):
                print(line)
        for line in grid_lines([r for r in grid_rows if r.date == d.date]):
            print(line)
    print()
    print("smartgrid re-plan, ms (median, min, max of 15)")
    for n, ms in replans.items():
        print(f"{n:4d} cars  {medians[n]:7.2f}  {min(ms):7.2f}  {max(ms):7.2f}")
    print()
    found = [*targets(results), *grid_targets(grid_rows), replan_target(medians)]
    for line in target_lines(found):
        print(line)

    write_json(
        args.json, "charging", started=now, cores=cores, command=command, elapsed_s=elapsed,
        machine=platform.machine(), step_s=STEP_S, shares=list(SHARES),
        days=results_json(results), three_substations=[asdict(r) for r in grid_rows],
        replan_ms={str(n): {"median": medians[n], "min": min(ms), "max": max(ms)}
                   for n, ms in replans.items()},
        targets=[asdict(t) for t in found],
    )  # fmt: skip
    bugs = above_optimum(results)
    if bugs:
        print(f"\nBUG: {len(bugs)} figures above the offline optimum:", file=sys.stderr)
        for bug in bugs:
            print(f"  {bug}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
