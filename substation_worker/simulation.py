"""A substation's charging sessions in simulated time. Pure: no I/O, no clock (time is passed in).

Sessions wait in FIFO order for a bay, then share the capacity by the substation's sharing
(``sharing.SHARINGS``; ``fair`` unless told). Time is advanced event by event: when a session
completes or leaves inside a step, the power is shared again among the others (and a waiting
session takes the freed bay) for the rest of that step, so the result does not depend on how
coarse the caller's steps are (a tick at time scale 36000 is an hour of simulated time). A
sharing whose shares move with time (``Sharing.periodic``: smartgrid's plan, least laxity) is
also re-planned every ``replan_s`` simulated seconds.

A session with a departure ends then, full or not: ``departed`` if it got some energy,
``unserved`` if none (it never got a bay, or arrived after its departure). Without a departure
it charges until full. Every session ends with an ``outcome`` (``contracts.SessionOutcome``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from contracts import Release, SessionOutcome
from contracts.messages import MAX_RELEASE_IN_S, MAX_RELEASES
from contracts.promises import promised_kw
from substation_worker.power import share_power
from substation_worker.sharing import DEFAULT_FIRST_STEP_S, Car, Fair, Sharing

T = TypeVar("T")

SECONDS_PER_HOUR = 3600.0
# Predicted releases are rounded late by this share (plus _LATE_ABS_S): a release stated a hair
# early would let the dispatcher promise power a session still draws.
_LATE_REL = 1e-6
_LATE_ABS_S = 1e-6
# A heartbeat predicts the sessions that end within this many heartbeat intervals: the next
# heartbeat states them again (and a substation silent for 3 is out of rotation anyway).
RELEASE_HORIZON_INTERVALS = 2.0
# Sharing power, the prediction runs the substation forward (O(n^2 log n) for n sessions);
# beyond this many sessions held it predicts nothing (no release is stated, which is safe).
MAX_SHARED_PREDICTION = 2000
# A session whose remaining energy is below this share of its request counts as complete:
# integrating power over sub-steps leaves float crumbs of ~1e-15 kWh.
_DONE_REL_TOL = 1e-9
# A departure this close to the clock has come: float sums of sub-steps miss it by ulps.
_DEPARTURE_TOL_S = 1e-6


@dataclass(eq=False)
class ChargingSession:
    """One vehicle's request held by the substation (waiting for a bay, or charging)."""

    key: str
    energy_kwh: float
    max_power_kw: float  # min(car, charger)
    offered_at_s: float
    departure_s: float | None = None  # when the car leaves, on the substation's clock
    priority: int = 0
    started_at_s: float | None = None
    completed_at_s: float | None = None  # when it ended: full or left
    delivered_kwh: float = 0.0
    power_kw: float = 0.0
    outcome: SessionOutcome | None = None  # set when it ends

    @property
    def remaining_kwh(self) -> float:
        return max(0.0, self.energy_kwh - self.delivered_kwh)

    @property
    def charge_time_s(self) -> float:
        """Simulated seconds from start to completion (or to now, via the caller, if running)."""
        if self.started_at_s is None or self.completed_at_s is None:
            return 0.0
        return self.completed_at_s - self.started_at_s


@dataclass
class Step:
    """What happened during one ``advance``: sessions that got a bay, sessions that ended (full,
    or left at their departure: see each one's ``outcome``)."""

    started: list[ChargingSession] = field(default_factory=list)
    completed: list[ChargingSession] = field(default_factory=list)


class Substation:
    """Capacity, bays and the sessions held; ``now_s`` is the simulated clock."""

    def __init__(
        self,
        capacity_kw: float,
        bays: int,
        charger_max_kw: float = 350.0,
        *,
        sharing: Sharing | None = None,
        replan_s: float = DEFAULT_FIRST_STEP_S,
        min_replan_gap_s: float = 0.0,
    ) -> None:
        if capacity_kw <= 0:
            raise ValueError("capacity_kw must be > 0")
        if bays < 1:
            raise ValueError("bays must be >= 1")
        if charger_max_kw <= 0:
            raise ValueError("charger_max_kw must be > 0")
        if not (math.isfinite(replan_s) and replan_s > 0):
            raise ValueError("replan_s must be finite and > 0")
        if not (math.isfinite(min_replan_gap_s) and 0 <= min_replan_gap_s <= replan_s):
            raise ValueError("min_replan_gap_s must be within [0, replan_s]")
        self.capacity_kw = float(capacity_kw)
        self.bays = bays
        self.charger_max_kw = float(charger_max_kw)
        self.sharing: Sharing = sharing if sharing is not None else Fair()
        self.replan_s = float(replan_s)
        # At most one re-plan per this many simulated seconds: the events in between (arrivals
        # by the hundred, under a burst) are planned together at its end. Until then the
        # powers stay as planned, which is safe: a car that left or is full draws nothing, a
        # newcomer nothing yet, so the sum stays within the capacity.
        self.min_replan_gap_s = float(min_replan_gap_s)
        self._planned_at = -math.inf
        self.now_s = 0.0
        self._active: list[ChargingSession] = []
        self._waiting: deque[ChargingSession] = deque()
        self._keys: set[str] = set()
        self._replan_at = math.inf

    # -- state -------------------------------------------------------------------------------

    @property
    def load_kw(self) -> float:
        return sum(s.power_kw for s in self._active)

    @property
    def planned_at_s(self) -> float:
        """When the sharing last shared the power (re-planned), on this clock; -inf: never."""
        return self._planned_at

    @property
    def committed_kw(self) -> float:
        """What has been promised: ``promised_kw`` summed over active + waiting."""
        return sum(self.promised_kw(s) for s in self._active) + sum(
            self.promised_kw(s) for s in self._waiting
        )

    def promised_kw(self, s: ChargingSession) -> float:
        """The power promised to a session (``contracts.promises``): its max, or with a
        departure what fills it by then."""
        left_s = None if s.departure_s is None else s.departure_s - self.now_s
        return promised_kw(s.remaining_kwh, s.max_power_kw, left_s)

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> tuple[ChargingSession, ...]:
        return tuple(self._active)

    @property
    def waiting(self) -> tuple[ChargingSession, ...]:
        return tuple(self._waiting)

    def holds(self, key: str) -> bool:
        return key in self._keys

    def predicted_releases(
        self, horizon_s: float = math.inf, max_entries: int = MAX_RELEASES
    ) -> list[PredictedRelease]:
        """``predicted_ends`` as a heartbeat's releases (``releases_of``)."""
        held = {s.key: self.promised_kw(s) for s in (*self._active, *self._waiting)}
        ends = self.predicted_ends(horizon_s)
        keys = [key for _, key in ends]
        return releases_of(
            [(t, i) for i, (t, _) in enumerate(ends)], [held[k] for k in keys], max_entries
        )

    def predicted_ends(self, horizon_s: float = math.inf) -> list[tuple[float, str]]:
        """When the sessions held will end if nothing more is assigned, (simulated seconds from
        ``now_s``, key) in time order: never earlier than they will (a release stated early
        lets the dispatcher promise power a session still draws).

        ``predict_ends`` runs the substation forward exactly when nothing shares power (every
        sharing then gives each car its maximum), when the sharing is ``fair`` (the one it
        models) or when no car held has a departure (every sharing is then ``fair``). Another
        sharing under contention may hold a car back where ``fair`` would not, so then only
        departures are stated: a car leaves by its departure whatever it got.
        """
        held = [*self._active, *self._waiting]
        departures = [None if s.departure_s is None else s.departure_s - self.now_s for s in held]
        active = [(s.remaining_kwh, s.max_power_kw) for s in self._active]
        waiting = [(s.remaining_kwh, s.max_power_kw) for s in self._waiting]
        contended = bool(waiting) or sum(kw for _, kw in active) > self.capacity_kw
        dated = any(d is not None for d in departures)
        if contended and dated and not isinstance(self.sharing, Fair):
            ends = sorted(
                (max(0.0, d), i)
                for i, d in enumerate(departures)
                if d is not None and d <= horizon_s
            )
        else:
            ends = predict_ends(
                self.capacity_kw,
                self.bays,
                active,
                waiting,
                horizon_s=horizon_s,
                departures=departures,
            )
        return [(t, held[i].key) for t, i in ends]

    # -- changes -----------------------------------------------------------------------------

    def offer(
        self,
        key: str,
        energy_kwh: float,
        max_power_kw: float,
        *,
        departure_s: float | None = None,
        priority: int = 0,
    ) -> ChargingSession:
        """Queue a session (FIFO) for a bay; ``advance`` (``advance(0)``: at once) starts it, or
        ends it unserved if its departure (simulated seconds, on ``now_s``'s clock) has come."""
        if key in self._keys:
            raise ValueError(f"session {key!r} is already held")
        if energy_kwh <= 0 or max_power_kw <= 0:
            raise ValueError("energy_kwh and max_power_kw must be > 0")
        if departure_s is not None and not math.isfinite(departure_s):
            raise ValueError("departure_s must be finite")
        session = ChargingSession(
            key=key,
            energy_kwh=float(energy_kwh),
            max_power_kw=min(float(max_power_kw), self.charger_max_kw),
            offered_at_s=self.now_s,
            departure_s=None if departure_s is None else float(departure_s),
            priority=priority,
        )
        self._waiting.append(session)
        self._keys.add(key)
        return session

    def admit(self) -> list[ChargingSession]:
        """Start waiting sessions, oldest first, while bays are free; reshares the power.
        (``advance`` first ends the sessions whose departure has come.)"""
        started: list[ChargingSession] = []
        while self._waiting and len(self._active) < self.bays:
            session = self._waiting.popleft()
            session.started_at_s = self.now_s
            self._active.append(session)
            started.append(session)
        if started:
            self._replan_soon()
        return started

    def advance(self, sim_dt_s: float) -> Step:
        """Run ``sim_dt_s`` simulated seconds: charge, complete, let cars leave at their
        departure, hand freed bays on, re-plan every ``replan_s``."""
        if sim_dt_s < 0:
            raise ValueError("time does not run backwards")
        step = Step()
        left = self._leave(step)
        started = self.admit()  # re-plans when it starts any
        step.started.extend(started)
        if left and not started:
            self._replan_soon()
        remaining_s = float(sim_dt_s)
        # Each pass uses up the step, ends at least one session, or reaches a re-plan.
        passes = 2 * (len(self._active) + len(self._waiting)) + 2
        if self._active and self.sharing.periodic:
            passes += math.ceil(remaining_s / self.replan_s)
        for _ in range(passes):
            if remaining_s <= 0 or not self._active:
                break
            first, until_first_s = self._next_completion()
            until_leave_s = self._next_departure() - self.now_s
            until_replan_s = self._replan_at - self.now_s
            dt = max(0.0, min(remaining_s, until_first_s, until_leave_s, until_replan_s))
            for s in self._active:
                s.delivered_kwh = min(
                    s.energy_kwh, s.delivered_kwh + s.power_kw * dt / SECONDS_PER_HOUR
                )
            self.now_s += dt
            remaining_s = 0.0 if dt >= remaining_s else remaining_s - dt
            done = [
                s
                for s in self._active
                if (s is first and dt == until_first_s)
                or s.remaining_kwh <= _DONE_REL_TOL * s.energy_kwh
            ]
            if done:
                self._complete(done)
                step.completed.extend(done)
            left = self._leave(step)
            if done or left:
                started = self.admit()  # re-plans when it starts any
                step.started.extend(started)
                if not started:
                    self._replan_soon()
            if self.now_s >= self._replan_at:
                self._reshare()
        self.now_s += remaining_s
        if self._leave(step):
            self._replan_soon()
        return step

    def take_waiting(self) -> list[ChargingSession]:
        """Remove and return the sessions still waiting for a bay (to hand them back)."""
        taken = list(self._waiting)
        self._waiting.clear()
        for session in taken:
            self._keys.discard(session.key)
        return taken

    def reset(self) -> list[ChargingSession]:
        """Drop every session held (active and waiting), e.g. when the broker took them back."""
        dropped = [*self._active, *self._waiting]
        self._active.clear()
        self._waiting.clear()
        self._keys.clear()
        return dropped

    # -- internals ---------------------------------------------------------------------------

    def _replan_soon(self) -> None:
        """Re-plan now, or at the end of the gap since the last plan (``min_replan_gap_s``)."""
        due = self._planned_at + self.min_replan_gap_s
        if self.now_s >= due:
            self._reshare()
        else:
            self._replan_at = min(self._replan_at, due)

    def _reshare(self) -> None:
        self._planned_at = self.now_s
        periodic = self._active and self.sharing.periodic
        self._replan_at = self.now_s + self.replan_s if periodic else math.inf
        cars = [
            Car(
                key=s.key,
                max_kw=s.max_power_kw,
                remaining_kwh=s.remaining_kwh,
                departure_s=s.departure_s,
                priority=s.priority,
                arrival_s=self.now_s if s.started_at_s is None else s.started_at_s,
            )
            for s in self._active
        ]
        try:
            shares = self.sharing.share(self.capacity_kw, cars, self.now_s)
        except RuntimeError:
            # The solver found no plan (it should not: the programme is always feasible):
            # charging goes on, shared fairly, until the next re-plan.
            shares = Fair().share(self.capacity_kw, cars, self.now_s)
        for s, p in zip(self._active, shares, strict=True):
            s.power_kw = p

    def _next_departure(self) -> float:
        return min(
            (s.departure_s for s in (*self._active, *self._waiting) if s.departure_s is not None),
            default=math.inf,
        )

    def _leave(self, step: Step) -> list[ChargingSession]:
        """End the sessions whose departure has come (active or waiting), as they stand."""
        due = self.now_s + _DEPARTURE_TOL_S
        left = [
            s
            for s in (*self._active, *self._waiting)
            if s.departure_s is not None and s.departure_s <= due
        ]
        if not left:
            return left
        gone = {id(s) for s in left}
        self._active = [s for s in self._active if id(s) not in gone]
        self._waiting = deque(s for s in self._waiting if id(s) not in gone)
        for s in left:
            s.completed_at_s = self.now_s
            s.power_kw = 0.0
            s.outcome = SessionOutcome.DEPARTED if s.delivered_kwh > 0 else SessionOutcome.UNSERVED
            self._keys.discard(s.key)
        step.completed.extend(left)
        return left

    def _next_completion(self) -> tuple[ChargingSession | None, float]:
        first: ChargingSession | None = None
        best = float("inf")
        for s in self._active:
            if s.power_kw > 0:
                t = s.remaining_kwh / s.power_kw * SECONDS_PER_HOUR
                if t < best:
                    first, best = s, t
        return first, best

    def _complete(self, done: list[ChargingSession]) -> None:
        finished = {id(s) for s in done}
        self._active = [s for s in self._active if id(s) not in finished]
        for s in done:
            s.delivered_kwh = s.energy_kwh
            s.completed_at_s = self.now_s
            s.power_kw = 0.0
            s.outcome = SessionOutcome.FULL
            self._keys.discard(s.key)


# -- predicted releases ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PredictedRelease:
    """Sessions predicted to end ``after_s`` simulated seconds from now, and the committed power
    (``Substation.promised_kw``, summed) they free."""

    after_s: float
    kw: float
    sessions: int = 1


def predict_ends(
    capacity_kw: float,
    bays: int,
    active: Sequence[tuple[float, float]],
    waiting: Sequence[tuple[float, float]] = (),
    *,
    horizon_s: float = math.inf,
    departures: Sequence[float | None] | None = None,
) -> list[tuple[float, int]]:
    """When each session held ends if nothing else is assigned: the substation run forward on
    a copy, event by event, with power shared fairly again at each end and waiting sessions
    taking freed bays in FIFO order, as ``Substation.advance`` does. ``active`` and ``waiting``
    are (remaining kWh, max kW) pairs, ``waiting`` in queue order; ``departures``, indexed as
    ``[*active, *waiting]``: simulated seconds from now until each car leaves (None: it stays
    until full). Returns (simulated seconds from now, index into ``[*active, *waiting]``) in
    time order, for the ends within ``horizon_s``.

    Exact for the sessions held. Something assigned later can only delay these ends if it makes
    the substation share power, i.e. if more than its capacity is promised: the dispatcher's
    1 x hold never does that (with at most its capacity promised, every car gets its max)."""
    if capacity_kw <= 0 or bays < 1:
        raise ValueError("capacity_kw and bays must be positive")
    held = [*active, *waiting]
    leaves = [math.inf if d is None else max(0.0, d) for d in (departures or [None] * len(held))]
    if len(leaves) != len(held):
        raise ValueError("departures must be indexed as [*active, *waiting]")
    if not waiting and sum(kw for _, kw in active) <= capacity_kw:
        # Nothing shares power (the dispatcher's 1 x hold): each ends at its own max power.
        ends = sorted(
            (min(kwh / kw * SECONDS_PER_HOUR, leaves[i]), i)
            for i, (kwh, kw) in enumerate(active)
            if kwh > 0 and kw > 0
        )
        return [(t, i) for t, i in ends if t <= horizon_s]
    if len(held) > MAX_SHARED_PREDICTION:
        return []  # too many to run forward on every heartbeat: the next heartbeat tells
    # [remaining kWh, max kW, power kW, index, leaves at]
    sessions = [[kwh, kw, 0.0, i, leaves[i]] for i, (kwh, kw) in enumerate(held)]
    running = [s for s in sessions[: len(active)] if s[0] > 0 and s[1] > 0]
    queue = deque(s for s in sessions[len(active) :] if s[0] > 0 and s[1] > 0)
    out: list[tuple[float, int]] = []
    t = 0.0
    while running or queue:
        # Cars whose departure has come leave, waiting or not.
        for s in [*running, *queue]:
            if s[4] <= t + _DEPARTURE_TOL_S:
                out.append((s[4], int(s[3])))
        running = [s for s in running if s[4] > t + _DEPARTURE_TOL_S]
        queue = deque(s for s in queue if s[4] > t + _DEPARTURE_TOL_S)
        while queue and len(running) < bays:
            running.append(queue.popleft())
        if not running:
            break
        for s, p in zip(running, share_power(capacity_kw, [s[1] for s in running]), strict=True):
            s[2] = p
        first = min(running, key=lambda s: s[0] / s[2] if s[2] > 0 else math.inf)
        if first[2] <= 0:
            break  # nothing draws power (cannot happen with capacity > 0)
        full_dt = first[0] / first[2] * SECONDS_PER_HOUR
        leave_dt = min(s[4] for s in [*running, *queue]) - t
        dt = min(full_dt, leave_dt)
        t += dt
        if t > horizon_s:
            break
        left = []
        for s in running:
            s[0] -= s[2] * dt / SECONDS_PER_HOUR
            # The first to end, and any within float crumbs of it, end now.
            if (s is first and full_dt <= leave_dt) or (
                s[2] > 0 and s[0] / s[2] * SECONDS_PER_HOUR <= _DONE_REL_TOL * t
            ):
                out.append((t, int(s[3])))
            else:
                left.append(s)
        running = left
    out.sort()
    return [(t, i) for t, i in out if t <= horizon_s]


def predict_releases(
    capacity_kw: float,
    bays: int,
    active: Sequence[tuple[float, float]],
    waiting: Sequence[tuple[float, float]] = (),
    *,
    horizon_s: float = math.inf,
    max_entries: int = MAX_RELEASES,
) -> list[PredictedRelease]:
    """``predict_ends`` as a heartbeat's releases: sessions ending together in one entry with
    their max power summed, each time rounded a hair late; beyond ``max_entries`` neighbouring
    entries merged, each group at the time of its last end (late, never early)."""
    ends = predict_ends(capacity_kw, bays, active, waiting, horizon_s=horizon_s)
    return releases_of(ends, [kw for _, kw in [*active, *waiting]], max_entries)


def releases_of(
    ends: Sequence[tuple[float, int]], kws: Sequence[float], max_entries: int = MAX_RELEASES
) -> list[PredictedRelease]:
    """``predict_ends``'s answer as releases (``predict_releases``); ``kws``: each session's
    max power, indexed as ``ends`` is."""
    out: list[PredictedRelease] = []
    for t, i in ends:
        late = t * (1 + _LATE_REL) + _LATE_ABS_S
        if out and out[-1].after_s == late:
            last = out[-1]
            out[-1] = PredictedRelease(late, last.kw + kws[i], last.sessions + 1)
        else:
            out.append(PredictedRelease(late, kws[i]))
    return _merged(out, max_entries)


def near_equal_runs(items: Sequence[T], count: int) -> list[Sequence[T]]:
    """``items`` cut into ``count`` consecutive runs of near-equal length (``count`` at most
    ``len(items)``, at least 1): how a heartbeat's lists are merged to fit their bound."""
    n = len(items)
    return [items[g * n // count : (g + 1) * n // count] for g in range(count)]


def _merged(releases: list[PredictedRelease], max_entries: int) -> list[PredictedRelease]:
    """At most ``max_entries``: consecutive releases merged into groups of near-equal size, each
    at its last end."""
    if max_entries < 1:
        return []
    if len(releases) <= max_entries:
        return releases
    return [
        PredictedRelease(
            group[-1].after_s, sum(r.kw for r in group), sum(r.sessions for r in group)
        )
        for group in near_equal_runs(releases, max_entries)
    ]


def to_wire(releases: Sequence[PredictedRelease], time_scale: float) -> tuple[Release, ...]:
    """Predicted releases as a heartbeat carries them: wall seconds after it is sent."""
    return tuple(
        Release(in_s=r.after_s / time_scale, kw=r.kw, sessions=r.sessions)
        for r in releases
        if r.after_s / time_scale <= MAX_RELEASE_IN_S  # beyond: left for a later heartbeat
    )


class PredictsReleases(Protocol):
    def predicted_releases(self, horizon_s: float = ...) -> list[PredictedRelease]: ...


def heartbeat_releases(
    sub: PredictsReleases, interval_s: float, time_scale: float
) -> tuple[Release, ...]:
    """What a heartbeat sent now states: the sessions ``sub`` holds that end within
    ``RELEASE_HORIZON_INTERVALS`` heartbeat intervals (wall seconds ``interval_s``)."""
    horizon_s = RELEASE_HORIZON_INTERVALS * interval_s * time_scale
    return to_wire(sub.predicted_releases(horizon_s), time_scale)
