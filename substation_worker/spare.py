"""What a substation's plan leaves of its capacity over time (``Heartbeat.spare``). Pure.

Under the ``smartgrid`` sharing the cars with a departure follow a plan (``sharing.online_plan``);
what that plan leaves unused in each of its steps is power one more car could draw there without
taking from them. The dispatcher reads it to place a car with a departure where it can get the
most energy by then (``dispatcher.spare``). Counted conservatively: a car without a departure
keeps drawing what it draws now, and a car waiting for a bay its promised power, throughout
(each may end sooner); after the plan's last step, what those leave. Where pieces must be merged,
a merged piece states the least spare power of its stretch.

Other sharings make no plan: they state none (None), which the dispatcher reads as capacity
less committed power throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from contracts import Spare
from contracts.messages import MAX_SPARE, MAX_SPARE_UNTIL_S
from substation_worker.sharing import Car, Smartgrid, online_plan
from substation_worker.simulation import Substation, near_equal_runs


@dataclass(frozen=True, slots=True)
class SparePiece:
    """``kw`` unused from the previous piece's end (now, for the first) until ``until_s``
    simulated seconds from now."""

    until_s: float
    kw: float


def spare_profile(sub: Substation, max_pieces: int = MAX_SPARE) -> list[SparePiece] | None:
    """What ``sub``'s plan leaves unused from ``sub.now_s`` on (module docstring); None when its
    sharing makes no plan."""
    if not isinstance(sub.sharing, Smartgrid):
        return None
    if max_pieces < 1:
        raise ValueError("max_pieces must be >= 1")
    now = sub.now_s
    dated = [
        s
        for s in sub.active
        if s.departure_s is not None and s.departure_s > now and s.remaining_kwh > 0
    ]
    # Drawn throughout, as far as this profile knows: cars without a departure at their power
    # now, cars waiting for a bay at their promise.
    steady = math.fsum(s.power_kw for s in sub.active if s.departure_s is None) + math.fsum(
        sub.promised_kw(s) for s in sub.waiting
    )
    after = max(0.0, sub.capacity_kw - steady)
    if not dated:
        return [SparePiece(math.inf, after)]
    cars = [
        Car(s.key, s.max_power_kw, s.remaining_kwh, s.departure_s, s.priority, now) for s in dated
    ]
    try:
        found = online_plan(sub.capacity_kw, cars, now, first_step_s=sub.replan_s)
    except RuntimeError:
        # The solver found no plan (the substation shares fairly until its next re-plan):
        # no profile to state, which the dispatcher reads as capacity less committed.
        return None
    lengths = [float(b - a) for a, b in zip(found.bounds_s[:-1], found.bounds_s[1:], strict=True)]
    planned = found.energy_kwh.sum(axis=0)
    pieces = [
        SparePiece(
            float(found.bounds_s[k + 1] - now),
            max(0.0, sub.capacity_kw - steady - float(planned[k]) * 3600.0 / lengths[k]),
        )
        for k in range(len(lengths))
    ]
    pieces.append(SparePiece(math.inf, after))
    return merged(pieces, max_pieces)


class SpareCache:
    """``spare_profile`` solved at most once per re-plan of the substation (or change of what
    waits), shifted in time in between: a heartbeat every wall second would otherwise solve a
    plan every second, where the substation re-plans every minute of its time (at time scale 1)."""

    def __init__(self) -> None:
        self._key: tuple[float, int, int] | None = None
        self._at_s = 0.0
        self._pieces: list[SparePiece] | None = None

    def profile(self, sub: Substation) -> list[SparePiece] | None:
        key = (sub.planned_at_s, sub.active_count, sub.waiting_count)
        if key != self._key:
            self._key, self._at_s, self._pieces = key, sub.now_s, spare_profile(sub)
            return self._pieces
        if self._pieces is None:
            return None
        shift = sub.now_s - self._at_s
        return [SparePiece(p.until_s - shift, p.kw) for p in self._pieces if p.until_s > shift]


def merged(pieces: Sequence[SparePiece], max_pieces: int) -> list[SparePiece]:
    """At most ``max_pieces``: consecutive pieces with the same power joined, then neighbours
    grouped into near-equal runs, each stating the least power of its run (never more spare
    than there is)."""
    joined: list[SparePiece] = []
    for p in pieces:
        if joined and joined[-1].kw == p.kw:
            joined[-1] = SparePiece(p.until_s, p.kw)
        else:
            joined.append(p)
    if len(joined) <= max_pieces:
        return joined
    return [
        SparePiece(run[-1].until_s, min(p.kw for p in run))
        for run in near_equal_runs(joined, max_pieces)
    ]


def spare_to_wire(
    pieces: Sequence[SparePiece] | None, time_scale: float
) -> tuple[Spare, ...] | None:
    """A profile as a heartbeat carries it: wall seconds after it is sent. The last piece (to
    infinity) is implied: the contract reads the last stated piece as lasting; so a final
    piece is stated only up to ``MAX_SPARE_UNTIL_S``, and pieces beyond that are cut there."""
    if pieces is None:
        return None
    out: list[Spare] = []
    for p in pieces:
        until = min(p.until_s / time_scale, MAX_SPARE_UNTIL_S)
        if until <= 0:
            continue
        if out and out[-1].until_s >= until:
            break
        out.append(Spare(until_s=until, kw=p.kw))
        if until >= MAX_SPARE_UNTIL_S:
            break
    return tuple(out)
