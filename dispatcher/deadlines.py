"""What a request asks the dispatcher to promise, by its departure. Pure: no I/O, no clock.

A car without a departure is promised its max power, as it always was. A car with one needs only
the power that fills it by then: ``energy / time left`` (at most its max). A substation whose
promises (``Heartbeat.committed_kw``: the same rule, applied by the worker to what it holds) sum to
at most its capacity can meet every demand it holds, had each car a bay: giving each its promise
from now on fills it by its departure. So the headroom policy's question, "is there a substation
with room for this car?", becomes "is there one that can still deliver its energy by its
departure?", and no further rule is needed to choose where.
"""

from __future__ import annotations

from datetime import datetime

from contracts import ChargeRequest

SECONDS_PER_HOUR = 3600.0


def promised_kw(request: ChargeRequest, now: datetime, time_scale: float) -> float:
    """The power to promise ``request`` at ``now`` (wall clock), for substations whose simulated
    time runs ``time_scale`` times the wall clock (1 for real ones). 0 once its departure has
    passed: it leaves unserved wherever it goes, so it takes nobody's room."""
    if request.departure is None:
        return request.max_power_kw
    left_h = (request.departure - now).total_seconds() * time_scale / SECONDS_PER_HOUR
    if left_h <= 0:
        return 0.0
    return min(request.max_power_kw, request.energy_kwh / left_h)
