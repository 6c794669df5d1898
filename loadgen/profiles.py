"""When requests arrive: seconds from the start of a run, per demand profile. Pure and seeded.

* ``steady``: evenly spaced at ``rate`` (an open-loop metronome; pacing is easy to check).
* ``rush-hour``: a non-homogeneous Poisson process whose intensity ramps from a fifth of
  ``rate`` up to ``rate`` at mid-run and back (a morning peak), sampled by thinning.
* ``spike``: a fifth of ``rate``, stepping up to the full ``rate`` for the middle fifth of the run
  (a step burst), Poisson within each level.
* ``replay``: arrival times (and demands) from a CSV trace, see ``load_trace``.

With ``requests=N`` a Poisson profile draws exactly N arrivals over the duration whose expected
count is N (given the count, a Poisson process's arrival times are independent draws from its
normalised intensity); with ``duration_s`` the count itself is Poisson.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loadgen.choices import PROFILES, Profile
from loadgen.demand import Demand

__all__ = ["PROFILES", "Profile"]
# Intensity outside the peak, as a share of the peak rate.
BASE_SHARE = 0.2
# spike: the burst occupies [SPIKE_START, SPIKE_END) of the run.
SPIKE_START, SPIKE_END = 0.4, 0.6

Intensity = Callable[[float], float]  # share of the peak rate at fraction x in [0, 1] of the run


def _rush_hour(x: float) -> float:
    return BASE_SHARE + (1 - BASE_SHARE) * math.sin(math.pi * x) ** 2


def _spike(x: float) -> float:
    return 1.0 if SPIKE_START <= x < SPIKE_END else BASE_SHARE


# Mean of each intensity over the run: sin^2 averages 1/2; the spike is full for a fifth.
_MEAN_SHARE = {
    "steady": 1.0,
    "rush-hour": BASE_SHARE + (1 - BASE_SHARE) / 2,
    "spike": (SPIKE_END - SPIKE_START) + BASE_SHARE * (1 - (SPIKE_END - SPIKE_START)),
}
_INTENSITY: dict[str, Intensity] = {"rush-hour": _rush_hour, "spike": _spike}


def mean_rate(profile: str, rate: float) -> float:
    """Expected requests per second over a whole run of ``profile`` peaking at ``rate``."""
    return rate * _MEAN_SHARE[profile]


def planned_duration(profile: str, rate: float, requests: int) -> float:
    """The run length whose expected number of arrivals is ``requests``."""
    return requests / mean_rate(profile, rate)


def arrivals(
    profile: str,
    rate: float,
    rng: random.Random,
    *,
    requests: int | None = None,
    duration_s: float | None = None,
) -> list[float]:
    """Sorted arrival offsets in seconds, for exactly one of ``requests`` or ``duration_s``."""
    if profile not in _MEAN_SHARE:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(_MEAN_SHARE)}")
    if rate <= 0:
        raise ValueError("rate must be positive")
    if (requests is None) == (duration_s is None):
        raise ValueError("give exactly one of requests or duration_s")
    if duration_s is not None and duration_s <= 0:
        raise ValueError("duration_s must be positive")
    if requests is not None and requests < 0:
        raise ValueError("requests must be >= 0")
    if profile == "steady":
        n = requests if requests is not None else math.floor(rate * (duration_s or 0.0))
        return [i / rate for i in range(n)]
    span = duration_s if duration_s is not None else planned_duration(profile, rate, requests or 0)
    n = requests if requests is not None else _poisson(rng, mean_rate(profile, rate) * span)
    shape = _INTENSITY[profile]
    times: list[float] = []
    while len(times) < n:
        # Thinning: uniform candidates kept with probability intensity/peak.
        x = rng.random()
        if rng.random() < shape(x):
            times.append(x * span)
    return sorted(times)


def _poisson(rng: random.Random, mean: float) -> int:
    """Poisson draw; a normal approximation keeps large means fast (and exact enough here)."""
    if mean > 500:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


# -- replay --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceRow:
    """One arrival of a replayed trace.

    ``stated_energy_kwh`` and ``stated_dwell_h`` are what the driver said on arrival, where the
    trace knows it (ACN-Data's claimed sessions, ``loadgen.acn``): a scheduler may be given those
    instead of the truth, while the car still takes ``demand.energy_kwh`` and leaves after
    ``dwell_h``.
    """

    arrival_s: float
    demand: Demand
    dwell_h: float | None  # hours until the car leaves (its departure deadline), if known
    stated_energy_kwh: float | None = None
    stated_dwell_h: float | None = None


REQUIRED_COLUMNS = ("arrival_s", "energy_kwh", "max_power_kw")
OPTIONAL_COLUMNS = ("departure_h", "stated_energy_kwh", "stated_departure_h")
TRACE_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


class TraceError(ValueError):
    """The trace file cannot be replayed; the message names the file and row."""


def _number(rec: dict[str, str | None], column: str, path: Path, line: int) -> float:
    """The row's ``column`` as a number, or a TraceError naming the file, line and column."""
    text = (rec.get(column) or "").strip()
    try:
        return float(text)
    except ValueError:
        what = repr(text) if text else "empty"
        raise TraceError(f"{path}:{line}: {column} is not a number: {what}") from None


def _optional(rec: dict[str, str | None], column: str, path: Path, line: int) -> float | None:
    """The row's ``column`` as a number, or None where the column is absent or empty."""
    return _number(rec, column, path, line) if (rec.get(column) or "").strip() else None


def load_trace(path: Path) -> list[TraceRow]:
    """Read a CSV with a header ``arrival_s,energy_kwh,max_power_kw`` and optionally
    ``departure_h``, ``stated_energy_kwh``, ``stated_departure_h`` (other columns are ignored).

    ``arrival_s`` is seconds from the start of the replay (any order; sorted here),
    ``departure_h`` the hours the car stays (empty: no deadline), the two ``stated_`` columns
    what the driver said it needs and how long it stays (empty: not said). Values are checked
    against the contract's bounds here so a bad row is reported with its line number, not as
    422s.
    """
    from contracts.messages import MAX_ENERGY_KWH, MAX_VEHICLE_POWER_KW, MIN_VEHICLE_POWER_KW

    try:
        text = path.read_text()
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from exc
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise TraceError(
            f"{path}: the header lacks {', '.join(missing)}: a trace has the columns "
            f"{', '.join(REQUIRED_COLUMNS)}, and optionally {', '.join(OPTIONAL_COLUMNS)}"
        )
    rows = []
    for line, rec in enumerate(reader, start=2):
        arrival = _number(rec, "arrival_s", path, line)
        energy = _number(rec, "energy_kwh", path, line)
        power = _number(rec, "max_power_kw", path, line)
        dwell = _optional(rec, "departure_h", path, line)
        stated_energy = _optional(rec, "stated_energy_kwh", path, line)
        stated_dwell = _optional(rec, "stated_departure_h", path, line)
        if not (math.isfinite(arrival) and arrival >= 0):
            raise TraceError(f"{path}:{line}: arrival_s must be >= 0")
        for column, kwh in (("energy_kwh", energy), ("stated_energy_kwh", stated_energy)):
            if kwh is not None and not 0 < kwh <= MAX_ENERGY_KWH:
                raise TraceError(f"{path}:{line}: {column} must be in (0, {MAX_ENERGY_KWH:g}]")
        if not MIN_VEHICLE_POWER_KW <= power <= MAX_VEHICLE_POWER_KW:
            raise TraceError(
                f"{path}:{line}: max_power_kw must be in "
                f"[{MIN_VEHICLE_POWER_KW:g}, {MAX_VEHICLE_POWER_KW:g}]"
            )
        for column, hours in (("departure_h", dwell), ("stated_departure_h", stated_dwell)):
            if hours is not None and not (math.isfinite(hours) and hours > 0):
                raise TraceError(f"{path}:{line}: {column} must be > 0")
        demand = Demand(vehicle_id=f"TRACE-{line - 1:05d}", energy_kwh=energy, max_power_kw=power)
        rows.append(TraceRow(arrival, demand, dwell, stated_energy, stated_dwell))
    if not rows:
        raise TraceError(f"{path}: no rows")
    return sorted(rows, key=lambda r: r.arrival_s)
