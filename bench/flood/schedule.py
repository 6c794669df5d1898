"""When things happen in the flood bench: its phases, the fake ids, the flood's slices. Pure.

Offsets are seconds from the start of the load (warm-up included); both the bench process
(which labels what the dispatcher does) and the load process (which sends) compute the same
plan from the same numbers, and share one clock: ``time.monotonic`` is system-wide on Linux.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# The phases, in order. Requests are sent at a fixed rate through all of them; the fake
# heartbeats only during "flood".
PHASES = ("warmup", "quiet", "flood", "after")
# What happens once the load stopped (the last requests completing): recorded, not reported.
DRAIN = "drain"


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


def plan_phases(warmup_s: float, quiet_s: float, flood_s: float, after_s: float) -> list[Phase]:
    out: list[Phase] = []
    at = 0.0
    for name, length in zip(PHASES, (warmup_s, quiet_s, flood_s, after_s), strict=True):
        if length < 0:
            raise ValueError(f"phase {name} cannot last {length} s")
        out.append(Phase(name, at, at + length))
        at += length
    return out


def phase_at(phases: list[Phase], offset_s: float) -> str:
    """The phase an offset falls in (its start included); before the first: the first; after
    the last: ``DRAIN``."""
    for p in phases:
        if offset_s < p.end_s:
            return p.name
    return DRAIN


def fake_ids(n: int, seed: int) -> list[str]:
    """``n`` distinct random substation ids (valid ones: lower case, like a real peer's)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        sid = f"fake-{rng.getrandbits(48):012x}"
        if sid not in seen:
            seen.add(sid)
            out.append(sid)
    return out


@dataclass(frozen=True)
class Slice:
    """Send the fake heartbeats of ids[lo:hi] (round ``round``: seq = round + 1) at ``at_s``
    seconds after the flood started."""

    at_s: float
    round: int
    lo: int
    hi: int


def flood_schedule(
    n_ids: int,
    phase_s: float,
    *,
    first_round_s: float = 1.5,
    period_s: float = 1.0,
    tick_s: float = 0.01,
) -> list[Slice]:
    """Every id once, evenly over the first ``first_round_s``; then every id again each
    ``period_s`` (each id heartbeats at 1/period_s Hz), evenly, for the rest of the phase.
    Slices are ``tick_s`` apart; none at or beyond ``phase_s`` (the last round may be cut)."""
    if n_ids < 0 or phase_s < 0 or first_round_s <= 0 or period_s <= 0 or tick_s <= 0:
        raise ValueError("counts and durations must be positive")
    out: list[Slice] = []

    def one_round(number: int, start_s: float, spread_s: float) -> None:
        ticks = max(1, round(spread_s / tick_s))
        for k in range(ticks):
            at = start_s + k * spread_s / ticks
            if at >= phase_s:
                return
            lo, hi = k * n_ids // ticks, (k + 1) * n_ids // ticks
            if hi > lo:
                out.append(Slice(at, number, lo, hi))

    one_round(0, 0.0, first_round_s)
    rounds = max(0, math.ceil((phase_s - first_round_s) / period_s))
    for r in range(1, rounds + 1):
        one_round(r, first_round_s + (r - 1) * period_s, period_s)
    return out


def requests_in(seconds: float, rate: float) -> int:
    """How many requests a fixed rate sends in ``seconds`` (request i is due at i / rate)."""
    return max(0, math.ceil(seconds * rate - 1e-9))
