"""What one dispatcher spends per decision and per heartbeat, as the grid grows. Pure: no broker.

A grid of n substations of standard transformer ratings (IEC 60076's R10 series, 100-2500 kVA,
taken as kW), each heartbeating a random load. Decisions run as the dispatcher runs them
(``decider`` -> ``Headroom.choose_in``, then ``record_assignment``), with a heartbeat from the
next substation between decisions so the index churns as it does in production. Every figure
comes from ``time.perf_counter_ns`` around each operation, the garbage collector paused.
"""

from __future__ import annotations

import gc
import math
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from contracts import Heartbeat
from dispatcher.load_table import LoadTable
from dispatcher.policies import Headroom, decider
from loadgen.demand import sample_demand

RATINGS_KW = (100, 125, 160, 200, 250, 315, 400, 500, 630, 800, 1000, 1250, 1600, 2000, 2500)
SIZES = (10, 100, 1_000, 10_000)
MEAN_CAR_KW = 36.0
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ScaleResult:
    substations: int
    capacity_classes: int
    decision_median_us: float
    decision_p99_us: float
    decisions: int
    scan_median_us: float  # the O(n) path it replaces: Headroom.choose(table.eligible(now))
    heartbeats_per_s: float  # parse (pydantic) + LoadTable.observe, as _on_heartbeat does
    observe_per_s: float  # LoadTable.observe alone
    backlog_heartbeats_per_s: float  # parse + observe + one decision (requests held)
    cpu_share_at_1hz: float  # of one core, for n heartbeats a second with requests held


class Grid:
    """n substations and their heartbeats, each a little newer than the last."""

    def __init__(self, n: int, seed: int, distinct: bool = False) -> None:
        self.rng = random.Random(seed)
        if distinct:
            # The worst case for the index: no two substations share a capacity.
            self.capacity = [100.0 + i * 0.37 for i in range(n)]
        else:
            self.capacity = [float(self.rng.choice(RATINGS_KW)) for _ in range(n)]
        self.seq = [0] * n

    def __len__(self) -> int:
        return len(self.capacity)

    def heartbeat(self, i: int) -> Heartbeat:
        cap = self.capacity[i]
        bays = max(2, math.ceil(cap / 7))  # as the balance simulation sizes them
        # Up to 1.6 x capacity promised, in sessions of loadgen's mean car (about 36 kW).
        committed = self.rng.uniform(0, 1.6 * cap)
        active = min(bays, round(committed / MEAN_CAR_KW))
        self.seq[i] += 1
        return Heartbeat(
            substation_id=f"s{i:05d}", capacity_kw=cap, bays=bays,
            load_kw=min(cap, committed), committed_kw=committed,
            active_sessions=active, queued=0, status="up", seq=self.seq[i],
            # Everything sent before it has arrived: a count growing faster than assignments.
            assignments_received=self.seq[i] * 1_000_000, interval_s=1.0,
            sent_at=EPOCH + timedelta(seconds=self.seq[i]),
        )  # fmt: skip


@contextmanager
def _no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _table(grid: Grid, seed: int) -> LoadTable:
    table = LoadTable(stale_after_intervals=3, rng=random.Random(seed))
    for i in range(len(grid)):
        table.observe(grid.heartbeat(i), 0.0)
    return table


def decision_times_ns(grid: Grid, decisions: int, seed: int) -> list[int]:
    table = _table(grid, seed)
    policy = Headroom(random.Random(seed))
    rng = random.Random(seed + 1)
    demands = [sample_demand(rng, i).max_power_kw for i in range(decisions)]
    beats = [grid.heartbeat(i % len(grid)) for i in range(decisions)]
    times: list[int] = []
    clock = time.perf_counter_ns
    with _no_gc():
        for kw, beat in zip(demands, beats, strict=True):
            start = clock()
            target = decider(policy, table, 0.5)(kw)
            if target is not None:
                table.record_assignment(target, kw)
            times.append(clock() - start)
            table.observe(beat, 0.5)
    return times


def scan_times_ns(grid: Grid, decisions: int, seed: int) -> list[int]:
    table = _table(grid, seed)
    policy = Headroom(random.Random(seed))
    rng = random.Random(seed + 1)
    times: list[int] = []
    clock = time.perf_counter_ns
    with _no_gc():
        for i in range(decisions):
            kw = sample_demand(rng, i).max_power_kw
            start = clock()
            policy.choose(table.eligible(0.5), kw)
            times.append(clock() - start)
    return times


@dataclass(frozen=True)
class Rates:
    parse_observe: float
    observe: float
    with_backlog: float


def heartbeat_rates(grid: Grid, count: int, seed: int, rounds: int = 3) -> Rates:
    """Heartbeats per second over ``count`` of them, the best of ``rounds`` (the machine is
    shared: the best round is the one least disturbed): parsed and observed, as
    ``Dispatcher._on_heartbeat`` does; observed alone; and parsed, observed and followed by one
    decision, as with requests held (backpressure) every heartbeat retries the head."""
    table = _table(grid, seed)
    policy = Headroom(random.Random(seed), hold_factor=1.0)
    kw = MEAN_CAR_KW
    clock = time.perf_counter_ns
    parsed = observed = backlog = 0.0
    now = 1.0
    for _ in range(rounds):
        bodies = [grid.heartbeat(i % len(grid)).model_dump_json().encode() for i in range(count)]
        beats = [grid.heartbeat(i % len(grid)) for i in range(count)]
        more = [grid.heartbeat(i % len(grid)).model_dump_json().encode() for i in range(count)]
        with _no_gc():
            start = clock()
            for body in bodies:
                table.observe(Heartbeat.model_validate_json(body), now)
            parsed = max(parsed, count / ((clock() - start) / 1e9))
            start = clock()
            for beat in beats:
                table.observe(beat, now)
            observed = max(observed, count / ((clock() - start) / 1e9))
            start = clock()
            for body in more:
                if table.observe(Heartbeat.model_validate_json(body), now):
                    target = decider(policy, table, now)(kw)
                    if target is not None:
                        table.record_assignment(target, kw)
            backlog = max(backlog, count / ((clock() - start) / 1e9))
        now += 1.0
    return Rates(parsed, observed, backlog)


def _pct(values: list[int], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def measure(
    n: int, *, seed: int, decisions: int, heartbeats: int, distinct: bool = False
) -> ScaleResult:
    grid = Grid(n, seed, distinct)
    times = decision_times_ns(grid, decisions, seed)
    scans = scan_times_ns(grid, max(20, min(decisions, 200_000 // n)), seed)
    rates = heartbeat_rates(grid, heartbeats, seed)
    return ScaleResult(
        substations=n,
        capacity_classes=len(set(grid.capacity)),
        decision_median_us=statistics.median(times) / 1000,
        decision_p99_us=_pct(times, 99) / 1000,
        decisions=len(times),
        scan_median_us=statistics.median(scans) / 1000,
        heartbeats_per_s=rates.parse_observe,
        observe_per_s=rates.observe,
        backlog_heartbeats_per_s=rates.with_backlog,
        cpu_share_at_1hz=n / rates.with_backlog,
    )
