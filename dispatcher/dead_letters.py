"""Dead letters the broker made by itself, told as ``dead_lettered`` events. Pure.

smartgrid dead-letters what it cannot read by republishing it to ``<ns>.dead`` with the reason
(``messaging.publishing.dead_letter``), and announces it then. The broker dead-letters on its
own too: a quorum queue's delivery limit reached (a request requeued by crash after crash), a
message rejected without requeue. Nobody would hear of those, and an accepted request would
silently count as lost: the dispatchers read a copy of every dead letter (``<ns>.dead.watch``)
and announce those the broker made, told by the ``x-death`` headers it adds (smartgrid's own
never carry them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts import ChargeEvent, EventKind, Topology
from contracts.messages import SUBSTATION_ID_PATTERN, readable_request_id

# The broker's reasons (x-death "reason"); others are labelled "other" in the metric.
BROKER_REASONS = ("delivery_limit", "rejected", "expired", "maxlen")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def broker_death(headers: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """``(reason, queue)`` of the broker's latest dead-lettering of a message, from its
    ``x-death`` headers (newest first), or None if the broker did not dead-letter it."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        reason = _text(deaths[0].get("reason"))
        if reason is not None:
            return reason, _text(deaths[0].get("queue"))
    reason = _text(headers.get("x-first-death-reason"))
    if reason is None:
        return None
    return reason, _text(headers.get("x-first-death-queue"))


def reason_label(reason: str) -> str:
    return reason if reason in BROKER_REASONS else "other"


def announcement(
    topology: Topology, headers: Mapping[str, Any], body: bytes
) -> tuple[str, ChargeEvent | None] | None:
    """For a message on the watch queue: None if the broker did not dead-letter it (smartgrid
    did, and said so); else the broker's reason and the event that tells it, or None for the
    event when no request id can be read from the message."""
    death = broker_death(headers)
    if death is None:
        return None
    reason, queue = death
    request_id = readable_request_id(body)
    if request_id is None:
        return reason, None
    text = f"dead-lettered by the broker from {queue or 'a queue'}: {reason}"
    prefix = topology.substation_queue("")
    substation = queue[len(prefix) :] if queue and queue.startswith(prefix) else None
    if substation is not None and not SUBSTATION_ID_PATTERN.match(substation):
        substation = None
    event = ChargeEvent(
        request_id=request_id,
        kind=EventKind.DEAD_LETTERED,
        substation_id=substation,
        reason=text[:2000],
    )
    return reason, event
