"""Follow a grid over AMQP: heartbeats and lifecycle events into a ``GridState``.

Each follower has queues of its own, bound before anything is sent, so it sees every event
published after ``start()`` returns: heartbeats in an exclusive queue (only fresh ones matter),
events in a durable one that outlives a reconnect or a broker restart (deleted by ``stop()``,
or by the broker once unused for ten minutes).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from types import TracebackType

from pydantic import ValidationError

from contracts import ChargeEvent, DispatchIntent, Heartbeat, Topology
from contracts.topology import BindingSpec
from loadgen.state import GridState
from messaging import (
    AmqpSettings,
    BrokerLink,
    BrokerUnavailable,
    Delivery,
    MessagingError,
    Session,
)

log = logging.getLogger(__name__)

ALL_EVENTS = "event.#"


class GridObserver:
    """``async with GridObserver(...) as obs:`` keeps ``obs.state`` up to date."""

    def __init__(
        self,
        settings: AmqpSettings,
        topology: Topology,
        state: GridState | None = None,
        *,
        heartbeats: bool = True,
        events: bool = True,
        connect_timeout_s: float = 15.0,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.state = state or GridState()
        self.heartbeats = heartbeats
        self.events = events
        self.connect_timeout_s = connect_timeout_s
        tag = uuid.uuid4().hex[:8]
        self.heartbeat_queue = f"{topology.namespace}.loadgen.heartbeats.{tag}"
        self.event_queue = f"{topology.namespace}.loadgen.events.{tag}"
        self._link = BrokerLink(settings, f"smartgrid-loadgen-{tag}", self._setup)

    async def _setup(self, session: Session) -> None:
        t = self.topology
        # Declaring the exchanges (idempotent) lets a follower start before the grid does.
        await session.declare_all(t.exchanges(), [], [])
        if self.heartbeats:
            await session.declare_queue(t.heartbeat_queue_spec(self.heartbeat_queue))
            await session.bind(BindingSpec(self.heartbeat_queue, t.heartbeats_exchange))
            await session.consume(self.heartbeat_queue, self._on_heartbeat, auto_ack=True)
        if self.events:
            await session.declare_queue(t.event_follower_queue_spec(self.event_queue))
            await session.bind(BindingSpec(self.event_queue, t.events_exchange, ALL_EVENTS))
            # The dispatcher says where it sends requests in one intent per batch.
            intents = BindingSpec(self.event_queue, t.events_exchange, t.intent_routing_key)
            await session.bind(intents)
            await session.consume(self.event_queue, self._on_event, auto_ack=True)

    def _on_heartbeat(self, delivery: Delivery) -> None:
        try:
            self.state.on_heartbeat(Heartbeat.model_validate_json(delivery.body))
        except ValidationError:
            self.state.invalid_messages += 1

    def _on_event(self, delivery: Delivery) -> None:
        try:
            if delivery.routing_key == self.topology.intent_routing_key:
                for event in DispatchIntent.model_validate_json(delivery.body).events():
                    self.state.on_event(event)
            else:
                self.state.on_event(ChargeEvent.model_validate_json(delivery.body))
        except ValidationError:
            self.state.invalid_messages += 1

    async def start(self) -> GridObserver:
        """Connect and bind; raises BrokerUnavailable if that does not happen in time.

        The first connection is tried once, so that a broker that is not there is reported at
        once; after that the link reconnects by itself.
        """
        probe = await Session.open(self.settings, "smartgrid-loadgen-probe")
        await probe.close()
        try:
            await self._link.start(self.connect_timeout_s)
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(f"could not follow {self.topology.namespace}: {exc}") from exc
        return self

    @property
    def connected(self) -> bool:
        return self._link.ready.is_set()

    async def stop(self) -> None:
        """Disconnect; re-raises what ended the link (a fatal refusal), if anything did."""
        session = self._link.session
        if self.events and session is not None and session.is_open:
            with contextlib.suppress(MessagingError):
                await session.delete_queue(self.event_queue)
        await self._link.stop()

    async def __aenter__(self) -> GridObserver:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
