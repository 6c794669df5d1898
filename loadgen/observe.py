"""Follow a grid over AMQP: heartbeats and lifecycle events into a ``GridState``.

Each follower has queues of its own, bound before anything is sent, so it sees every event
published after ``start()`` returns: heartbeats in an exclusive queue (only fresh ones matter),
events in a durable one that outlives a reconnect or a broker restart (deleted by ``stop()``,
or by the broker once unused for ten minutes). Every broker call is bounded
(``loadgen.bounded``): a broker that stops answering delays ``stop()`` by seconds, not forever.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from contracts import ChargeEvent, DispatchIntent, Heartbeat, Topology
from contracts.topology import BindingSpec
from loadgen.bounded import BROKER_TIMEOUT_S, attempt, within
from loadgen.state import GridState
from messaging import AmqpSettings, BrokerLink, BrokerUnavailable, Delivery, Session

ALL_EVENTS = "event.#"
# While the substation table is full, forget stale substations at most this often.
PRUNE_EVERY_S = 1.0


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
        call_timeout_s: float = BROKER_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.state = state or GridState()
        self.heartbeats = heartbeats
        self.events = events
        self.connect_timeout_s = connect_timeout_s
        self.call_timeout_s = call_timeout_s
        tag = uuid.uuid4().hex[:8]
        self._tag = tag
        self._setups = 0
        self.heartbeat_queue = f"{topology.namespace}.loadgen.heartbeats.{tag}"
        self.event_queue = f"{topology.namespace}.loadgen.events.{tag}"
        self._link = BrokerLink(settings, f"smartgrid-loadgen-{tag}", self._setup)
        self._pruned_at = 0.0

    async def _setup(self, session: Session) -> None:
        t, s = self.topology, self.call_timeout_s
        # Declaring the exchanges (idempotent) lets a follower start before the grid does.
        await within(session.declare_all(t.exchanges(), [], []), s, "declaring the exchanges")
        if self.heartbeats:
            # Exclusive, so named anew at every (re)connect: after a cluster node is lost its
            # dead queue may still be on record, and the same name would fail (404). The event
            # queue keeps its name: it is durable, and what waits in it is for this follower.
            self._setups += 1
            self.heartbeat_queue = (
                f"{self.topology.namespace}.loadgen.heartbeats.{self._tag}-{self._setups}"
            )
            q = self.heartbeat_queue
            await within(session.declare_queue(t.heartbeat_queue_spec(q)), s, f"declaring {q}")
            await within(session.bind(BindingSpec(q, t.heartbeats_exchange)), s, f"binding {q}")
            consume = session.consume(q, self._on_heartbeat, auto_ack=True)
            await within(consume, s, f"consuming {q}")
        if self.events:
            q = self.event_queue
            await within(session.declare_queue(t.event_follower_queue_spec(q)), s, f"declaring {q}")
            await within(
                session.bind(BindingSpec(q, t.events_exchange, ALL_EVENTS)), s, f"binding {q}"
            )
            # The dispatcher says where it sends requests in one intent per batch.
            intents = BindingSpec(q, t.events_exchange, t.intent_routing_key)
            await within(session.bind(intents), s, f"binding {q}")
            await within(session.consume(q, self._on_event, auto_ack=True), s, f"consuming {q}")

    def _on_heartbeat(self, delivery: Delivery) -> None:
        state = self.state
        if state.substations_full and time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            state.prune(datetime.now(UTC))
        try:
            state.on_heartbeat(Heartbeat.model_validate_json(delivery.body))
        except ValueError:  # pydantic's ValidationError: not a Heartbeat
            state.invalid_messages += 1

    def _on_event(self, delivery: Delivery) -> None:
        try:
            if delivery.routing_key == self.topology.intent_routing_key:
                for event in DispatchIntent.model_validate_json(delivery.body).events():
                    self.state.on_event(event)
            else:
                self.state.on_event(ChargeEvent.model_validate_json(delivery.body))
        except ValueError:  # pydantic's ValidationError: not what its routing key says
            self.state.invalid_messages += 1

    async def start(self) -> GridObserver:
        """Connect and bind; raises BrokerUnavailable if that does not happen in time.

        The first connection is tried once, so that a broker that is not there is reported at
        once; after that the link reconnects by itself.
        """
        probe = await Session.open(self.settings, "smartgrid-loadgen-probe")
        await attempt(probe.close(), self.call_timeout_s, "closing the probe connection")
        try:
            await self._link.start(self.connect_timeout_s)
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(f"could not follow {self.topology.namespace}: {exc}") from exc
        return self

    @property
    def session(self) -> Session | None:
        """The current session (None while disconnected), for probes of the grid's queues."""
        return self._link.session

    @property
    def connected(self) -> bool:
        return self._link.ready.is_set()

    async def stop(self) -> None:
        """Delete the events queue and disconnect, each within the call timeout (what cannot
        be done in time is left to the broker: the queue expires); re-raises what ended the
        link (a fatal refusal), if anything did."""
        session = self._link.session
        if self.events and session is not None and session.is_open:
            q = self.event_queue
            await attempt(session.delete_queue(q), self.call_timeout_s, f"deleting {q}")
        await self._link.stop(self.call_timeout_s)

    async def __aenter__(self) -> GridObserver:
        return await self.start()

    async def __aexit__(self, *_exc_info: object) -> None:
        await self.stop()
