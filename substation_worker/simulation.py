"""A substation's charging sessions in simulated time. Pure: no I/O, no clock (time is passed in).

Sessions wait in FIFO order for a bay, then share the capacity (``power.share_power``). Time is
advanced event by event: when a session completes inside a step, the power it drew is shared
again among the others (and a waiting session takes its bay) for the rest of that step, so the
result does not depend on how coarse the caller's steps are (a tick at time scale 36000 is an
hour of simulated time).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from contracts import Release
from contracts.messages import MAX_RELEASE_IN_S, MAX_RELEASES
from substation_worker.power import share_power

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


@dataclass(eq=False)
class ChargingSession:
    """One vehicle's request held by the substation (waiting for a bay, or charging)."""

    key: str
    energy_kwh: float
    max_power_kw: float  # min(car, charger)
    offered_at_s: float
    started_at_s: float | None = None
    completed_at_s: float | None = None
    delivered_kwh: float = 0.0
    power_kw: float = 0.0

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
    """What happened during one ``advance``: sessions that got a bay, sessions that finished."""

    started: list[ChargingSession] = field(default_factory=list)
    completed: list[ChargingSession] = field(default_factory=list)


class Substation:
    """Capacity, bays and the sessions held; ``now_s`` is the simulated clock."""

    def __init__(self, capacity_kw: float, bays: int, charger_max_kw: float = 350.0) -> None:
        if capacity_kw <= 0:
            raise ValueError("capacity_kw must be > 0")
        if bays < 1:
            raise ValueError("bays must be >= 1")
        if charger_max_kw <= 0:
            raise ValueError("charger_max_kw must be > 0")
        self.capacity_kw = float(capacity_kw)
        self.bays = bays
        self.charger_max_kw = float(charger_max_kw)
        self.now_s = 0.0
        self._active: list[ChargingSession] = []
        self._waiting: deque[ChargingSession] = deque()
        self._keys: set[str] = set()

    # -- state -------------------------------------------------------------------------------

    @property
    def load_kw(self) -> float:
        return sum(s.power_kw for s in self._active)

    @property
    def committed_kw(self) -> float:
        """Sum of the sessions' max power over active + waiting: what has been promised."""
        return sum(s.max_power_kw for s in self._active) + sum(
            s.max_power_kw for s in self._waiting
        )

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
        """When the sessions held will end if nothing more is assigned (``predict_releases``),
        simulated seconds from ``now_s``."""
        return predict_releases(
            self.capacity_kw,
            self.bays,
            [(s.remaining_kwh, s.max_power_kw) for s in self._active],
            [(s.remaining_kwh, s.max_power_kw) for s in self._waiting],
            horizon_s=horizon_s,
            max_entries=max_entries,
        )

    # -- changes -----------------------------------------------------------------------------

    def offer(self, key: str, energy_kwh: float, max_power_kw: float) -> ChargingSession:
        """Queue a session (FIFO) for a bay; ``admit`` or ``advance`` starts it."""
        if key in self._keys:
            raise ValueError(f"session {key!r} is already held")
        if energy_kwh <= 0 or max_power_kw <= 0:
            raise ValueError("energy_kwh and max_power_kw must be > 0")
        session = ChargingSession(
            key=key,
            energy_kwh=float(energy_kwh),
            max_power_kw=min(float(max_power_kw), self.charger_max_kw),
            offered_at_s=self.now_s,
        )
        self._waiting.append(session)
        self._keys.add(key)
        return session

    def admit(self) -> list[ChargingSession]:
        """Start waiting sessions, oldest first, while bays are free; reshares the power."""
        started: list[ChargingSession] = []
        while self._waiting and len(self._active) < self.bays:
            session = self._waiting.popleft()
            session.started_at_s = self.now_s
            self._active.append(session)
            started.append(session)
        if started:
            self._reshare()
        return started

    def advance(self, sim_dt_s: float) -> Step:
        """Run ``sim_dt_s`` simulated seconds: charge, complete, hand freed bays on."""
        if sim_dt_s < 0:
            raise ValueError("time does not run backwards")
        step = Step(started=self.admit())
        remaining_s = float(sim_dt_s)
        # Each pass either uses up the step or completes at least one session.
        for _ in range(len(self._active) + len(self._waiting) + 2):
            if remaining_s <= 0 or not self._active:
                break
            first, until_first_s = self._next_completion()
            dt = min(remaining_s, until_first_s)
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
                step.started.extend(self.admit())
                self._reshare()
        self.now_s += remaining_s
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

    def _reshare(self) -> None:
        shares = share_power(self.capacity_kw, [s.max_power_kw for s in self._active])
        for s, p in zip(self._active, shares, strict=True):
            s.power_kw = p

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
            self._keys.discard(s.key)


# -- predicted releases ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PredictedRelease:
    """Sessions predicted to end ``after_s`` simulated seconds from now, and the committed power
    (their max power) they free."""

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
) -> list[tuple[float, int]]:
    """When each session held ends if nothing else is assigned: the substation run forward on
    a copy, event by event, with power shared again at each end and waiting sessions taking
    freed bays in FIFO order, as ``Substation.advance`` does. ``active`` and ``waiting`` are
    (remaining kWh, max kW) pairs, ``waiting`` in queue order. Returns (simulated seconds from
    now, index into ``[*active, *waiting]``) in time order, for the ends within ``horizon_s``.

    Exact for the sessions held. Something assigned later can only delay these ends if it makes
    the substation share power, i.e. if more than its capacity is promised: the dispatcher's
    1 x hold never does that (with at most its capacity promised, every car gets its max)."""
    if capacity_kw <= 0 or bays < 1:
        raise ValueError("capacity_kw and bays must be positive")
    if not waiting and sum(kw for _, kw in active) <= capacity_kw:
        # Nothing shares power (the dispatcher's 1 x hold): each ends at its own max power.
        ends = sorted(
            (kwh / kw * SECONDS_PER_HOUR, i)
            for i, (kwh, kw) in enumerate(active)
            if kwh > 0 and kw > 0
        )
        return [(t, i) for t, i in ends if t <= horizon_s]
    if len(active) + len(waiting) > MAX_SHARED_PREDICTION:
        return []  # too many to run forward on every heartbeat: the next heartbeat tells
    # [remaining kWh, max kW, power kW, index]
    sessions = [[kwh, kw, 0.0, i] for i, (kwh, kw) in enumerate([*active, *waiting])]
    running = [s for s in sessions[: len(active)] if s[0] > 0 and s[1] > 0]
    queue = deque(s for s in sessions[len(active) :] if s[0] > 0 and s[1] > 0)
    out: list[tuple[float, int]] = []
    t = 0.0
    while running or queue:
        while queue and len(running) < bays:
            running.append(queue.popleft())
        for s, p in zip(running, share_power(capacity_kw, [s[1] for s in running]), strict=True):
            s[2] = p
        first = min(running, key=lambda s: s[0] / s[2] if s[2] > 0 else math.inf)
        if first[2] <= 0:
            break  # nothing draws power (cannot happen with capacity > 0)
        dt = first[0] / first[2] * SECONDS_PER_HOUR
        t += dt
        if t > horizon_s:
            break
        left = []
        for s in running:
            s[0] -= s[2] * dt / SECONDS_PER_HOUR
            # The first to end, and any within float crumbs of it, end now.
            if s is first or s[0] / s[2] * SECONDS_PER_HOUR <= _DONE_REL_TOL * t:
                out.append((t, int(s[3])))
            else:
                left.append(s)
        running = left
    return out


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


def _merged(releases: list[PredictedRelease], max_entries: int) -> list[PredictedRelease]:
    """At most ``max_entries``: consecutive releases merged into groups of near-equal size, each
    at its last end."""
    if max_entries < 1:
        return []
    n = len(releases)
    if n <= max_entries:
        return releases
    out = []
    for g in range(max_entries):
        group = releases[g * n // max_entries : (g + 1) * n // max_entries]
        out.append(
            PredictedRelease(
                group[-1].after_s, sum(r.kw for r in group), sum(r.sessions for r in group)
            )
        )
    return out


def to_wire(releases: Sequence[PredictedRelease], time_scale: float) -> tuple[Release, ...]:
    """Predicted releases as a heartbeat carries them: wall seconds after it is sent."""
    return tuple(
        Release(in_s=r.after_s / time_scale, kw=r.kw, sessions=r.sessions)
        for r in releases
        if r.after_s / time_scale <= MAX_RELEASE_IN_S  # beyond: left for a later heartbeat
    )


def heartbeat_releases(
    sub: Substation, interval_s: float, time_scale: float
) -> tuple[Release, ...]:
    """What a heartbeat sent now states: the sessions ``sub`` holds that end within
    ``RELEASE_HORIZON_INTERVALS`` heartbeat intervals (wall seconds ``interval_s``)."""
    horizon_s = RELEASE_HORIZON_INTERVALS * interval_s * time_scale
    return to_wire(sub.predicted_releases(horizon_s), time_scale)
