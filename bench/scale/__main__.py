"""``python -m bench.scale [--json PATH] [--quick]``: decision time and heartbeat rate by size."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench.output import write_json
from bench.scale.measure import SIZES, ScaleResult, measure
from bench.table import render

DEFAULT_JSON = Path("bench/results/scale.json")
TARGET_DECISION_US = 20.0


def table_lines(results: list[ScaleResult]) -> list[str]:
    base = results[0]
    header = [
        "substations",
        "capacities",
        "decision median us",
        "p99 us",
        "x 10",
        "O(n) scan median us",
        "heartbeats/s",
        "x 10",
        "with backlog/s",
        "CPU at 1 Hz each",
    ]
    body = [
        [
            f"{r.substations:,}",
            f"{r.capacity_classes:,}",
            f"{r.decision_median_us:.1f}",
            f"{r.decision_p99_us:.1f}",
            f"{r.decision_median_us / base.decision_median_us:.2f}",
            f"{r.scan_median_us:.1f}",
            f"{r.heartbeats_per_s:,.0f}",
            f"{r.heartbeats_per_s / base.heartbeats_per_s:.2f}",
            f"{r.backlog_heartbeats_per_s:,.0f}",
            f"{100 * r.cpu_share_at_1hz:.1f}%",
        ]
        for r in results
    ]
    return render(header, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write figures")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--seed", type=int, default=20261124)
    args = parser.parse_args(argv)

    decisions, heartbeats = (5_000, 10_000) if args.quick else (50_000, 20_000)
    started = time.perf_counter()
    results = [
        measure(n, seed=args.seed, decisions=decisions, heartbeats=max(heartbeats, n))
        for n in SIZES
    ]
    # O(n) per decision here, like the scan: a few hundred decisions say enough.
    worst = measure(SIZES[-1], seed=args.seed, decisions=300, heartbeats=300, distinct=True)
    elapsed = time.perf_counter() - started
    cores = os.cpu_count() or 0
    now = datetime.now(UTC)
    command = "python -m bench.scale" + (" --quick" if args.quick else "")

    print(f"Load-table scale: {now:%Y-%m-%d %H:%M} UTC, {cores} cores, {elapsed:.1f} s ({command})")
    print(
        "decision: Headroom.choose_in + record_assignment (one dispatch), with a heartbeat "
        "between decisions; scan: the O(n) Headroom.choose(table.eligible(now)) it replaces; "
        "heartbeats/s: JSON parse + LoadTable.observe on one core (best of 3 rounds); with "
        "backlog: each also retries a held request (one decision), the CPU column's basis; "
        "x 10: ratio to 10 substations."
    )
    for line in table_lines(results):
        print(line)
    print(
        f"worst case, every capacity distinct ({worst.substations:,}): decision median "
        f"{worst.decision_median_us:.1f} us, p99 {worst.decision_p99_us:.1f} us, "
        f"scan {worst.scan_median_us:.1f} us (the index compares each capacity's best: "
        "O(k + log n) for k distinct capacities)"
    )
    top = results[-1]
    print()
    print(
        f"{'met   ' if top.decision_median_us <= TARGET_DECISION_US else 'MISSED'}  decision "
        f"<= {TARGET_DECISION_US:g} us at {top.substations:,}: median "
        f"{top.decision_median_us:.1f} us, p99 {top.decision_p99_us:.1f} us, "
        f"{top.decision_median_us / results[0].decision_median_us:.2f} x the 10-substation figure"
    )
    print(
        f"{'met   ' if top.cpu_share_at_1hz < 0.5 else 'MISSED'}  {top.substations:,} "
        f"substations at 1 Hz with CPU to spare: {100 * top.cpu_share_at_1hz:.1f}% of one core "
        f"with requests held ({top.backlog_heartbeats_per_s:,.0f} heartbeats/s; "
        f"{top.heartbeats_per_s:,.0f}/s without)"
    )

    write_json(
        args.json, "scale", started=now, cores=cores, command=command, elapsed_s=elapsed,
        seed=args.seed, results=[asdict(r) for r in results], distinct_capacities=asdict(worst),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
