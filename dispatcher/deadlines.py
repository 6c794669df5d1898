"""What a request asks the dispatcher to promise, by its departure (``contracts.promises``).

The worker counts the same in its heartbeat's ``committed_kw``, so the headroom policy's
question, "is there a substation with room for this car?", becomes "is there one that can still
deliver its energy by its departure?", and no further rule is needed to choose where.
"""

from __future__ import annotations

from datetime import datetime

from contracts import ChargeRequest
from contracts.promises import promised_kw as promise


def promised_kw(request: ChargeRequest, now: datetime, time_scale: float) -> float:
    """The power to promise ``request`` at ``now`` (wall clock), for substations whose simulated
    time runs ``time_scale`` times the wall clock (1 for real ones)."""
    if request.departure is None:
        return request.max_power_kw
    left_s = (request.departure - now).total_seconds() * time_scale
    return promise(request.energy_kwh, request.max_power_kw, left_s)
