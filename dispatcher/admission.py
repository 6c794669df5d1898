"""Which heartbeats the dispatcher believes, and which new substations it admits. Pure: the
clocks are passed in.

Anyone who may publish to ``<ns>.heartbeats`` can claim to be a substation. A claim costs the
dispatcher a table entry and, once routed to, a request that comes back unroutable, so:

* a heartbeat from the future (``sent_at`` beyond the clock-skew allowance) is refused: it would
  otherwise outrank the real substation's own heartbeats;
* where operators give every substation its own RabbitMQ user, a heartbeat whose broker-validated
  ``user_id`` is not that substation's user is refused;
* a substation id the table does not hold is admitted only once its queue is seen to exist (the
  service probes it; nothing is created), at most ``admit_per_s`` new ids a second (a burst of
  two seconds' worth), and never beyond ``max_substations``.
"""

from __future__ import annotations

import logging
from collections import Counter

from contracts import Heartbeat

log = logging.getLogger(__name__)

# Placeholder in SMARTGRID_HEARTBEAT_USER for the substation's id.
USER_PLACEHOLDER = "{substation_id}"


def from_the_future(hb: Heartbeat, wall_now: float, skew_s: float) -> bool:
    return hb.sent_at.timestamp() > wall_now + skew_s


def expected_user(template: str, substation_id: str) -> str:
    return template.replace(USER_PLACEHOLDER, substation_id)


# A burst of refusals ends after this long without one; its summary is logged then.
BURST_QUIET_S = 10.0


class RefusalLog:
    """One log line when a burst of refusals starts and one when it ends, not one per heartbeat
    (a flood would write thousands a second); the metric counts each."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._last: float | None = None

    def refused(self, reason: str, substation_id: str, now: float, hint: str) -> None:
        if self._last is None:
            log.warning(
                "refusing heartbeats: %s (substation %r); further refusals are counted in "
                "smartgrid_dispatcher_heartbeats_total and summed up once none came for %.0f s",
                hint,
                substation_id,
                BURST_QUIET_S,
            )
        self._counts[reason] += 1
        self._last = now

    def tick(self, now: float) -> None:
        if self._last is not None and now - self._last > BURST_QUIET_S:
            summary = ", ".join(f"{n} {reason}" for reason, n in sorted(self._counts.items()))
            log.warning("burst of refused heartbeats over: %s", summary)
            self._counts.clear()
            self._last = None


# Why a heartbeat was not applied: the label values of smartgrid_dispatcher_heartbeats_total.
HINTS = {
    "future": "sent_at later than this dispatcher's clock allows (SMARTGRID_MAX_CLOCK_SKEW_S)",
    "forbidden": "user_id is not the substation's user (SMARTGRID_HEARTBEAT_USER)",
    "full": "the table holds SMARTGRID_MAX_SUBSTATIONS substations",
    "rate": "more new substation ids than SMARTGRID_ADMIT_PER_S",
    "no_queue": "no queue <ns>.substation.<id> exists for the id",
}
