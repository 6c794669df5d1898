"""The balance simulation: substations, heartbeats and the dispatcher's loop, event by event.

Deterministic discrete-event simulation in simulated seconds, no broker, no clock. What it models:

- A substation holds sessions: up to ``bays`` charging, the rest waiting in its FIFO queue. The
  charging ones share the capacity by water-filling (``substation_worker.power.share_power``), so
  the load drawn never exceeds capacity. A session starts charging when it gets a bay.
- Every H wall seconds (``heartbeat_wall_s``, with a small per-substation phase offset) each
  substation sends a real ``contracts.Heartbeat``; it reaches the dispatcher at once, so the
  dispatcher's picture is stale by up to H, never more. With ``releases`` it carries what the
  worker would: its predicted releases (``substation_worker.simulation.predict_ends`` on the
  true state), its time scale and charger limit.
- The dispatcher is the real one's loop (``dispatcher.service.Dispatcher._pump``) without I/O:
  requests are held in FIFO order; on every arrival, every heartbeat and (holding requests, with
  ``releases``) whenever the table's next predicted release is due, it offers the head to the
  REAL policy object through ``dispatcher.policies.decider`` (the load table's index for
  headroom, ``LoadTable.eligible(now)`` as candidates for the others), records each assignment with
  ``LoadTable.record_assignment(id, min(car max, capacity), energy, now)``, and stops at the
  first hold. An assignment reaches its substation at once, or ``transit_wall_s`` later (the
  broker's part): a heartbeat sent meanwhile does not know of it.
- Every predicted end (the workers' and the dispatcher's own) is compared with the actual end.

The dispatcher's clock is wall seconds (simulated / ``time_scale``), as in the real service, so
``Heartbeat.interval_s`` and the table's staleness rule are in the units they are in production.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bench.balance.traces import CHARGER_MAX_KW, SECONDS_PER_HOUR, Grid, SubstationSpec, Trace
from contracts import Heartbeat, Release
from dispatcher.load_table import LoadTable, SubstationState
from dispatcher.policies import Policy, decider
from substation_worker.power import share_power
from substation_worker.simulation import (
    RELEASE_HORIZON_INTERVALS,
    predict_ends,
    releases_of,
    to_wire,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# Would-be demand (every charging car at its max) above capacity means cars share power: the
# target is none, and smartgrid's headroom (holding at 1 x, predicted releases) has none. Above
# this many times capacity is counted as well (the ``demand>2x`` column): cars at under half
# their power on average, what a hold factor of 2 allows at most.
OVERLOAD_RATIO = 2.0
# A session this close to its end (simulated seconds) is done: integrating leaves float crumbs.
_DONE_S = 1e-6
# An actual end later than predicted by more than this (simulated s) counts as a late one.
_LATE_TOLERANCE_S = 1e-3
# Event order at equal times: what finished is known before the heartbeat that reports it, and
# the heartbeat before an assignment that reaches its worker at the same instant (the worse
# case for the dispatcher); the dispatcher's wake-up for a predicted release comes after the
# completions it predicted.
_COMPLETE, _HEARTBEAT, _DELIVER, _WAKE = 0, 1, 2, 3


@dataclass(slots=True, eq=False)
class Session:
    idx: int
    arrival_s: float
    energy_kwh: float
    car_kw: float
    max_kw: float  # min(car, charger): what it would draw alone
    remaining_kwh: float
    power_kw: float = 0.0
    substation: int = -1
    dispatched_s: float = -1.0
    start_s: float = -1.0
    end_s: float = -1.0
    # Ends predicted for it by heartbeats (simulated s), within the release horizon.
    predicted_end_s: list[float] = field(default_factory=list)
    # The dispatcher's own estimate when it assigned it (simulated s), if it made one.
    estimated_end_s: float | None = None


class Substation:
    """The true state of one substation, and what it integrates over time for the figures."""

    def __init__(self, index: int, spec: SubstationSpec) -> None:
        self.index = index
        self.substation_id = spec.substation_id
        self.capacity_kw = spec.capacity_kw
        self.bays = spec.bays
        self.active: list[Session] = []
        self.waiting: deque[Session] = deque()
        self.t = 0.0
        self.load_kw = 0.0
        # Would-be demand: what the charging sessions would draw if each got its max power
        # (capped at the capacity: one car alone cannot overload it, the worker caps it anyway).
        self.demand_kw = 0.0
        self.seq = 0
        self.received = 0
        self.version = 0
        # Figures, integrated in simulated time.
        self.energy_kwh = 0.0
        self.over_capacity_s = 0.0
        self.overload_s = 0.0
        self.peak_demand_ratio = 0.0
        self.peak_load_ratio = 0.0
        self.max_waiting = 0

    @property
    def committed_kw(self) -> float:
        """As the worker reports it: max power of every session it holds, active or waiting."""
        return sum(s.max_kw for s in self.active) + sum(s.max_kw for s in self.waiting)

    @property
    def idle(self) -> bool:
        return not self.active and not self.waiting

    def advance(self, t: float) -> None:
        """Charge until ``t`` at the current shares (nothing changes in between)."""
        dt = t - self.t
        if dt <= 0:
            return
        hours = dt / SECONDS_PER_HOUR
        for s in self.active:
            s.remaining_kwh -= s.power_kw * hours
        self.energy_kwh += self.load_kw * hours
        ratio = self.demand_kw / self.capacity_kw
        if ratio > 1.0 + 1e-9:
            self.over_capacity_s += dt
        if ratio > OVERLOAD_RATIO + 1e-9:
            self.overload_s += dt
        self.t = t

    def offer(self, session: Session, t: float) -> None:
        session.substation = self.index
        session.dispatched_s = t
        self.waiting.append(session)
        self.received += 1
        self.max_waiting = max(self.max_waiting, len(self.waiting))

    def settle(self, t: float) -> list[Session]:
        """At ``t`` (already advanced to): end finished sessions, give free bays to the queue
        in FIFO order, reshare. Returns the sessions that finished."""
        done = [
            s for s in self.active if s.remaining_kwh * SECONDS_PER_HOUR <= s.power_kw * _DONE_S
        ]
        if done:
            ended = {id(s) for s in done}
            self.active = [s for s in self.active if id(s) not in ended]
            for s in done:
                s.end_s = t
                s.remaining_kwh = 0.0
                s.power_kw = 0.0
        started = False
        while self.waiting and len(self.active) < self.bays:
            s = self.waiting.popleft()
            s.start_s = t
            self.active.append(s)
            started = True
        if done or started:
            self._reshare()
        return done

    def next_completion(self) -> float | None:
        best = math.inf
        for s in self.active:
            if s.power_kw > 0:
                best = min(best, s.remaining_kwh / s.power_kw * SECONDS_PER_HOUR)
        return None if best == math.inf else self.t + max(0.0, best)

    def _reshare(self) -> None:
        shares = share_power(self.capacity_kw, [s.max_kw for s in self.active])
        load = 0.0
        for s, p in zip(self.active, shares, strict=True):
            s.power_kw = p
            load += p
        self.load_kw = load
        self.demand_kw = sum(min(s.max_kw, self.capacity_kw) for s in self.active)
        self.peak_demand_ratio = max(self.peak_demand_ratio, self.demand_kw / self.capacity_kw)
        self.peak_load_ratio = max(self.peak_load_ratio, load / self.capacity_kw)
        self.version += 1

    def predicted_ends(self, t: float, horizon_s: float) -> list[tuple[float, int]]:
        """The worker's prediction at ``t`` from the true state (``predict_ends``): when the
        sessions held end, simulated seconds from ``t``, indexed into ``[*active, *waiting]``."""
        dt_h = (t - self.t) / SECONDS_PER_HOUR  # remaining energy at t, without advancing
        return predict_ends(
            self.capacity_kw,
            self.bays,
            [(s.remaining_kwh - s.power_kw * dt_h, s.max_kw) for s in self.active],
            [(s.remaining_kwh, s.max_kw) for s in self.waiting],
            horizon_s=horizon_s,
        )

    def heartbeat(
        self, t: float, time_scale: float, interval_wall_s: float, *, releases: bool = True
    ) -> Heartbeat:
        """A heartbeat from the true state; with ``releases``, the sessions predicted to end
        within the worker's horizon, as ``substation_worker`` predicts them (each session's
        predicted end is kept on it, to measure the prediction against what happens)."""
        wire: tuple[Release, ...] = ()
        if releases:
            horizon_s = RELEASE_HORIZON_INTERVALS * interval_wall_s * time_scale
            ends = self.predicted_ends(t, horizon_s)
            held = [*self.active, *self.waiting]
            for after, i in ends:
                held[i].predicted_end_s.append(t + after)
            wire = to_wire(releases_of(ends, [s.max_kw for s in held]), time_scale)
        hb = Heartbeat(
            substation_id=self.substation_id,
            capacity_kw=self.capacity_kw,
            bays=self.bays,
            load_kw=max(0.0, self.load_kw),
            committed_kw=self.committed_kw,
            active_sessions=len(self.active),
            queued=len(self.waiting),
            status="up",
            seq=self.seq,
            assignments_received=self.received,
            interval_s=interval_wall_s,
            sent_at=EPOCH + timedelta(seconds=t / time_scale),
            time_scale=time_scale if releases else None,
            charger_max_kw=CHARGER_MAX_KW if releases else None,
            releases=wire,
        )
        self.seq += 1
        return hb


class Omniscient:
    """The ideal: smartgrid's rule with perfect, instant knowledge. It sees every substation's
    true state at every instant (no heartbeat, no staleness) and places a request on the least
    promised substation with a free bay (would-be demand against capacity, sessions against
    bays, as headroom scores); beyond ``hold_factor`` x capacity (1: it never promises more
    than a substation's capacity, so every car charges at its max), or with no bay free, it
    holds the request at the dispatcher, so the grid's waiting room is one pooled FIFO queue and
    nothing waits at one substation while a bay is free at another. It is asked again on every
    completion. The gap between headroom and this is what stale heartbeats cost."""

    name = "omniscient"
    repoll_on_change = True

    def __init__(self, truth: Sequence[Substation], hold_factor: float = 1.0) -> None:
        self._truth = truth
        self.hold_factor = hold_factor

    def choose_in(self, table: LoadTable, now: float, request_kw: float) -> str | None:
        # It reads the truth, not the table: no need for the table's eligible list.
        return self.choose((), request_kw)

    def choose(self, candidates: Sequence[SubstationState], request_kw: float) -> str | None:
        best: Substation | None = None
        best_score = math.inf
        for s in self._truth:
            sessions = len(s.active) + len(s.waiting)
            if sessions >= s.bays:
                continue
            kw = s.demand_kw + min(request_kw, CHARGER_MAX_KW, s.capacity_kw)
            score = max(kw / s.capacity_kw, (sessions + 1) / s.bays)
            if score < best_score:
                best, best_score = s, score
        if best is None or (best_score > self.hold_factor and not best.idle):
            return None
        return best.substation_id


PolicyFactory = Callable[[random.Random, "Simulation"], Policy]


@dataclass
class RunResult:
    grid: str
    trace: str
    policy: str
    heartbeat_wall_s: float
    time_scale: float
    sessions: int
    p50_wait_s: float
    p95_wait_s: float
    p99_wait_s: float
    max_wait_s: float
    finish_s: float
    peak_utilization: float
    busy_utilization: float
    over_capacity_s: float
    overload_s: float
    peak_demand_ratio: float
    peak_load_ratio: float
    share_ratio_min: float
    share_ratio_max: float
    max_held: int
    max_waiting_at_worker: int
    events: int
    # The workers' predicted ends (heartbeats' releases, before rounding late) against the
    # actual ends: how many, how many came true later than predicted (the dangerous side), the
    # worst such lateness and the mean absolute error, wall s.
    predictions: int = 0
    predictions_late: int = 0
    prediction_late_max_s: float = 0.0
    prediction_mean_abs_error_s: float = 0.0
    # The same for the dispatcher's own estimates of when what it assigned ends, and their
    # mean error (predicted minus actual: how much later than needed it frees the power).
    estimates: int = 0
    estimates_late: int = 0
    estimate_late_max_s: float = 0.0
    estimate_mean_error_s: float = 0.0
    energy_share: dict[str, float] = field(default_factory=dict)


class Simulation:
    """One policy on one trace. ``run()`` returns the figures; all times in the result are wall
    seconds at ``time_scale`` (simulated seconds / time_scale), as the benchmark tables say."""

    def __init__(
        self,
        grid: Grid,
        trace: Trace,
        policy_factory: PolicyFactory,
        *,
        heartbeat_wall_s: float,
        time_scale: float = 3600.0,
        seed: int = 0,
        window_wall_s: float = 1.0,
        max_sim_s: float = 5_000 * SECONDS_PER_HOUR,
        max_events: int = 50_000_000,
        releases: bool = True,
        transit_wall_s: float = 0.0,
        count_in_transit: bool = True,
    ) -> None:
        self.grid = grid
        self.trace = trace
        self.time_scale = time_scale
        self.heartbeat_wall_s = heartbeat_wall_s
        self.heartbeat_s = heartbeat_wall_s * time_scale
        self.subs = [Substation(i, spec) for i, spec in enumerate(grid.substations)]
        self.by_id = {s.substation_id: s for s in self.subs}
        # Heartbeats carry the workers' predicted releases and the table uses them; False for
        # policies that never read them (same choices, less work) and for comparison.
        self.releases = releases
        self.transit_s = transit_wall_s * time_scale
        self.table = LoadTable(
            rng=random.Random(seed + 2),
            use_releases=releases,
            count_in_transit=count_in_transit,
        )
        self._wake_s: float | None = None  # the dispatcher's next wake-up for a release
        self._prediction_errors: list[float] = []
        self._estimate_errors: list[float] = []
        self.policy = policy_factory(random.Random(seed), self)
        self._repoll = bool(getattr(self.policy, "repoll_on_change", False))
        self._phase_rng = random.Random(seed + 1)
        self.held: deque[Session] = deque()
        self.max_held = 0
        self.sessions = [
            Session(i, a.at_s, a.energy_kwh, a.car_kw, min(a.car_kw, CHARGER_MAX_KW), a.energy_kwh)
            for i, a in enumerate(trace.arrivals)
        ]
        self.completed = 0
        self.max_sim_s = max_sim_s
        self.max_events = max_events
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._counter = 0
        # Grid load integrated into bins, for utilization over a sliding window.
        self._bin_s = window_wall_s * time_scale / 10.0
        self._bins: list[float] = []
        self._grid_load = 0.0
        self._grid_t = 0.0

    # -- event queue ------------------------------------------------------------------------

    def _push(self, t: float, kind: int, a: int, b: int = 0) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (t, kind, self._counter, a, b))

    def _schedule_completion(self, sub: Substation) -> None:
        t = sub.next_completion()
        if t is not None:
            self._push(t, _COMPLETE, sub.index, sub.version)

    # -- grid load ----------------------------------------------------------------------------

    def _grid_to(self, t: float) -> None:
        t0, load, w = self._grid_t, self._grid_load, self._bin_s
        if t <= t0:
            return
        if load > 0:
            b = int(t0 // w)
            while t0 < t:
                end = min((b + 1) * w, t)
                while len(self._bins) <= b:
                    self._bins.append(0.0)
                self._bins[b] += load * (end - t0)
                t0 = end
                b += 1
        self._grid_t = t

    def _settle(self, sub: Substation, t: float) -> list[Session]:
        before_load, before_version = sub.load_kw, sub.version
        done = sub.settle(t)
        if sub.load_kw != before_load:
            self._grid_to(t)
            self._grid_load = max(0.0, self._grid_load + sub.load_kw - before_load)
        if sub.version != before_version:
            self._schedule_completion(sub)
        self.completed += len(done)
        for session in done:
            self._prediction_errors.extend(session.end_s - p for p in session.predicted_end_s)
            if session.estimated_end_s is not None:
                self._estimate_errors.append(session.end_s - session.estimated_end_s)
        return done

    # -- the dispatcher -----------------------------------------------------------------------

    def _pump(self, t: float) -> None:
        """dispatcher.service.Dispatcher._pump without the broker."""
        if not self.held:
            return
        choose = decider(self.policy, self.table, t / self.time_scale)
        while self.held:
            session = self.held[0]
            target = choose(session.car_kw)
            if target is None:
                break
            self.held.popleft()
            state = self.table.get(target)
            if state is not None:
                end = self.table.record_assignment(
                    target,
                    min(session.car_kw, state.capacity_kw),
                    energy_kwh=session.energy_kwh,
                    now=t / self.time_scale,
                )
                if end is not None:
                    session.estimated_end_s = end * self.time_scale
            sub = self.by_id[target]
            if self.transit_s > 0:
                self._push(t + self.transit_s, _DELIVER, sub.index, session.idx)
                continue
            sub.advance(t)
            sub.offer(session, t)
            self._settle(sub, t)
        self._arm_wake(t)

    def _arm_wake(self, t: float) -> None:
        """Holding requests: wake the dispatcher when the next predicted release is due (the
        real dispatcher sets a timer), as well as on every heartbeat and arrival."""
        if not self.held or not self.releases or self._repoll:
            return
        self.table.release_due(t / self.time_scale)
        due = self.table.next_release()
        if due is None:
            return
        at = max(t, due * self.time_scale)
        while at / self.time_scale < due:  # never wake a hair before it is due
            at = math.nextafter(at, math.inf)
        if self._wake_s is not None and t <= self._wake_s <= at:
            return  # already woken by then
        self._wake_s = at
        self._push(at, _WAKE, 0)

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> RunResult:
        arrivals = self.sessions
        n = len(arrivals)
        now_wall = 0.0
        for sub in self.subs:
            # Each worker heartbeats at start, then every H from a small phase offset.
            self._push(0.0, _HEARTBEAT, sub.index)
            phase = self._phase_rng.uniform(0.0, 0.1) * self.heartbeat_s
            self._push(phase + self.heartbeat_s, _HEARTBEAT, sub.index)
        next_arrival = 0
        events = 0
        t = 0.0
        while self.completed < n:
            events += 1
            if events > self.max_events:
                raise RuntimeError(f"{self.policy.name}: over {self.max_events} events")
            if next_arrival < n and (
                not self._heap or arrivals[next_arrival].arrival_s < self._heap[0][0]
            ):
                session = arrivals[next_arrival]
                next_arrival += 1
                t = session.arrival_s
                self.held.append(session)
                self.max_held = max(self.max_held, len(self.held))
                self._pump(t)
                continue
            t, kind, _, a, b = heapq.heappop(self._heap)
            if t > self.max_sim_s:
                raise RuntimeError(f"{self.policy.name}: not done after {self.max_sim_s} s")
            if kind == _WAKE:
                if self._wake_s == t:
                    self._wake_s = None
                self._pump(t)
                continue
            sub = self.subs[a]
            if kind == _DELIVER:
                sub.advance(t)
                sub.offer(self.sessions[b], t)
                self._settle(sub, t)
                if self._repoll:
                    self._pump(t)
            elif kind == _COMPLETE:
                if b != sub.version:
                    continue  # superseded by a later reshare
                sub.advance(t)
                self._settle(sub, t)
                if self._repoll:
                    self._pump(t)
            else:
                now_wall = t / self.time_scale
                self.table.observe(
                    sub.heartbeat(
                        t, self.time_scale, self.heartbeat_wall_s, releases=self.releases
                    ),
                    now_wall,
                )
                self._push(t + self.heartbeat_s, _HEARTBEAT, a)
                self._pump(t)
        for sub in self.subs:
            sub.advance(t)
        self._grid_to(t)
        return self._result(t, events)

    # -- figures ---------------------------------------------------------------------------------

    def _result(self, end_s: float, events: int) -> RunResult:
        scale = self.time_scale
        waits = sorted(
            s.start_s - s.arrival_s for s in self.sessions if s.arrival_s >= self.trace.warmup_s
        )
        first = self.sessions[0].arrival_s if self.sessions else 0.0
        capacity = self.grid.capacity_kw
        window = 10
        best = run = 0.0
        for i, v in enumerate(self._bins):
            run += v
            if i >= window:
                run -= self._bins[i - window]
            best = max(best, run)
        peak_util = best / (capacity * self._bin_s * window)
        energy = sum(s.energy_kwh for s in self.subs)
        busy_h = (end_s - first) / SECONDS_PER_HOUR
        shares = {
            s.substation_id: (s.energy_kwh / energy) / (s.capacity_kw / capacity)
            if energy > 0
            else 0.0
            for s in self.subs
        }

        # Capacity-weighted mean over substations: a small substation swamped counts for less
        # of the grid than a large one.
        def weighted(attr: str) -> float:
            return sum(getattr(s, attr) * s.capacity_kw for s in self.subs) / capacity / scale

        errors = self._prediction_errors
        late = [e for e in errors if e > _LATE_TOLERANCE_S]
        estimates = self._estimate_errors
        estimates_late = [e for e in estimates if e > _LATE_TOLERANCE_S]
        return RunResult(
            grid=self.grid.name,
            trace=self.trace.name,
            policy=self.policy.name,
            heartbeat_wall_s=self.heartbeat_wall_s,
            time_scale=scale,
            sessions=len(self.sessions),
            p50_wait_s=_pct(waits, 50) / scale,
            p95_wait_s=_pct(waits, 95) / scale,
            p99_wait_s=_pct(waits, 99) / scale,
            max_wait_s=(waits[-1] if waits else 0.0) / scale,
            finish_s=(end_s - first) / scale,
            peak_utilization=peak_util,
            busy_utilization=energy / (capacity * busy_h) if busy_h > 0 else 0.0,
            over_capacity_s=weighted("over_capacity_s"),
            overload_s=weighted("overload_s"),
            peak_demand_ratio=max(s.peak_demand_ratio for s in self.subs),
            peak_load_ratio=max(s.peak_load_ratio for s in self.subs),
            share_ratio_min=min(shares.values()),
            share_ratio_max=max(shares.values()),
            max_held=self.max_held,
            max_waiting_at_worker=max(s.max_waiting for s in self.subs),
            events=events,
            energy_share=shares,
            predictions=len(errors),
            predictions_late=len(late),
            prediction_late_max_s=max(late, default=0.0) / scale,
            prediction_mean_abs_error_s=(
                sum(abs(e) for e in errors) / len(errors) / scale if errors else 0.0
            ),
            estimates=len(estimates),
            estimates_late=len(estimates_late),
            estimate_late_max_s=max(estimates_late, default=0.0) / scale,
            estimate_mean_error_s=(-sum(estimates) / len(estimates) / scale if estimates else 0.0),
        )


def _pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return 0.0
    k = max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)
    return sorted_values[k]


def simulate(
    grid: Grid,
    trace: Trace,
    policy_factory: PolicyFactory,
    *,
    heartbeat_wall_s: float,
    time_scale: float = 3600.0,
    seed: int = 0,
    releases: bool = True,
    transit_wall_s: float = 0.0,
    count_in_transit: bool = True,
) -> RunResult:
    return Simulation(
        grid,
        trace,
        policy_factory,
        heartbeat_wall_s=heartbeat_wall_s,
        time_scale=time_scale,
        seed=seed,
        releases=releases,
        transit_wall_s=transit_wall_s,
        count_in_transit=count_in_transit,
    ).run()
