"""Grids and arrival traces for the balance simulation. Seeded and pure: the same arguments give
the same grid and the same arrivals, so every policy runs on exactly the same load.

Times are simulated seconds. Rates stated in wall terms (a burst "at 300/s") are
converted with ``time_scale`` (simulated seconds per wall second; 3600 = an hour per second).

Arrivals follow loadgen's own profiles (``loadgen.profiles.arrivals``: steady, rush-hour, spike),
their rate set against the grid's capacity. Sessions come from loadgen's own mix
(``loadgen.demand``): energy triangular over 10-60 kWh with its mode at 30 kWh (mean 33.3 kWh);
the car's max power is AC 7-11 kW uniform (70%) or DC 50-150 kW uniform (30%), so the mean max
power is about 36 kW. A bay's charger gives at most ``CHARGER_MAX_KW``; a session's max power is
min(car, charger).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from loadgen.demand import DEFAULT_MIX, DemandMix, sample_demand
from loadgen.profiles import arrivals

CHARGER_MAX_KW = 350.0
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class SubstationSpec:
    substation_id: str
    capacity_kw: float
    bays: int


@dataclass(frozen=True)
class Grid:
    name: str
    substations: tuple[SubstationSpec, ...]

    @property
    def capacity_kw(self) -> float:
        return sum(s.capacity_kw for s in self.substations)


def bays_for(capacity_kw: float, mix: DemandMix = DEFAULT_MIX) -> int:
    """Enough bays that capacity binds, not bays: with every bay taken, even the slowest cars
    (AC at its lowest power) would draw the whole capacity, so a full substation is always
    sharing power, and what waits for a bay waits because the power is spoken for."""
    return max(2, math.ceil(capacity_kw / mix.ac_kw[0]))


def grid_of(name: str, capacities_kw: list[float]) -> Grid:
    return Grid(
        name,
        tuple(
            SubstationSpec(f"s{i:03d}-{round(c)}", float(c), bays_for(c))
            for i, c in enumerate(capacities_kw)
        ),
    )


def random_capacities(n: int, seed: int) -> list[float]:
    """Log-uniform 50-1200 kW, rounded to 10 kW: many small substations, a few large ones."""
    rng = random.Random(seed)
    return [round(math.exp(rng.uniform(math.log(50), math.log(1200))), -1) for _ in range(n)]


GRIDS: dict[str, Callable[[], Grid]] = {
    "150/300/600": lambda: grid_of("150/300/600", [150, 300, 600]),
    "150/300/600/1200": lambda: grid_of("150/300/600/1200", [150, 300, 600, 1200]),
    "random-100": lambda: grid_of("random-100", random_capacities(100, seed=100)),
}


@dataclass(frozen=True)
class Arrival:
    at_s: float
    energy_kwh: float
    car_kw: float


@dataclass(frozen=True)
class Trace:
    name: str
    arrivals: tuple[Arrival, ...]
    # Waits of requests arriving before this are left out (the grid starts empty).
    warmup_s: float = 0.0


def mean_energy_kwh(mix: DemandMix = DEFAULT_MIX) -> float:
    lo, hi = mix.energy_kwh
    return (lo + hi + mix.energy_mode_kwh) / 3.0


def capacity_rate_per_s(grid: Grid, mix: DemandMix = DEFAULT_MIX) -> float:
    """Arrivals per simulated second whose expected energy equals the grid's whole capacity."""
    return grid.capacity_kw / mean_energy_kwh(mix) / SECONDS_PER_HOUR


def _sessions(times: list[float], rng: random.Random, mix: DemandMix) -> tuple[Arrival, ...]:
    out = []
    for i, t in enumerate(times):
        d = sample_demand(rng, i, mix)
        out.append(Arrival(t, d.energy_kwh, d.max_power_kw))
    return tuple(out)


def _profile(
    name: str,
    profile: str,
    grid: Grid,
    seed: int,
    *,
    peak_load: float,
    hours: float,
    warmup_h: float,
) -> Trace:
    """loadgen's own arrival profile, its peak rate ``peak_load`` x the grid's capacity."""
    rng = random.Random(seed)
    times = arrivals(
        profile,
        peak_load * capacity_rate_per_s(grid),
        rng,
        duration_s=hours * SECONDS_PER_HOUR,
    )
    return Trace(name, _sessions(times, rng, DEFAULT_MIX), warmup_h * SECONDS_PER_HOUR)


def steady(grid: Grid, seed: int, *, load: float = 0.85, hours: float = 12.0) -> Trace:
    """loadgen's ``steady``: evenly spaced arrivals at ``load`` x capacity in expected power
    (rate x mean energy); the first quarter is warm-up (the grid starts empty)."""
    return _profile("steady 85%", "steady", grid, seed, peak_load=load, hours=hours,
                    warmup_h=hours / 4)  # fmt: skip


def rush_hour(grid: Grid, seed: int, *, peak: float = 1.3, hours: float = 12.0) -> Trace:
    """loadgen's ``rush-hour``: Poisson, its rate ramping from a fifth of ``peak`` x capacity
    to the peak at mid-trace and back (mean 0.6 x peak); above capacity for about a third."""
    return _profile("rush hour", "rush-hour", grid, seed, peak_load=peak, hours=hours,
                    warmup_h=0.0)  # fmt: skip


def spike(grid: Grid, seed: int, *, peak: float = 2.5, hours: float = 12.0) -> Trace:
    """loadgen's ``spike``: Poisson at a fifth of ``peak`` x capacity, stepping to the peak
    for the middle fifth of the trace (2.5 x capacity for 2.4 hours by default)."""
    return _profile("spike", "spike", grid, seed, peak_load=peak, hours=hours, warmup_h=0.0)


def burst(
    grid: Grid, seed: int, *, n: int = 600, per_wall_s: float = 300.0, time_scale: float = 3600
) -> Trace:
    """A burst of ``n`` requests, evenly spaced at ``per_wall_s`` (the reference: 600 at 300/s)."""
    rng = random.Random(seed)
    step = time_scale / per_wall_s
    return Trace(f"burst {n}", _sessions([i * step for i in range(n)], rng, DEFAULT_MIX))


TRACES: dict[str, Callable[[Grid, int], Trace]] = {
    "steady": steady,
    "rush-hour": rush_hour,
    "spike": spike,
}
