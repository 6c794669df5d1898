"""The same ACN sessions on three substations, through dispatch: against the pooled optimum.

Pure and deterministic. The substations hold ``SPLIT`` of the capacity; each runs the worker's
own simulation (``substation_worker.simulation.Substation``) with its sharing, and each car is
dispatched on arrival by the dispatcher's own policy (``dispatcher.policies.Headroom``) from the
substations' state at that moment (a dispatcher with fresh heartbeats: no staleness, no
latency). Two grids:

- **smartgrid**: the dispatch with deadlines (a car is promised the power that fills it by its
  departure, ``contracts.promises``, and goes where it can count on the most energy by then
  from what the substations' plans leave spare, ``dispatcher.spare``; never held) and the
  ``smartgrid`` sharing;
- **headroom + fair**: the dispatch without deadlines (each car promised its max power, held
  in arrival order while no substation has room for it) and max-min fair sharing.

Cars leave at their true departure in both (a car still held then leaves unserved). Two
references, both offline (knowing every car in advance):

- the **pooled optimum**: one substation with all the capacity, an upper bound on what any
  dispatch and sharing of the three could deliver;
- the **split optimum**: the three substations, each car on one of them (as every dispatch
  here places it) chosen with every car known, and the most energy any sharing could then
  deliver: a mixed-integer programme (HiGHS). It is what any dispatch and sharing of these
  substations could deliver at most, online or not; where it is below the pooled optimum, no
  dispatch reaches the pooled figure.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import highspy
import numpy as np

from contracts.promises import promised_kw
from dispatcher.load_table import SubstationState, promised_ratio
from dispatcher.policies import Headroom
from dispatcher.spare import most_energy, shortlist
from substation_worker.planning import quiet_highs
from substation_worker.sharing import Car, Fair, Smartgrid, offline_optimum, windowed_cars
from substation_worker.simulation import Substation
from substation_worker.spare import spare_profile, spare_to_wire

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


def _state(
    i: int, sub: Substation, committed_kw: float, now: float, deadlines: bool
) -> SubstationState:
    pieces = spare_to_wire(spare_profile(sub), 1.0) if deadlines else None
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
        last_seen=now,
        sent_at_ts=0.0,
        spare=None if pieces is None else tuple((p.until_s, p.kw) for p in pieces),
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
            states = [_state(i, s, committed(s), now, deadlines) for i, s in enumerate(subs)]
            if deadlines and car.departure_s is not None:
                # As the dispatcher (``DispatcherService._choose_dated``): of the least promised
                # per capacity (here every substation: their capacities differ) and the least
                # promised counting the need in full, of those where that fits if any, where the
                # car can count on the most energy by its departure from what the plans leave
                # spare; never held.
                least = min(states, key=lambda s: promised_ratio(s, kw, 1))
                best = most_energy(
                    shortlist(states, least, kw),
                    car.remaining_kwh,
                    car.max_kw,
                    kw,
                    left or 0.0,
                    now,
                    1.0,
                )
                target: str | None = (least if best is None else best).substation_id
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


@dataclass(frozen=True)
class SplitOptimum:
    """The split optimum (module docstring), kWh: ``bound`` is at least what any split could
    deliver; ``best`` what the best placement found delivers; equal when ``proven``."""

    best_kwh: float
    bound_kwh: float
    proven: bool


def split_optimum(
    total_capacity_kw: float,
    cars: Sequence[Car],
    *,
    split: Sequence[float] = SPLIT,
    time_limit_s: float = 60.0,
) -> SplitOptimum:
    """The most energy the substations holding ``split`` of ``total_capacity_kw`` could deliver,
    each car placed on one of them with every car known in advance (module docstring).

    A mixed-integer programme: ``y[i, s]`` places car *i* on substation *s* (at most one);
    ``x[i, s, t]`` is its energy there in step *t* of its window (steps cut at every arrival and
    departure, exact as in ``sharing.offline_optimum``), at most ``min(max_kw, capacity_s)``
    times the step while placed, at most its need over all steps; each substation's cars take at
    most its capacity in each step. Stopped at ``time_limit_s``, HiGHS's bound still holds.
    A car without a departure charges until full wherever it is: counted in full, as there."""
    free = math.fsum(c.remaining_kwh for c in cars if c.departure_s is None)
    windowed = windowed_cars(cars)
    if not windowed or total_capacity_kw <= 0:
        return SplitOptimum(free, free, True)
    starts = np.array([c.arrival_s for c in windowed])
    ends = np.array([c.departure_s for c in windowed], dtype=np.float64)
    bounds = np.unique(np.concatenate([starts, ends]))
    lengths_h = np.diff(bounds) / 3600.0
    first = np.searchsorted(bounds, starts)
    last = np.searchsorted(bounds, ends)
    caps = np.asarray(split, dtype=np.float64) * total_capacity_kw
    n, subs, steps = len(windowed), len(caps), len(lengths_h)
    # Columns: y[i, s] at i * subs + s, then every x[i, s, t]. Rows: each car placed at most
    # once (n), each x within its bound while placed (one per x), each car's need per
    # substation (n * subs), each substation's capacity per step (subs * steps).
    car_of = np.repeat(np.arange(n), (last - first) * subs)
    sub_of = np.concatenate([np.repeat(np.arange(subs), last[i] - first[i]) for i in range(n)])
    step_of = np.concatenate([np.tile(np.arange(first[i], last[i]), subs) for i in range(n)])
    m = len(car_of)
    y_col = car_of * subs + sub_of
    x_col = n * subs + np.arange(m)
    upper = np.minimum(np.array([c.max_kw for c in windowed])[car_of], caps[sub_of])
    upper = upper * lengths_h[step_of]
    need = np.array([c.remaining_kwh for c in windowed])
    x_row = n + np.arange(m)
    need_row = n + m + y_col
    cap_row = n + m + n * subs + sub_of * steps + step_of
    y_all = np.arange(n * subs)
    rows = np.concatenate([y_all // subs, x_row, x_row, need_row, n + m + y_all, cap_row])
    cols = np.concatenate([y_all, x_col, y_col, x_col, y_all, x_col])
    values = np.concatenate(
        [np.ones(n * subs), np.ones(m), -upper, np.ones(m), -np.repeat(need, subs), np.ones(m)]
    )
    order = np.lexsort((rows, cols))
    lp = highspy.HighsLp()
    lp.num_col_ = n * subs + m
    lp.num_row_ = n + m + n * subs + subs * steps
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.col_cost_ = np.concatenate([np.zeros(n * subs), np.ones(m)])
    lp.col_lower_ = np.zeros(lp.num_col_)
    lp.col_upper_ = np.concatenate([np.ones(n * subs), upper])
    lp.row_lower_ = np.full(lp.num_row_, -highspy.kHighsInf)
    lp.row_upper_ = np.concatenate(
        [np.ones(n), np.zeros(m + n * subs), np.repeat(caps, steps) * np.tile(lengths_h, subs)]
    )
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(cols[order], np.arange(lp.num_col_ + 1)).astype(np.int32)
    lp.a_matrix_.index_ = rows[order].astype(np.int32)
    lp.a_matrix_.value_ = values[order]
    lp.integrality_ = [highspy.HighsVarType.kInteger] * (n * subs) + [
        highspy.HighsVarType.kContinuous
    ] * m
    highs = quiet_highs()
    highs.setOptionValue("time_limit", float(time_limit_s))
    highs.passModel(lp)
    highs.run()
    status = highs.getModelStatus()
    info = highs.getInfo()
    if status not in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit):
        raise RuntimeError(f"HiGHS: no split optimum: {highs.modelStatusToString(status)}")
    best = float(info.objective_function_value)
    # Optimal means within HiGHS's gap tolerance of the bound, not equal to it: the bound is
    # the figure that holds.
    bound = max(best, float(info.mip_dual_bound))
    return SplitOptimum(free + best, free + bound, status == highspy.HighsModelStatus.kOptimal)
