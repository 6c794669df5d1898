"""``python -m bench.balance [--quick] [--json PATH] [--seed N] [--jobs N]``: the balance table."""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.balance.suite import (
    HEARTBEATS_WALL_S,
    IDEAL_IS,
    LOOSE,
    SMARTGRID,
    STRICT,
    TARGET_H,
    TRANSIT,
    TRANSIT_BLIND,
    Row,
    cases,
    results_json,
    rows,
    run_all,
    targets,
)
from bench.output import write_json
from bench.processes import default_jobs
from bench.table import render

DEFAULT_JSON = Path("bench/results/balance.json")


def _fmt(values: dict[float, float], beats: tuple[float, ...], spec: str) -> str:
    return " / ".join(format(values[h], spec) if h in values else "-" for h in beats)


def table_lines(table: list[Row], beats: tuple[float, ...]) -> list[str]:
    hs = " / ".join(f"{h:g}" for h in beats)
    h = TARGET_H
    header = [
        "grid",
        "trace",
        "policy",
        f"peak/ideal (H={hs} s)",
        f"demand>cap % (H={hs} s)",
        "demand>2x %",
        "p95 wait s",
        f"p99 wait s (H={hs} s)",
        "energy/capacity share",
    ]
    body = [
        [
            r.grid,
            r.trace,
            r.policy,
            _fmt(r.peak_over_ideal, beats, ".2f"),
            _fmt(r.over_capacity_pct, beats, ".1f"),
            _fmt(r.overload_pct, (h,), ".1f"),
            _fmt(r.p95_wait_s, (h,), ".2f"),
            _fmt(r.p99_wait_s, beats, ".2f"),
            f"{r.share_min.get(h, 0.0):.2f}-{r.share_max.get(h, 0.0):.2f}",
        ]
        for r in table
    ]
    return render(header, body)


def prediction_lines(table: list[Row], beats: tuple[float, ...]) -> list[str]:
    """How right the predicted ends were, for the runs that used them."""
    header = [
        "grid",
        "trace",
        "policy",
        "H s",
        "worker predictions",
        "late",
        "worst late s",
        "mean |error| s",
        "dispatcher estimates",
        "late",
        "worst late s",
        "mean lateness s",
    ]
    body = [
        [
            r.grid,
            r.trace,
            r.policy,
            f"{h:g}",
            str(r.predictions[h]),
            str(r.predictions_late[h]),
            f"{r.prediction_late_max_s[h]:.3f}",
            f"{r.prediction_mean_abs_error_s[h]:.4f}",
            str(r.estimates[h]),
            str(r.estimates_late[h]),
            f"{r.estimate_late_max_s[h]:.3f}",
            f"{r.estimate_mean_error_s[h]:.4f}",
        ]
        for r in table
        for h in beats
        if r.predictions.get(h, 0) or r.estimates.get(h, 0)
    ]
    return render(header, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.balance", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one grid, H = 1 s only")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write figures")
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="worker processes")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    todo = cases(args.quick, args.seed)
    results = run_all(todo, args.jobs)
    elapsed = time.perf_counter() - started
    table = rows(results)
    beats = (TARGET_H,) if args.quick else HEARTBEATS_WALL_S
    cores = os.cpu_count() or 0
    now = datetime.now(UTC)
    command = "python -m bench.balance" + (" --quick" if args.quick else "")

    print(
        f"Balance: {len(results)} simulations, seed {args.seed}, {now:%Y-%m-%d %H:%M} UTC, "
        f"{cores} cores, {elapsed:.1f} s ({command})"
    )
    print(f"ideal = {IDEAL_IS}.")
    print(
        f"{SMARTGRID}: holds at 1 x capacity, and between heartbeats frees the power of "
        "sessions predicted to have ended (the workers' Heartbeat.releases, its own estimate "
        f"for what it assigned since); {STRICT}: the same without predictions (freed capacity "
        f"learnt at the next heartbeat); {LOOSE}: hold factor 2, promising up to 2 x; "
        f"{TRANSIT}: assignments reach their worker 20 ms after they are sent (every other "
        "row: at once), and what a heartbeat does not count as received stays pending; "
        f"{TRANSIT_BLIND}: the same, but a heartbeat clears it all."
    )
    print(
        "peak/ideal: the grid's peak 1-s utilization over the ideal's; demand>cap / "
        ">2x: share of the run a substation's would-be demand (every charging car at its max) "
        "was above 1 x / 2 x its capacity (capacity-weighted; the worker caps the load itself); "
        f"waits from arrival to charging, wall s at time x3600; figures at H={TARGET_H:g} s "
        "unless the column says otherwise."
    )
    for line in table_lines(table, beats):
        print(line)
    print()
    print(
        "Predicted session ends against actual ones (wall s): the workers' (Heartbeat.releases, "
        "before rounding late) and the dispatcher's own for what it assigned (late by its "
        "margin on purpose). Late = the session ended after its predicted end: power freed "
        "too early."
    )
    for line in prediction_lines(table, beats):
        print(line)
    print()
    for t in targets(table):
        print(f"{'met   ' if t.met else 'MISSED'}  {t.what}: {t.figure}")

    write_json(
        args.json, "balance", started=now, cores=cores, command=command, elapsed_s=elapsed,
        seed=args.seed, **results_json(results, table),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
