"""The same ACN sessions on three substations, through dispatch: against the pooled optimum.

Pure and deterministic. The substations hold ``SPLIT`` of the capacity; each runs the worker's
own simulation (``substation_worker.simulation.Substation``) with its sharing, and each car is
dispatched on arrival by the dispatcher's own policy (``dispatcher.policies.Headroom``) from the
substations' state at that moment (a dispatcher with fresh heartbeats: no staleness, no
latency). Two grids:

- **smartgrid**: the dispatch with deadlines (a car is promised the power that fills it by its
  departure, ``contracts.promises``, in full; the least promised, never held) and
  the ``smartgrid`` sharing;
- **headroom + fair**: the dispatch without deadlines (each car promised its max power, held
  in arrival order while no substation has room for it) and max-min fair sharing.

Cars leave at their true departure in both (a car still held then leaves unserved). The pooled
optimum is the offline optimum of one substation with all the capacity: an upper bound on what
any dispatch and sharing of the three could deliver.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from contracts.promises import promised_kw
from dispatcher.load_table import SubstationState, promised_ratio
from dispatcher.policies import Headroom
from substation_worker.sharing import Car, Fair, Smartgrid, offline_optimum
from substation_worker.simulation import Substation

SPLIT = (0.2, 0.3, 0.5)
GRIDS = ("smartgrid", "headroom+fair")
# Bays enough for every car of a day at once: power, not bays, is what the table compares.
BAYS = 1000
# The dispatcher retries held cars this often (simulated s), as its heartbeats would.
RETRY_S = 60.0
# Float slack when a car is full or has left.
_EPS = 1e-9


@dataclass(frozen=True)
class GridOutcome:
    """What a grid delivered: kWh per car, and where each car was sent (None: never sent)."""

    delivered_kwh: dict[str, float]
    sent_to: dict[str, int | None]

    def energy(self) -> float:
        return math.fsum(self.delivered_kwh.values())


def _state(i: int, sub: Substation, committed_kw: float) -> SubstationState:
    return SubstationState(
        substation_id=str(i),
        capacity_kw=sub.capacity_kw,
        bays=sub.bays,
        load_kw=sub.load_kw,
        committed_kw=committed_kw,
        active_sessions=sub.active_count,
        queued=sub.waiting_count,
        status="up",
        seq=0,
        interval_s=1.0,
        last_seen=0.0,
        sent_at_ts=0.0,
    )


def run_grid(
    total_capacity_kw: float,
    cars: Sequence[Car],
    grid: str,
    *,
    split: Sequence[float] = SPLIT,
    step_s: float = 60.0,
    seed: int = 0,
) -> GridOutcome:
    """Dispatch ``cars`` (``remaining_kwh``: the demand at arrival) over substations holding
    ``split`` of ``total_capacity_kw``, as ``grid`` does (module docstring)."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    deadlines = grid == "smartgrid"
    charger_kw = max((c.max_kw for c in cars), default=1.0)
    subs = [
        Substation(
            share * total_capacity_kw,
            BAYS,
            charger_kw,
            sharing=Smartgrid(first_step_s=step_s) if deadlines else Fair(),
            replan_s=step_s,
        )
        for share in split
    ]
    policy = Headroom(random.Random(seed))
    delivered = {c.key: 0.0 for c in cars}
    sent_to: dict[str, int | None] = dict.fromkeys(delivered)
    pending = deque(sorted(cars, key=lambda c: c.arrival_s))
    if not pending:
        return GridOutcome(delivered, sent_to)
    origin = pending[0].arrival_s
    held: deque[Car] = deque()
    now = origin

    def committed(sub: Substation) -> float:
        if deadlines:
            return sub.committed_kw
        return math.fsum(s.max_power_kw for s in (*sub.active, *sub.waiting))

    def dispatch() -> None:
        while held:
            car = held[0]
            left = None if car.departure_s is None else car.departure_s - now
            kw = promised_kw(car.remaining_kwh, car.max_kw, left) if deadlines else car.max_kw
            states = [_state(i, s, committed(s)) for i, s in enumerate(subs)]
            if deadlines and car.departure_s is not None:
                # As the dispatcher: the least promised counting the need in full, never held.
                target: str | None = min(
                    states, key=lambda s: promised_ratio(s, kw, 1)
                ).substation_id
            else:
                target = policy.choose(states, kw)
            if target is None:
                return  # held, in arrival order, until a retry finds room
            held.popleft()
            i = int(target)
            sent_to[car.key] = i
            subs[i].offer(
                car.key,
                car.remaining_kwh,
                car.max_kw,
                departure_s=None if car.departure_s is None else car.departure_s - origin,
                priority=car.priority,
            )
            subs[i].advance(0.0)

    next_retry = origin
    while pending or held or any(s.active_count or s.waiting_count for s in subs):
        upcoming = [next_retry] if held or not pending else []
        if pending:
            upcoming.append(pending[0].arrival_s)
        following = max(now, min(upcoming))
        for sub in subs:
            for s in sub.advance(following - now).completed:
                delivered[s.key] = s.delivered_kwh
        now = following
        while next_retry <= now:
            next_retry += RETRY_S
        while pending and pending[0].arrival_s <= now + _EPS:
            held.append(pending.popleft())
        # A car still held at its departure leaves unserved.
        held = deque(c for c in held if c.departure_s is None or c.departure_s > now + _EPS)
        dispatch()
    return GridOutcome(delivered, sent_to)


def pooled_optimum(total_capacity_kw: float, cars: Sequence[Car]) -> float:
    """The most any dispatch and sharing could deliver: one substation with all the capacity,
    knowing every car in advance."""
    return math.fsum(offline_optimum(total_capacity_kw, cars).values())
