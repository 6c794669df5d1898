"""Publishing patterns every service shares: lifecycle events and dead-lettering with a reason."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

from contracts import ChargeEvent, DispatchIntent, Topology
from messaging.errors import MessagingError
from messaging.session import Delivery
from messaging.session_protocol import BrokerSession

log = logging.getLogger(__name__)

REASON_HEADER = "x-smartgrid-reason"
SOURCE_HEADER = "x-smartgrid-source"
MAX_REASON_CHARS = 1000
_BROKER_DEATH = re.compile(r"^x-(death|first-death-|last-death-)")


def publish_event(session: BrokerSession, topology: Topology, event: ChargeEvent) -> None:
    """Best effort: events feed dashboards and loadgen; work is never held back for them."""
    session.publish_and_forget(
        topology.events_exchange,
        topology.event_routing_key(event.kind),
        event.model_dump_json().encode(),
        message_id=str(event.event_id),
    )


def publish_event_confirmed(
    session: BrokerSession, topology: Topology, event: ChargeEvent
) -> asyncio.Future[None]:
    """An event that stands in for work (a dead letter announced): its future resolves once
    the broker has it, so that what it replaces is settled only then."""
    return session.publish(
        topology.events_exchange,
        topology.event_routing_key(event.kind),
        event.model_dump_json().encode(),
        message_id=str(event.event_id),
        mandatory=False,  # nobody may be listening; that is fine
    )


def announce_intent(
    session: BrokerSession,
    topology: Topology,
    intent: DispatchIntent,
    on_confirmed: Callable[[BaseException | None], None],
) -> None:
    """A dispatcher's intent, which a standby relies on: ``on_confirmed(None)`` once the broker
    has it, ``on_confirmed(error)`` if it will not. ``app_id`` names the dispatcher, so that it
    can recognise (and skip) its own intents coming back."""
    session.publish_then(
        on_confirmed,
        topology.events_exchange,
        topology.intent_routing_key,
        intent.model_dump_json().encode(),
        message_id=str(intent.intent_id),
        app_id=intent.dispatcher,
        mandatory=False,  # nobody may be listening; that is fine
    )


def dead_letter(
    session: BrokerSession, topology: Topology, delivery: Delivery, reason: str, source: str
) -> asyncio.Future[None]:
    """Move a delivery to ``<ns>.dead`` with its reason, acking it only once that is confirmed.

    RabbitMQ's own dead-lettering records only "rejected"; republishing keeps the real reason
    (e.g. the validation error) in a header. If the publish fails, the delivery is requeued.
    """
    # The broker's own x-death headers are not copied: a dead letter that carries them was
    # dead-lettered by the broker (the watch queue announces those), this one by smartgrid,
    # which announces it itself.
    headers = {k: v for k, v in delivery.headers.items() if not _BROKER_DEATH.match(k)}
    headers[REASON_HEADER] = reason[:MAX_REASON_CHARS]
    headers[SOURCE_HEADER] = source
    fut = session.publish(
        topology.dead_exchange,
        "",
        delivery.body,
        message_id=delivery.properties.message_id,
        headers=headers,
    )
    ack_once_confirmed(delivery, fut, "dead-lettering")
    return fut


def ack_once_confirmed(delivery: Delivery, fut: asyncio.Future[None], what: str) -> None:
    """Ack ``delivery`` once ``fut`` (the publish that takes over its work) is confirmed;
    requeue it if the broker did not take that publish, so that nothing is lost between."""

    def settle(f: asyncio.Future[None]) -> None:
        exc = None if f.cancelled() else f.exception()
        if exc is None and not f.cancelled():
            delivery.ack()
        else:
            log.warning("%s failed (%s); requeueing", what, exc)
            delivery.nack(requeue=True)

    fut.add_done_callback(settle)


__all__ = [
    "REASON_HEADER",
    "SOURCE_HEADER",
    "MessagingError",
    "ack_once_confirmed",
    "announce_intent",
    "dead_letter",
    "publish_event",
    "publish_event_confirmed",
]
