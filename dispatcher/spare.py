"""Where a car with a departure gets the most energy by then: the substations' spare power.

A heartbeat may carry what its substation's plan leaves unused over time
(``Heartbeat.spare``). A car placed there can draw that much, up to its own maximum, without
taking from the cars already promised: summed over its stay, that is the energy it can count on
there (at most its need). Of the substations it is asked about where the car's promise still
fits (no over-commitment while another has room; of all where it fits nowhere), the dispatcher
sends the car to the one where it can count on the most; where several can give it all it needs
(or equally much), to the least promised of them, as without this rule.

Counting only spare power, not what a plan could move between cars, keeps the estimate a lower
bound for the car and cheap: a few pieces per substation. What the dispatcher assigned since
the heartbeat is taken off every piece in full, and a substation without a free bay counts
nothing. Without a stated profile (another sharing, an older worker) the spare power is the
capacity less what is committed, throughout.

Pure: time is passed in. The dispatcher asks this of a short list (``shortlist``: of the least
promised substation of each capacity rating, ``PromiseIndex.tops``, the ``MAX_CANDIDATES`` least
promised counting the need in full, and the least promised of all), so a decision reads at most
that many profiles however many ratings the grid has.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from dispatcher.load_table import SubstationState, promised_ratio

SECONDS_PER_HOUR = 3600.0
# Profiles read per decision, at most: real grids draw from a short list of transformer ratings
# (15 in IEC 60076's R10 series); a grid whose capacities all differ reads the least promised.
MAX_CANDIDATES = 16


def shortlist(
    tops: Sequence[SubstationState],
    least: SubstationState,
    promised: float,
    limit: int = MAX_CANDIDATES,
) -> list[SubstationState]:
    """``least`` and the ``limit`` least promised of ``tops`` (counting ``promised`` kW in full),
    each once."""
    found = {least.substation_id: least}
    for s in heapq.nsmallest(limit, tops, key=lambda s: promised_ratio(s, promised, 1)):
        found.setdefault(s.substation_id, s)
    return list(found.values())


def counted_kwh(
    s: SubstationState,
    energy_kwh: float,
    max_kw: float,
    leaves_in_s: float,
    now: float,
    time_scale: float,
) -> float:
    """The energy (kWh) a car needing ``energy_kwh`` at most ``max_kw``, leaving in
    ``leaves_in_s`` wall seconds, can count on at ``s`` (module docstring)."""
    if leaves_in_s <= 0 or energy_kwh <= 0:
        return 0.0
    if s.active_sessions + s.queued + s.pending_count >= s.bays:
        return 0.0
    car_kw = min(max_kw, s.capacity_kw)
    if s.charger_max_kw is not None:
        car_kw = min(car_kw, s.charger_max_kw)
    pieces = s.spare
    if not pieces:
        spare_kw = max(0.0, s.capacity_kw - s.committed_kw - s.pending_kw)
        return min(energy_kwh, min(car_kw, spare_kw) * leaves_in_s * time_scale / SECONDS_PER_HOUR)
    # The pieces run from the heartbeat; it arrived ``now - last_seen`` ago.
    elapsed = max(0.0, now - s.last_seen)
    start = 0.0
    got = 0.0
    kw = 0.0
    for until_s, kw in pieces:
        end = min(until_s - elapsed, leaves_in_s)
        if end > start:
            got += min(car_kw, max(0.0, kw - s.pending_kw)) * (end - start)
            start = end
        if start >= leaves_in_s:
            break
    if start < leaves_in_s:  # the last piece lasts
        got += min(car_kw, max(0.0, kw - s.pending_kw)) * (leaves_in_s - start)
    return min(energy_kwh, got * time_scale / SECONDS_PER_HOUR)


def most_energy(
    candidates: Sequence[SubstationState],
    energy_kwh: float,
    max_kw: float,
    promised: float,
    leaves_in_s: float,
    now: float,
    time_scale: float,
) -> SubstationState | None:
    """Of ``candidates`` where ``promised`` kW (counted in full) still fits, if any does, else of
    all: where the car can count on the most energy by its departure; ties (within float
    rounding) to the least promised."""
    ratios = [(s, promised_ratio(s, promised, 1)) for s in candidates]
    fitting = [(s, r) for s, r in ratios if r <= 1.0]
    best: SubstationState | None = None
    best_key = (-math.inf, -math.inf)
    for s, ratio in fitting or ratios:
        got = counted_kwh(s, energy_kwh, max_kw, leaves_in_s, now, time_scale)
        key = (round(got, 9), -ratio)
        if best is None or key > best_key:
            best, best_key = s, key
    return best
