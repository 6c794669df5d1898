"""Sharing a substation's capacity among the cars present, by departures. Pure: no I/O, no clock.

A sharing hands out kW per car for the time from ``now_s`` to the next re-plan; the caller
integrates. Every sharing (``SHARINGS``) keeps the sum within the capacity and each car within its
maximum, gives nothing to a car that has left (``departure_s <= now_s``), has not arrived
(``arrival_s > now_s``) or needs nothing, and never more than a car can use:

- **Usable power.** With ``horizon_s`` (the time until the next re-plan, which the caller
  guarantees by re-planning at every arrival, departure and capacity change), a car gets at most
  ``remaining_kwh * 3600 / horizon_s``: what fills it exactly by the re-plan. So a car never
  completes between re-plans and no power is handed to a full car. Without ``horizon_s`` the cap
  is the car's maximum (smartgrid's: what fills it by the end of its plan's first step); the
  caller then ends the interval when a car completes.

The sharings:

- ``fair``: max-min fair water-filling of the usable powers (``power.share_power``), departures
  ignored.
- ``edf``, ``llf``: as ACN-Sim's ``SortedSchedulingAlgo`` with ``earliest_deadline_first`` and
  ``least_laxity_first``: cars in order of earliest departure, or of least laxity
  (``departure - now - remaining_kwh * 3600 / max_kw``), each take the most they can use within
  what capacity is left. Ties go to the higher priority, then the earlier arrival; cars without a
  departure share what is left max-min fairly, as under ``smartgrid``.
- ``smartgrid``: an online plan of the cars present (``planning``), re-planned at every call:
  the linear programme that delivers the most energy by the departures; among such plans, a higher
  priority's energy first (a lower priority goes short first when not every demand can be met),
  and energy early rather than late, first to the cars that cannot wait (little time or laxity
  left). Its first step (until ``horizon_s``, else ``DEFAULT_FIRST_STEP_S``) is the share. The
  plan ends at ``PLAN_HORIZON_S``: a car leaving later counts what it gets by then. Steps are cut
  at every departure, so the plan is exact, not a discretisation. Cars without a departure share
  by water-filling what the plan leaves in its first step; with no departure at all, that is
  ``fair``. When every car can have its usable power at once, each gets it, with no plan.

``offline_optimum`` is the reference: the most any scheduler could deliver knowing every car in
advance. ``simulate`` runs a sharing over cars that arrive and leave.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from substation_worker import planning
from substation_worker.power import share_power, trim_to_capacity

# The first step of smartgrid's plan when the caller gives no horizon: the re-plan period.
DEFAULT_FIRST_STEP_S = 60.0
# What the online plan looks ahead: beyond a day, what a departure needs is re-planned later.
PLAN_HORIZON_S = 24 * 3600.0
# A car with less than this left is full: float rounding must not keep a session alive.
FULL_KWH = 1e-9


@dataclass(frozen=True, slots=True)
class Car:
    key: str
    max_kw: float  # the car's (and charger's) maximum power
    remaining_kwh: float  # energy it still needs
    departure_s: float | None  # when it leaves, on the substation's clock (s); None: none
    priority: int = 0  # 0..9, 9 most urgent (ChargeRequest.priority)
    arrival_s: float = 0.0  # when it arrived (used by offline plans; online: present)


class Sharing(Protocol):
    name: str
    # Its shares change between events (arrivals, departures, completions) as time passes, so
    # the caller re-plans it periodically too; False: only the events change them.
    periodic: bool

    def share(
        self,
        capacity_kw: float,
        cars: Sequence[Car],
        now_s: float,
        horizon_s: float | None = None,
    ) -> list[float]:
        """kW per car, in the order of ``cars``, for the time from now_s until the next
        event (arrival, departure, completion, capacity change); ``horizon_s``: the time until
        the next re-plan, which caps each car at what fills it by then (module docstring)."""
        ...


def usable_kw(car: Car, now_s: float, horizon_s: float | None) -> float:
    """The most ``car`` can take from now until the re-plan (module docstring: usable power)."""
    if car.arrival_s > now_s or car.remaining_kwh <= 0:
        return 0.0
    if car.departure_s is not None and car.departure_s <= now_s:
        return 0.0
    if horizon_s is None:
        return car.max_kw
    return min(car.max_kw, car.remaining_kwh * 3600.0 / horizon_s)


def _check(capacity_kw: float, cars: Sequence[Car], horizon_s: float | None) -> None:
    if not math.isfinite(capacity_kw) or capacity_kw < 0:
        raise ValueError(f"capacity_kw must be finite and >= 0, got {capacity_kw!r}")
    if horizon_s is not None and not (math.isfinite(horizon_s) and horizon_s > 0):
        raise ValueError(f"horizon_s must be finite and > 0, got {horizon_s!r}")
    for car in cars:
        for name in ("max_kw", "remaining_kwh"):
            value = getattr(car, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r} for {car.key!r}")
        for name in ("departure_s", "arrival_s"):
            value = getattr(car, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r} for {car.key!r}")
        if not 0 <= car.priority <= 9:
            raise ValueError(f"priority must be 0..9, got {car.priority!r} for {car.key!r}")


@dataclass(slots=True)
class Fair:
    name: str = "fair"
    periodic: bool = False

    def share(
        self, capacity_kw: float, cars: Sequence[Car], now_s: float, horizon_s: float | None = None
    ) -> list[float]:
        _check(capacity_kw, cars, horizon_s)
        return share_power(capacity_kw, [usable_kw(c, now_s, horizon_s) for c in cars])


def _greedy(capacity_kw: float, usable: Sequence[float], order: Sequence[int]) -> list[float]:
    """Each car in ``order`` takes the most it can use within what capacity is left."""
    shares = [0.0] * len(usable)
    left = capacity_kw
    for i in order:
        shares[i] = min(usable[i], left)
        left = max(0.0, left - shares[i])
    trim_to_capacity(shares, capacity_kw)
    return shares


def _fill_undated(
    capacity_kw: float, cars: Sequence[Car], usable: Sequence[float], shares: list[float]
) -> list[float]:
    """Cars without a departure share max-min fairly what the others left (in place)."""
    rest = [i for i, c in enumerate(cars) if c.departure_s is None and usable[i] > 0]
    if rest:
        left = max(0.0, capacity_kw - math.fsum(shares))
        for i, kw in zip(rest, share_power(left, [usable[i] for i in rest]), strict=True):
            shares[i] = kw
        trim_to_capacity(shares, capacity_kw)
    return shares


def _deadline_first(car: Car, now_s: float) -> float:
    return math.inf if car.departure_s is None else car.departure_s


def _least_laxity(car: Car, now_s: float) -> float:
    if car.departure_s is None:
        return math.inf
    to_fill = car.remaining_kwh * 3600.0 / car.max_kw if car.max_kw > 0 else math.inf
    return car.departure_s - now_s - to_fill


def _first_come(car: Car, now_s: float) -> float:
    return car.arrival_s


@dataclass(slots=True)
class Sorted:
    """ACN-Sim's sorted scheduling: cars by ``key`` (smallest first) fill the capacity in turn."""

    name: str
    key: Callable[[Car, float], float]
    # Cars without a departure share what the ordered ones leave, max-min fairly; False: they
    # are ordered by ``key`` too.
    undated_fair: bool = True
    periodic: bool = False  # True when the key moves with time (laxity)

    def share(
        self, capacity_kw: float, cars: Sequence[Car], now_s: float, horizon_s: float | None = None
    ) -> list[float]:
        _check(capacity_kw, cars, horizon_s)
        usable = [usable_kw(c, now_s, horizon_s) for c in cars]
        ordered = [
            i for i, c in enumerate(cars) if c.departure_s is not None or not self.undated_fair
        ]
        ordered.sort(key=lambda i: (self.key(cars[i], now_s), -cars[i].priority, cars[i].arrival_s))
        shares = _greedy(capacity_kw, usable, ordered)
        if not self.undated_fair:
            return shares
        return _fill_undated(capacity_kw, cars, usable, shares)


@dataclass(slots=True)
class Smartgrid:
    name: str = "smartgrid"
    periodic: bool = True  # a plan's first step lasts until the next re-plan
    # The plan's first step when the caller gives no horizon: the caller's re-plan period.
    first_step_s: float = DEFAULT_FIRST_STEP_S

    def share(
        self, capacity_kw: float, cars: Sequence[Car], now_s: float, horizon_s: float | None = None
    ) -> list[float]:
        _check(capacity_kw, cars, horizon_s)
        usable = [usable_kw(c, now_s, horizon_s) for c in cars]
        if math.fsum(usable) <= capacity_kw:
            # Room for everyone: each car's most is the best plan, and no plan's step rounds
            # a car's end up to the step's end.
            return usable
        planned = [i for i, c in enumerate(cars) if c.departure_s is not None and usable[i] > 0]
        shares = [0.0] * len(cars)
        if planned:
            first_kw = self.first_step_kw(
                capacity_kw, [cars[i] for i in planned], now_s, horizon_s, self.first_step_s
            )
            for i, kw in zip(planned, first_kw, strict=True):
                shares[i] = min(kw, usable[i])
            trim_to_capacity(shares, capacity_kw)
        return _fill_undated(capacity_kw, cars, usable, shares)

    @staticmethod
    def first_step_kw(
        capacity_kw: float,
        cars: Sequence[Car],
        now_s: float,
        horizon_s: float | None,
        first_step_s: float = DEFAULT_FIRST_STEP_S,
    ) -> list[float]:
        """The first step of the online plan for ``cars`` (all present, with a departure)."""
        found = online_plan(capacity_kw, cars, now_s, horizon_s, first_step_s)
        return [float(kw) for kw in found.step_kw(0)]


def online_plan(
    capacity_kw: float,
    cars: Sequence[Car],
    now_s: float,
    horizon_s: float | None = None,
    first_step_s: float = DEFAULT_FIRST_STEP_S,
) -> planning.Plan:
    """smartgrid's plan for ``cars`` present at ``now_s`` (module docstring), steps cut at the
    first step's end and at every departure. The first step ends at ``horizon_s``; without one,
    at the first departure or after ``first_step_s``, whichever comes first (the caller
    re-plans at both). A car leaving within a given ``horizon_s`` may take that whole step:
    the caller's re-plan at its departure ends its power."""
    if horizon_s is not None:
        first_end = now_s + horizon_s
    else:
        leaving = [
            c.departure_s for c in cars if c.departure_s is not None and c.departure_s > now_s
        ]
        first_end = min([now_s + first_step_s, *leaving])
    plan_end = max(first_end, now_s + PLAN_HORIZON_S)
    ends = np.array(
        [
            min(max(c.departure_s, first_end), plan_end) if c.departure_s is not None else plan_end
            for c in cars
        ]
    )
    bounds = np.unique(np.concatenate([[now_s, first_end], ends]))
    return planning.plan(
        capacity_kw,
        bounds,
        np.full(len(cars), float(now_s)),
        ends,
        np.array([c.max_kw for c in cars]),
        np.array([c.remaining_kwh for c in cars]),
        priority=np.array([float(c.priority) for c in cars]),
        now_s=now_s,
    )


def windowed_cars(cars: Sequence[Car]) -> list[Car]:
    """The cars an offline plan places: with a departure after the arrival, needing energy,
    able to take power (a car without a departure charges until full, outside any plan)."""
    return [
        c
        for c in cars
        if c.departure_s is not None
        and c.departure_s > c.arrival_s
        and c.remaining_kwh > 0
        and c.max_kw > 0
    ]


def offline_optimum(
    capacity_kw: float, cars: Sequence[Car], step_s: float | None = None
) -> dict[str, float]:
    """The most energy (kWh per car) any scheduler could deliver knowing every car in advance.

    Each car takes power within ``[arrival_s, departure_s)``, up to its maximum, in all up to
    ``remaining_kwh``; the cars together up to ``capacity_kw``. Steps are cut at every arrival
    and departure, and further into steps of at most ``step_s`` if given: the set of cars present
    is constant inside each step, so the figure is exact in continuous time and does not depend on
    ``step_s`` (which only shapes the plan). A car without a departure charges until full: it gets
    all its energy, after every deadline, and takes nothing from the others.
    """
    _check(capacity_kw, cars, None)
    keys = [c.key for c in cars]
    if len(set(keys)) != len(keys):
        raise ValueError("car keys must be unique")
    result = {c.key: (c.remaining_kwh if c.departure_s is None else 0.0) for c in cars}
    windowed = windowed_cars(cars)
    if not windowed:
        return result
    starts = np.array([c.arrival_s for c in windowed])
    ends = np.array([c.departure_s for c in windowed], dtype=np.float64)
    bounds = np.unique(np.concatenate([starts, ends]))
    if step_s is not None:
        if not (math.isfinite(step_s) and step_s > 0):
            raise ValueError(f"step_s must be finite and > 0, got {step_s!r}")
        pieces = np.ceil(np.diff(bounds) / step_s).astype(int)
        bounds = np.unique(
            np.concatenate(
                [bounds]
                + [
                    np.linspace(a, b, k + 1)
                    for a, b, k in zip(bounds[:-1], bounds[1:], pieces, strict=True)
                    if k > 1
                ]
            )
        )
    found = planning.plan(
        capacity_kw,
        bounds,
        starts,
        ends,
        np.array([c.max_kw for c in windowed]),
        np.array([c.remaining_kwh for c in windowed]),
    )
    for car, kwh in zip(windowed, found.delivered_kwh(), strict=True):
        result[car.key] = min(float(kwh), car.remaining_kwh)
    return result


# ACN-Sim's round robin steps each car's rate by 0.1 A, at 208 V (its Caltech chargers): 20.8 W.
ROUND_ROBIN_INCREMENT_KW = 0.1 * 0.208


@dataclass(slots=True)
class RoundRobin:
    """ACN-Sim's ``RoundRobin`` with first come, first served: in arrival order (ties: the higher
    priority), each car in turn takes one more ``increment_kw`` while that fits within the
    capacity; a car whose next increment does not fit, or that has reached its usable power, is
    out of the round. Its last increment is what fills it to its usable power, so no car is left
    a fraction of an increment short. Whole rounds are counted at once: after *r* rounds each car
    holds ``min(usable, r * increment_kw)``."""

    name: str = "round-robin"
    increment_kw: float = ROUND_ROBIN_INCREMENT_KW
    periodic: bool = False

    def share(
        self, capacity_kw: float, cars: Sequence[Car], now_s: float, horizon_s: float | None = None
    ) -> list[float]:
        _check(capacity_kw, cars, horizon_s)
        usable = [usable_kw(c, now_s, horizon_s) for c in cars]
        step = self.increment_kw
        most = max((math.ceil(u / step) for u in usable), default=0)

        def after(rounds: int) -> float:
            return math.fsum(min(u, rounds * step) for u in usable)

        # The most whole rounds that fit: after(r) grows with r.
        low, high = 0, most
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if after(mid) <= capacity_kw else (low, mid - 1)
        shares = [min(u, low * step) for u in usable]
        left = capacity_kw - math.fsum(shares)
        queue = sorted(
            (i for i, u in enumerate(usable) if u > shares[i]),
            key=lambda i: (cars[i].arrival_s, -cars[i].priority),
        )
        # The last rounds, car by car: each round either adds to a car or drops it.
        for _ in range(most - low + 1):
            kept = []
            for i in queue:
                more = min(step, usable[i] - shares[i])
                if more <= left:
                    shares[i] += more
                    left -= more
                    if usable[i] > shares[i]:
                        kept.append(i)
            queue = kept
            if not queue:
                break
        trim_to_capacity(shares, capacity_kw)
        return shares


SharingName = Literal["fair", "edf", "llf", "smartgrid"]
SHARINGS: dict[str, Callable[[], Sharing]] = {
    "fair": Fair,
    "edf": lambda: Sorted("edf", _deadline_first),
    "llf": lambda: Sorted("llf", _least_laxity, periodic=True),
    "smartgrid": Smartgrid,
}


def sharing_named(name: SharingName, replan_s: float = DEFAULT_FIRST_STEP_S) -> Sharing:
    """The worker's sharing ``name``; smartgrid's plan takes ``replan_s`` as its first step."""
    if name == "smartgrid":
        return Smartgrid(first_step_s=replan_s)
    return SHARINGS[name]()


# Baselines for benchmarks only, not offered to the worker: first come, first served, and
# ACN-Sim's round robin.
BASELINES: dict[str, Callable[[], Sharing]] = {
    "fcfs": lambda: Sorted("fcfs", _first_come, undated_fair=False),
    "round-robin": RoundRobin,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a simulated run delivered: per car (kWh, demand met) and the peak total power."""

    requested_kwh: dict[str, float]
    delivered_kwh: dict[str, float]
    met: dict[str, bool]
    peak_kw: float

    @property
    def energy_requested_kwh(self) -> float:
        return math.fsum(self.requested_kwh.values())

    @property
    def energy_delivered_kwh(self) -> float:
        return math.fsum(self.delivered_kwh.values())

    @property
    def demands(self) -> int:
        return len(self.met)

    @property
    def demands_met(self) -> int:
        return sum(self.met.values())


def simulate(
    capacity_kw: float,
    cars: Sequence[Car],
    sharing: Sharing,
    step_s: float = 60.0,
    *,
    told: Sequence[Car] | None = None,
    max_replans: int = 10_000_000,
) -> Outcome:
    """Run ``sharing`` over ``cars`` (``remaining_kwh``: the demand at arrival).

    Cars arrive at ``arrival_s`` and leave at ``departure_s``, full or not; a car without a
    departure leaves when full. The sharing re-plans at every arrival and departure and every
    ``step_s`` from the first arrival, with ``horizon_s`` the time to the next of these, so no car
    completes between re-plans (module docstring). Cars without a departure that can get no power
    (zero capacity or maximum) end the run unserved rather than wait forever.

    ``told``: what the sharing is told instead of the truth (one car per key of ``cars``): its
    ``remaining_kwh`` (the demand at arrival) and ``departure_s``; the arrival, maximum and
    priority stay the car's. The sharing then sees the told demand less what was delivered (a car
    told full gets nothing more, whatever it really needs) and the told departure, also
    re-planned at; a car still present after its told departure is told it leaves within
    ``step_s``. The car takes power only until it is really full (a re-plan then, as at a
    completion) and leaves at its true departure; the outcome is against its true demand.
    """
    _check(capacity_kw, cars, None)
    if not (math.isfinite(step_s) and step_s > 0):
        raise ValueError(f"step_s must be finite and > 0, got {step_s!r}")
    keys = [c.key for c in cars]
    if len(set(keys)) != len(keys):
        raise ValueError("car keys must be unique")
    stated: dict[str, Car] | None = None
    if told is not None:
        _check(capacity_kw, told, None)
        stated = {c.key: c for c in told}
        if len(stated) != len(told) or set(stated) != set(keys):
            raise ValueError("told must hold one car for each key of cars")
    requested = {c.key: c.remaining_kwh for c in cars}
    delivered = dict.fromkeys(keys, 0.0)
    pending = sorted(cars, key=lambda c: c.arrival_s)
    present: list[Car] = []
    peak = 0.0
    if not pending:
        return Outcome(requested, delivered, {}, 0.0)
    origin = pending[0].arrival_s
    now = origin
    ticks = 0
    for _ in range(max_replans):
        while pending and pending[0].arrival_s <= now:
            present.append(pending.pop(0))
        present = [
            c
            for c in present
            if c.remaining_kwh > FULL_KWH and (c.departure_s is None or c.departure_s > now)
        ]
        if not present and not pending:
            break
        while origin + ticks * step_s <= now:
            ticks += 1
        upcoming = [origin + ticks * step_s]
        if pending:
            upcoming.append(pending[0].arrival_s)
        upcoming.extend(c.departure_s for c in present if c.departure_s is not None)
        if stated is not None:
            upcoming.extend(
                d for c in present if (d := stated[c.key].departure_s) is not None and d > now
            )
        following = min(upcoming)
        horizon = following - now
        if stated is None:
            shares = sharing.share(capacity_kw, present, now, horizon) if present else []
        else:
            seen = [_as_told(c, stated[c.key], delivered[c.key], now, step_s) for c in present]
            shares = sharing.share(capacity_kw, seen, now, horizon) if present else []
            # A car really full before the re-plan stops drawing then: the next re-plan.
            fills = [
                now + c.remaining_kwh * 3600.0 / kw
                for c, kw in zip(present, shares, strict=True)
                if kw > 0
            ]
            following = min([following, *fills])
            horizon = following - now
        peak = max(peak, math.fsum(shares))
        if not pending and math.fsum(shares) == 0 and all(c.departure_s is None for c in present):
            break
        updated: list[Car] = []
        for car, kw in zip(present, shares, strict=True):
            kwh = min(kw * horizon / 3600.0, car.remaining_kwh)
            delivered[car.key] += kwh
            updated.append(dataclasses.replace(car, remaining_kwh=car.remaining_kwh - kwh))
        present = updated
        now = following
    else:
        raise RuntimeError(f"simulate: more than {max_replans} re-plans")
    met = {k: requested[k] - delivered[k] <= FULL_KWH + 1e-6 * requested[k] for k in keys}
    return Outcome(requested, delivered, met, peak)


def _as_told(car: Car, told: Car, delivered_kwh: float, now_s: float, step_s: float) -> Car:
    """``car`` as the sharing sees it in ``simulate(..., told=...)``: the told demand less what
    was delivered, the told departure (within ``step_s`` once it has passed)."""
    departure = told.departure_s
    if departure is not None and departure <= now_s:
        departure = now_s + step_s
    return dataclasses.replace(
        car, remaining_kwh=max(0.0, told.remaining_kwh - delivered_kwh), departure_s=departure
    )


def random_sessions(seed: int, n: int = 25, *, span_s: float = 10 * 3600.0) -> list[Car]:
    """Sessions for tests and the bench: arriving over ``span_s``, staying 0.5-10 h at 3.3, 6.656
    or 11 kW, each needing 10-100 % of what its stay at full power allows."""
    rng = np.random.default_rng(seed)
    cars = []
    for i in range(n):
        arrival = float(rng.uniform(0.0, span_s))
        stay = float(rng.uniform(0.5, 10.0)) * 3600.0
        power = float(rng.choice([3.3, 6.656, 6.656, 11.0]))
        need = float(rng.uniform(0.1, 1.0)) * power * stay / 3600.0
        cars.append(Car(f"car-{i}", power, need, arrival + stay, 0, arrival))
    return cars


def replan_seconds(cars_present: int, *, repeats: int = 15, seed: int = 0) -> list[float]:
    """Wall-clock seconds of ``repeats`` smartgrid re-plans with ``cars_present`` cars (ACN-like:
    6.656 kW chargers, a few hours left, capacity a third of the uncontrolled peak)."""
    rng = np.random.default_rng(seed)
    cars = [
        Car(
            key=f"car-{i}",
            max_kw=6.656,
            remaining_kwh=float(rng.uniform(2.0, 30.0)),
            departure_s=float(rng.uniform(0.5, 12.0) * 3600.0),
            priority=int(rng.integers(0, 3)),
        )
        for i in range(cars_present)
    ]
    capacity = 6.656 * cars_present / 3
    sharing = Smartgrid()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        sharing.share(capacity, cars, 0.0, 60.0)
        times.append(time.perf_counter() - started)
    return times


def _bench() -> None:
    print("smartgrid re-plan, ms (median, min, max of 15)")
    for n in (20, 60, 200):
        ms = [t * 1000 for t in replan_seconds(n)]
        print(f"{n:4d} cars  {statistics.median(ms):7.2f}  {min(ms):7.2f}  {max(ms):7.2f}")
    names = [*SHARINGS, *BASELINES]
    makers = {**SHARINGS, **BASELINES}
    print("\nenergy delivered / offline optimum, 40 random sessions, capacity: share of the peak")
    print("seed  share  optimum kWh  " + "  ".join(f"{n:>9}" for n in names))
    for seed in range(3):
        cars = random_sessions(seed, 40)
        peak = simulate(sum(c.max_kw for c in cars), cars, Fair()).peak_kw
        for share in (0.1, 0.3, 0.5):
            optimum = math.fsum(offline_optimum(share * peak, cars).values())
            figures = [
                simulate(share * peak, cars, makers[n]()).energy_delivered_kwh / optimum
                for n in names
            ]
            print(
                f"{seed:4d}  {share:5.0%}  {optimum:11.1f}  "
                + "  ".join(f"{f:9.4f}" for f in figures)
            )


if __name__ == "__main__":
    if sys.argv[1:] != ["--bench"]:
        raise SystemExit("usage: python -m substation_worker.sharing --bench")
    _bench()
