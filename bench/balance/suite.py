"""The balance benchmark: every policy on the same grids, traces and seeds, at each heartbeat
interval, and the figures as ratios to the omniscient ideal of the same case.

Pure and deterministic: the same seed gives the same table on any machine (only the time it
takes varies). Cases run in worker processes when more than one CPU is allowed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from bench.balance.model import Omniscient, RunResult, Simulation, simulate
from bench.balance.traces import GRIDS, TRACES, Grid, Trace
from bench.output import Target
from bench.processes import run_each
from dispatcher.policies import Headroom, Policy, make_policy

HEARTBEATS_WALL_S = (0.1, 1.0, 5.0)
# The heartbeat interval the balance targets are stated at, s.
TARGET_H = 1.0
IDEAL = "omniscient"
SMARTGRID = "headroom"
# headroom holding at 1 x capacity without predicted releases: freed capacity is learnt from the
# next heartbeat only, so substations idle between heartbeats.
STRICT = "headroom hold=1 no releases"
# headroom promising up to 2 x capacity (no releases), and the ideal bound by the same 2 x rule,
# for reference.
LOOSE = "headroom hold=2"
IDEAL_LOOSE = "omniscient hold=2"
# Predicted releases with promises beyond capacity: sessions share power, and what is assigned
# later slows those predicted. Shows how wrong the predictions get there.
LOOSE_RELEASES = "headroom hold=2 +releases"
# Assignments reaching their worker 20 ms after the dispatcher sends them (the broker's part):
# a heartbeat sent meanwhile does not count them. smartgrid keeps them pending until a heartbeat
# says they arrived (Heartbeat.assignments_received); "not counted" is the same without that.
TRANSIT_WALL_S = 0.02
TRANSIT = "headroom, 20 ms in transit"
TRANSIT_BLIND = "headroom, 20 ms in transit, not counted"
# What the ideal is, as the output states it.
IDEAL_IS = (
    "omniscient: smartgrid's rule (least promised, holding at 1 x capacity, so never promising "
    "a substation more than its capacity) on the true state of every substation at every "
    "instant, no heartbeat, retried at every completion"
)


def _policy(name: str) -> Callable[[random.Random, Simulation], Policy]:
    def factory(rng: random.Random, sim: Simulation) -> Policy:
        return make_policy(name, rng)

    return factory


def _headroom(hold_factor: float, name: str) -> Callable[[random.Random, Simulation], Policy]:
    def factory(rng: random.Random, sim: Simulation) -> Policy:
        policy = Headroom(rng, hold_factor=hold_factor)
        policy.name = name
        return policy

    return factory


def _omniscient(hold_factor: float) -> Callable[[random.Random, Simulation], Policy]:
    def factory(rng: random.Random, sim: Simulation) -> Policy:
        policy = Omniscient(sim.subs, hold_factor=hold_factor)
        if hold_factor != 1.0:
            policy.name = IDEAL_LOOSE
        return policy

    return factory


# Side by side, in the order the table shows them.
POLICIES: dict[str, Callable[[random.Random, Simulation], Policy]] = {
    "round-robin": _policy("round-robin"),
    "random": _policy("random"),
    "least-loaded": _policy("least-loaded"),
    "power-of-two": _policy("power-of-two"),
    SMARTGRID: _policy(SMARTGRID),
    TRANSIT: _headroom(1.0, TRANSIT),
    TRANSIT_BLIND: _headroom(1.0, TRANSIT_BLIND),
    STRICT: _headroom(1.0, STRICT),
    LOOSE: _headroom(2.0, LOOSE),
    LOOSE_RELEASES: _headroom(2.0, LOOSE_RELEASES),
    IDEAL: _omniscient(1.0),
    IDEAL_LOOSE: _omniscient(2.0),
}
# Runs whose heartbeats carry the workers' predicted releases (and whose load table uses them).
# The others never read them (round-robin, random, least-loaded, power-of-two and the ideals
# choose exactly as they would with them) or are run without them on purpose.
WITH_RELEASES = frozenset({SMARTGRID, TRANSIT, TRANSIT_BLIND, LOOSE_RELEASES})


@dataclass(frozen=True)
class Case:
    grid: str
    trace: str
    heartbeat_wall_s: float
    policy: str
    seed: int


def cases(quick: bool, seed: int) -> list[Case]:
    grids = ["150/300/600/1200"] if quick else ["150/300/600/1200", "random-100"]
    beats = (TARGET_H,) if quick else HEARTBEATS_WALL_S
    return [Case(g, t, h, p, seed) for g in grids for t in TRACES for h in beats for p in POLICIES]


def _trace(grid: Grid, name: str, seed: int) -> Trace:
    # Every policy of a case sees this very trace: it depends on the grid and seed only.
    return TRACES[name](grid, seed)


def sim_options(policy: str) -> dict[str, Any]:
    """How ``policy``'s runs are simulated: ``simulate``'s keyword arguments beside its name."""
    return {
        "releases": policy in WITH_RELEASES,
        "transit_wall_s": TRANSIT_WALL_S if policy in (TRANSIT, TRANSIT_BLIND) else 0.0,
        "count_in_transit": policy != TRANSIT_BLIND,
    }


def run_case(case: Case) -> RunResult:
    grid = GRIDS[case.grid]()
    return simulate(
        grid,
        _trace(grid, case.trace, case.seed),
        POLICIES[case.policy],
        heartbeat_wall_s=case.heartbeat_wall_s,
        seed=case.seed,
        **sim_options(case.policy),
    )


def run_all(todo: Iterable[Case], jobs: int) -> list[RunResult]:
    todo = list(todo)
    # Longest first: the 100-substation grid.
    return run_each(run_case, todo, jobs, lambda c: c.grid == "random-100")


# -- figures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One policy on one grid and trace, across heartbeat intervals (keys: H in wall seconds)."""

    grid: str
    trace: str
    policy: str
    peak_over_ideal: dict[float, float]
    over_capacity_pct: dict[float, float]
    overload_pct: dict[float, float]
    p95_wait_s: dict[float, float]
    p99_wait_s: dict[float, float]
    share_min: dict[float, float]
    share_max: dict[float, float]
    # The workers' predicted session ends against the actual ends (runs with releases only).
    predictions: dict[float, int]
    predictions_late: dict[float, int]
    prediction_late_max_s: dict[float, float]
    prediction_mean_abs_error_s: dict[float, float]
    # The dispatcher's own estimates for what it assigned.
    estimates: dict[float, int]
    estimates_late: dict[float, int]
    estimate_late_max_s: dict[float, float]
    estimate_mean_error_s: dict[float, float]


def _pct_of_run(seconds: float, r: RunResult) -> float:
    return 100.0 * seconds / r.finish_s if r.finish_s > 0 else 0.0


def rows(results: list[RunResult]) -> list[Row]:
    by_key = {(r.grid, r.trace, r.heartbeat_wall_s, r.policy): r for r in results}
    out: list[Row] = []
    seen: set[tuple[str, str, str]] = set()
    for r in results:
        key = (r.grid, r.trace, r.policy)
        if key in seen:
            continue
        seen.add(key)
        mine = [x for x in results if (x.grid, x.trace, x.policy) == key]
        peak: dict[float, float] = {}
        for x in mine:
            ideal = by_key.get((x.grid, x.trace, x.heartbeat_wall_s, IDEAL))
            if ideal is not None and ideal.peak_utilization > 0:
                peak[x.heartbeat_wall_s] = x.peak_utilization / ideal.peak_utilization
        out.append(
            Row(
                grid=r.grid,
                trace=r.trace,
                policy=r.policy,
                peak_over_ideal=peak,
                over_capacity_pct={
                    x.heartbeat_wall_s: _pct_of_run(x.over_capacity_s, x) for x in mine
                },
                overload_pct={x.heartbeat_wall_s: _pct_of_run(x.overload_s, x) for x in mine},
                p95_wait_s={x.heartbeat_wall_s: x.p95_wait_s for x in mine},
                p99_wait_s={x.heartbeat_wall_s: x.p99_wait_s for x in mine},
                share_min={x.heartbeat_wall_s: x.share_ratio_min for x in mine},
                share_max={x.heartbeat_wall_s: x.share_ratio_max for x in mine},
                predictions={x.heartbeat_wall_s: x.predictions for x in mine},
                predictions_late={x.heartbeat_wall_s: x.predictions_late for x in mine},
                prediction_late_max_s={x.heartbeat_wall_s: x.prediction_late_max_s for x in mine},
                prediction_mean_abs_error_s={
                    x.heartbeat_wall_s: x.prediction_mean_abs_error_s for x in mine
                },
                estimates={x.heartbeat_wall_s: x.estimates for x in mine},
                estimates_late={x.heartbeat_wall_s: x.estimates_late for x in mine},
                estimate_late_max_s={x.heartbeat_wall_s: x.estimate_late_max_s for x in mine},
                estimate_mean_error_s={x.heartbeat_wall_s: x.estimate_mean_error_s for x in mine},
            )
        )
    return out


def targets(table: list[Row]) -> list[Target]:
    """The balance targets for smartgrid's policy on every grid and trace: would-be demand never
    above capacity (at every H, with assignments in transit too), peak utilization within 10%
    of the ideal and p99 wait below power-of-two's (at H = 1 s); and the predicted releases it
    relies on never early."""
    mine = [r for r in table if r.policy == SMARTGRID]
    transit = [r for r in table if r.policy == TRANSIT]
    blind = [r for r in table if r.policy == TRANSIT_BLIND]
    p2c = {(r.grid, r.trace): r for r in table if r.policy == "power-of-two"}
    h = TARGET_H

    def worst_over(r: Row) -> float:
        return max(r.over_capacity_pct.values(), default=0.0)

    # Would-be demand above capacity is checked at every heartbeat interval, not only at 1 s.
    worst_over_cap = max([*mine, *transit], key=worst_over)
    over_cap = worst_over(worst_over_cap)
    by_h = worst_over_cap.over_capacity_pct
    over_cap_h = max(by_h, key=lambda k: by_h[k], default=h)
    strict_peak = min(
        (r.peak_over_ideal.get(h, 1.0) for r in table if r.policy == STRICT), default=1.0
    )
    worst_peak = min(mine, key=lambda r: r.peak_over_ideal.get(h, 1.0))
    p99 = [
        (r, p2c[(r.grid, r.trace)]) for r in mine if (r.grid, r.trace) in p2c and h in r.p99_wait_s
    ]
    worst_p99 = max(p99, key=lambda rp: rp[0].p99_wait_s[h] - rp[1].p99_wait_s[h], default=None)
    predictions = sum(sum(r.predictions.values()) for r in mine)
    late = sum(sum(r.predictions_late.values()) for r in mine)
    estimates = sum(sum(r.estimates.values()) for r in mine)
    estimates_late = sum(sum(r.estimates_late.values()) for r in mine)
    late_max = max(
        (
            max([*r.prediction_late_max_s.values(), *r.estimate_late_max_s.values()], default=0.0)
            for r in mine
        ),
        default=0.0,
    )

    def where(r: Row) -> str:
        return f"{r.grid}, {r.trace}"

    out = [
        Target(
            "would-be demand above 1 x capacity is 0 at every H, assignments in transit too",
            over_cap == 0.0,
            f"worst {over_cap:.2f}% of the run ({where(worst_over_cap)},"
            f" {worst_over_cap.policy}, H={over_cap_h:g} s); {STRICT} also 0%, at"
            f" {strict_peak:.2f} of the ideal's peak; not counting what is in transit:"
            f" {max((worst_over(r) for r in blind), default=0.0):.1f}%",
        ),
        Target(
            "peak utilization within 10% of the ideal (omniscient, 1 x hold) at H=1 s",
            worst_peak.peak_over_ideal.get(h, 0.0) >= 0.9,
            f"worst {worst_peak.peak_over_ideal.get(h, 0.0):.3f} of the ideal"
            f" ({where(worst_peak)})",
        ),
    ]
    if worst_p99 is not None:
        r, q = worst_p99
        out.append(
            Target(
                "p99 wait below power-of-two's on every trace at H=1 s",
                all(a.p99_wait_s[h] < b.p99_wait_s[h] for a, b in p99),
                f"closest {r.p99_wait_s[h]:.2f} s vs {q.p99_wait_s[h]:.2f} s ({where(r)})",
            )
        )
    out.append(
        Target(
            "no session ends later than predicted (the power is never freed early), every H",
            late == 0 and estimates_late == 0,
            f"{late} of {predictions} workers' predictions and {estimates_late} of {estimates}"
            f" dispatcher's estimates late (worst by {late_max:.4f} s)",
        )
    )
    return out


def results_json(results: list[RunResult], table: list[Row]) -> dict[str, object]:
    return {
        "runs": [asdict(r) for r in results],
        "rows": [{k: _keyed(x) for k, x in asdict(row).items()} for row in table],
        "targets": [asdict(t) for t in targets(table)],
    }


def _keyed(x: object) -> object:
    """JSON keys must be strings: {1.0: ...} becomes {"1": ...}."""
    return {f"{h:g}": v for h, v in x.items()} if isinstance(x, dict) else x
