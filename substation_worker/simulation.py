"""A substation's charging sessions in simulated time. Pure: no I/O, no clock (time is passed in).

Sessions wait in FIFO order for a bay, then share the capacity (``power.share_power``). Time is
advanced event by event: when a session completes inside a step, the power it drew is shared
again among the others (and a waiting session takes its bay) for the rest of that step, so the
result does not depend on how coarse the caller's steps are (a tick at time scale 36000 is an
hour of simulated time).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from substation_worker.power import share_power

SECONDS_PER_HOUR = 3600.0
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
