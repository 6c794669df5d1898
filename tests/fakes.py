"""An in-memory RabbitMQ for the services' rules, in the spirit of FastStream's TestRabbitBroker
and Dramatiq's stub broker: ``FakeBroker.connect`` is a ``messaging.Connect``, so a Dispatcher
or a WorkerService given it runs unchanged (its BrokerLink, setup, consumers, confirms) on
this broker instead of a real one.

What it models, because the services' guarantees rest on it:

* exchanges (direct, fanout, topic with ``*``/``#``) and bindings; the default exchange;
* publisher confirms, resolved on a later turn of the loop; ``mandatory`` publishes with no
  queue bound come back (PublishReturned); publishes a test chooses are nacked (``nack_when``);
* manual acks per session, with prefetch; single active consumer; exclusive queues, deleted
  with their connection; a quorum queue's ``x-delivery-count`` and delivery limit; nack
  without requeue and the delivery limit dead-letter to the queue's dead-letter exchange with
  ``x-first-death-reason``;
* a lost connection (``drop``): its unacked deliveries are requeued (redelivered), its
  consumers and exclusive queues go; ``lose_acks`` makes a session's acks vanish, as they do
  when a process dies between a confirm and its ack.

What it does not model (the integration and chaos tests cover those against RabbitMQ):
message TTLs, queue length limits, consumer timeouts, TLS, users and permissions beyond
checking ``user_id`` against the connection's user, and the wire itself.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contracts.topology import BindingSpec, ExchangeSpec, QueueSpec
from messaging import Delivery
from messaging.errors import BrokerUnavailable, FatalBrokerError, PublishNacked, PublishReturned
from messaging.session_protocol import BrokerSession, OnMessage, Waiter, resolve
from messaging.settings import AmqpSettings


@dataclass
class Properties:
    """The message properties a delivery carries (``messaging.MessageProperties``)."""

    message_id: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    headers: dict[str, Any] | None = None
    content_type: str | None = "application/json"
    delivery_mode: int | None = 2
    expiration: str | None = None


@dataclass
class Message:
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    deliveries: int = 0  # how often it was delivered before (x-delivery-count)


@dataclass
class Published:
    """A publish a session made, and what the broker answered."""

    session: str  # the connection's name
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    outcome: str  # "confirmed", "returned" or "nacked"


@dataclass
class FakeQueue:
    name: str
    arguments: dict[str, Any]
    owner: FakeSession | None = None  # exclusive to this connection
    ready: deque[Message] = field(default_factory=deque)
    consumers: list[_Consumer] = field(default_factory=list)

    @property
    def single_active(self) -> bool:
        return bool(self.arguments.get("x-single-active-consumer"))

    @property
    def quorum(self) -> bool:
        return self.arguments.get("x-queue-type") == "quorum"

    def bodies(self) -> list[bytes]:
        return [m.body for m in self.ready]


@dataclass
class _Consumer:
    tag: str
    session: FakeSession
    queue: FakeQueue
    on_message: OnMessage
    auto_ack: bool
    prefetch: int  # 0: unlimited
    unacked: int = 0


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""
    return _match(pattern.split("."), key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


class FakeBroker:
    """One in-memory broker. ``await broker.connect(settings, name)`` opens a session."""

    def __init__(self, user: str = "guest") -> None:
        self.user = user
        self.exchanges: dict[str, str] = {}  # name -> type
        self.queues: dict[str, FakeQueue] = {}
        self.bindings: set[tuple[str, str, str]] = set()  # (queue, exchange, routing key)
        self.published: list[Published] = []
        self.sessions: list[FakeSession] = []
        self.refuse_connections = False
        self.nack_rules: list[Callable[[str, str, bytes], bool]] = []
        self._tags = itertools.count(1)

    # -- what a test does ----------------------------------------------------------------------

    async def connect(self, settings: AmqpSettings, name: str) -> FakeSession:
        await asyncio.sleep(0)  # a connection is never opened within the caller's turn
        if self.refuse_connections:
            raise BrokerUnavailable("the fake broker refuses connections")
        session = FakeSession(self, name)
        self.sessions.append(session)
        return session

    def open_sessions(self, name_prefix: str = "") -> list[FakeSession]:
        return [s for s in self.sessions if s.is_open and s.name.startswith(name_prefix)]

    def drop(self, session: FakeSession) -> None:
        """The connection is lost: what it held unacked goes back to its queues."""
        session._end(ConnectionResetError("connection dropped by the test"))

    def nack_when(self, rule: Callable[[str, str, bytes], bool]) -> None:
        """Nack every publish for which ``rule(exchange, routing_key, body)`` holds."""
        self.nack_rules.append(rule)

    def put(self, exchange: str, routing_key: str, body: bytes, **props: Any) -> int:
        """Publish as a client outside the services would; returns how many queues took it."""
        return len(self._route(exchange, routing_key, Message(exchange, routing_key, body,
                                                             Properties(**props))))  # fmt: skip

    def queue(self, name: str) -> FakeQueue:
        return self.queues[name]

    def declare(self, spec: QueueSpec, owner: FakeSession | None = None) -> FakeQueue:
        q = self.queues.get(spec.name)
        if q is None:
            q = self.queues[spec.name] = FakeQueue(spec.name, dict(spec.arguments),
                                                   owner if spec.exclusive else None)  # fmt: skip
        elif q.arguments != dict(spec.arguments):
            raise FatalBrokerError(f"406 PRECONDITION_FAILED: {spec.name} has other arguments")
        return q

    def declare_exchange(self, spec: ExchangeSpec) -> None:
        known = self.exchanges.setdefault(spec.name, spec.type)
        if known != spec.type:
            raise FatalBrokerError(f"406 PRECONDITION_FAILED: {spec.name} is a {known} exchange")

    def bind(self, spec: BindingSpec) -> None:
        if spec.queue not in self.queues or spec.exchange not in self.exchanges:
            raise FatalBrokerError(f"404 NOT_FOUND: binding {spec}")
        self.bindings.add((spec.queue, spec.exchange, spec.routing_key))

    def published_to(self, exchange: str, outcome: str = "confirmed") -> list[Published]:
        return [p for p in self.published if p.exchange == exchange and p.outcome == outcome]

    # -- routing and delivering ----------------------------------------------------------------

    def _route(self, exchange: str, routing_key: str, message: Message) -> list[FakeQueue]:
        if exchange == "":
            targets = [self.queues[routing_key]] if routing_key in self.queues else []
        else:
            kind = self.exchanges[exchange]
            names = {
                q
                for q, ex, key in self.bindings
                if ex == exchange
                and (
                    kind == "fanout"
                    or (kind == "direct" and key == routing_key)
                    or (kind == "topic" and topic_matches(key, routing_key))
                )
            }
            targets = [self.queues[n] for n in sorted(names)]
        for q in targets:
            copy = Message(message.exchange, message.routing_key, message.body,
                           message.properties)  # fmt: skip
            q.ready.append(copy)
            self._soon(q)
        return targets

    def _soon(self, q: FakeQueue) -> None:
        asyncio.get_running_loop().call_soon(self._deliver, q)

    def _deliver(self, q: FakeQueue) -> None:
        """Hand ready messages to consumers with room (single active: the first one only)."""
        while q.ready and q.consumers:
            candidates = q.consumers[:1] if q.single_active else q.consumers
            free = [c for c in candidates if not c.prefetch or c.unacked < c.prefetch]
            if not free:
                return
            consumer = min(free, key=lambda c: c.unacked)
            message = q.ready.popleft()
            consumer.session._hand(consumer, message)

    def _requeue(self, q: FakeQueue, message: Message) -> None:
        message.deliveries += 1
        limit = q.arguments.get("x-delivery-limit")
        if q.quorum and limit is not None and message.deliveries > limit:
            self._dead_letter(q, message, "delivery_limit")
            return
        q.ready.appendleft(message)
        self._soon(q)

    def _dead_letter(self, q: FakeQueue, message: Message, reason: str) -> None:
        dlx = q.arguments.get("x-dead-letter-exchange")
        if dlx is None:
            return  # dropped, as RabbitMQ drops it
        headers = dict(message.properties.headers or {})
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", q.name)
        headers["x-death"] = [{"reason": reason, "queue": q.name, "count": 1}]
        props = Properties(**{**message.properties.__dict__, "headers": headers})
        self._route(dlx, message.routing_key, Message(dlx, message.routing_key, message.body,
                                                      props))  # fmt: skip


class FakeSession(BrokerSession):
    """One connection of a FakeBroker (``messaging.BrokerSession``)."""

    def __init__(self, broker: FakeBroker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.closed = asyncio.Event()
        self.close_reason: BaseException | None = None
        self.acks_lost = False  # acks sent but never arriving (a crash between confirm and ack)
        self.acked: list[bytes] = []  # bodies acked, in order
        self.nacked: list[tuple[bytes, bool]] = []  # bodies nacked, requeue or not
        self._prefetch = 0
        self._consumers: dict[str, _Consumer] = {}
        self._unacked: dict[int, tuple[_Consumer, Message]] = {}
        self._next_tag = 1

    @property
    def is_open(self) -> bool:
        return not self.closed.is_set()

    def lose_acks(self) -> None:
        self.acks_lost = True

    async def close(self) -> None:
        self._end(None)

    def _end(self, reason: BaseException | None) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for consumer in self._consumers.values():
            consumer.queue.consumers.remove(consumer)
            self.broker._soon(consumer.queue)
        self._consumers.clear()
        # What the broker delivered and never saw settled goes back, oldest first.
        for consumer, message in reversed(list(self._unacked.values())):
            self.broker._requeue(consumer.queue, message)
        self._unacked.clear()
        for name in [n for n, q in self.broker.queues.items() if q.owner is self]:
            del self.broker.queues[name]
            self.broker.bindings = {b for b in self.broker.bindings if b[0] != name}

    def _check_open(self) -> None:
        if not self.is_open:
            raise BrokerUnavailable("not connected to the broker")

    # -- publishing ---------------------------------------------------------------------------

    def _publish(
        self,
        waiter: Waiter,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        app_id: str | None = None,
        headers: dict[str, Any] | None = None,
        persistent: bool = True,
        expiration_ms: int | None = None,
        mandatory: bool = True,
        user_id: str | None = None,
    ) -> None:
        self._check_open()
        if exchange and exchange not in self.broker.exchanges:
            self._end(FatalBrokerError(f"404 NOT_FOUND: no exchange {exchange!r}"))
            raise BrokerUnavailable(f"channel closed: no exchange {exchange!r}")
        if user_id is not None and user_id != self.broker.user:
            self._end(FatalBrokerError("406 PRECONDITION_FAILED: user_id is not the user"))
            raise BrokerUnavailable("channel closed: user_id is not the connection's user")
        props = Properties(
            message_id=message_id,
            app_id=app_id,
            user_id=user_id,
            headers=headers,
            delivery_mode=2 if persistent else 1,
            expiration=None if expiration_ms is None else str(expiration_ms),
        )
        outcome = "confirmed"
        error: BaseException | None = None
        if any(rule(exchange, routing_key, body) for rule in self.broker.nack_rules):
            outcome, error = "nacked", PublishNacked(f"nacked: {exchange} {routing_key}")
        else:
            routed = self.broker._route(exchange, routing_key,
                                        Message(exchange, routing_key, body, props))  # fmt: skip
            if mandatory and not routed:
                outcome, error = "returned", PublishReturned(f"{message_id} was unroutable")
        self.broker.published.append(
            Published(self.name, exchange, routing_key, body, props, outcome)
        )

        def confirm() -> None:
            lost = error is None and not self.is_open
            resolve(
                waiter, BrokerUnavailable("connection lost before the confirm") if lost else error
            )

        asyncio.get_running_loop().call_soon(confirm)

    # -- settling -----------------------------------------------------------------------------

    def ack_tag(self, tag: int) -> None:
        if self.acks_lost or not self.is_open:
            return
        consumer, message = self._unacked.pop(tag)
        consumer.unacked -= 1
        self.acked.append(message.body)
        self.broker._soon(consumer.queue)

    def nack_tag(self, tag: int, requeue: bool) -> None:
        if not self.is_open:
            return
        consumer, message = self._unacked.pop(tag)
        consumer.unacked -= 1
        self.nacked.append((message.body, requeue))
        if requeue:
            self.broker._requeue(consumer.queue, message)
        else:
            self.broker._dead_letter(consumer.queue, message, "rejected")
        self.broker._soon(consumer.queue)

    def _hand(self, consumer: _Consumer, message: Message) -> None:
        tag = self._next_tag
        self._next_tag += 1
        headers = dict(message.properties.headers or {})
        if consumer.queue.quorum and message.deliveries:
            headers["x-delivery-count"] = message.deliveries
        props = Properties(**{**message.properties.__dict__, "headers": headers or None})
        delivery = Delivery(
            self,
            tag,
            message.deliveries > 0,
            message.routing_key,
            message.exchange,
            props,
            message.body,
            settled=consumer.auto_ack,
        )
        if not consumer.auto_ack:
            consumer.unacked += 1
            self._unacked[tag] = (consumer, message)
        consumer.on_message(delivery)

    # -- topology and consuming -----------------------------------------------------------------

    async def declare_queue(self, spec: QueueSpec) -> int:
        self._check_open()
        return len(self.broker.declare(spec, self).ready)

    async def declare_exchange(self, spec: ExchangeSpec) -> None:
        self._check_open()
        self.broker.declare_exchange(spec)

    async def bind(self, spec: BindingSpec) -> None:
        self._check_open()
        self.broker.bind(spec)

    async def unbind(self, spec: BindingSpec) -> None:
        self._check_open()
        self.broker.bindings.discard((spec.queue, spec.exchange, spec.routing_key))

    async def set_prefetch(self, count: int) -> None:
        self._check_open()
        self._prefetch = count

    async def _consume(self, queue: str, handle: OnMessage, auto_ack: bool, exclusive: bool) -> str:
        self._check_open()
        q = self.broker.queues.get(queue)
        if q is None:
            self._end(FatalBrokerError(f"404 NOT_FOUND: no queue {queue!r}"))
            raise FatalBrokerError(f"broker refused: 404 no queue {queue!r}")
        tag = f"ctag-{next(self.broker._tags)}"
        consumer = _Consumer(tag, self, q, handle, auto_ack, self._prefetch)
        q.consumers.append(consumer)
        self._consumers[tag] = consumer
        self.broker._soon(q)
        return tag

    async def cancel(self, consumer_tag: str) -> None:
        self._check_open()
        consumer = self._consumers.pop(consumer_tag, None)
        if consumer is not None:
            consumer.queue.consumers.remove(consumer)
            self.broker._soon(consumer.queue)

    async def queue_depth(self, queue: str) -> int:
        self._check_open()
        q = self.broker.queues.get(queue)
        if q is None:
            self._end(FatalBrokerError(f"404 NOT_FOUND: no queue {queue!r}"))
            raise FatalBrokerError(f"broker refused: 404 no queue {queue!r}")
        return len(q.ready)

    async def queue_exists(self, queue: str) -> int | None:
        self._check_open()
        q = self.broker.queues.get(queue)
        return None if q is None else len(q.ready)
