"""Every exchange, queue and binding name, derived from the namespace, as plain data.

The names are part of the contract (docs/contract.md): ``<ns>.requests``, ``<ns>.heartbeats``,
``<ns>.substations`` with ``<ns>.substation.<id>`` queues, ``<ns>.events`` (``event.<kind>``)
and ``<ns>.dead``. Queue arguments live here once, because RabbitMQ refuses a redeclaration
whose arguments differ (PRECONDITION_FAILED).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from contracts.messages import EventKind

DEFAULT_NAMESPACE = "smartgrid"
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")

# The most replicas a quorum queue is given (RabbitMQ advises odd numbers: 3 or 5).
MAX_REPLICAS = 9
# A quorum queue hands a message back this many times (crash, requeue) before dead-lettering it;
# RabbitMQ 4.x defaults to 20 and drops the message when no dead-letter exchange is set.
DELIVERY_LIMIT = 20
# A delivery unacked this long closes its consumer's channel (RabbitMQ's consumer_timeout). Workers
# ack a session when it completes, so this must outlast the longest one: 300 kWh at 1 kW is 300
# simulated hours, 5 wall hours at the default time scale of 60. The queue argument works on
# RabbitMQ 3.12 and later; 3.10 ignores it and needs `consumer_timeout` in rabbitmq.conf.
CONSUMER_TIMEOUT_MS = 24 * 3600 * 1000
# Heartbeats are only worth reading while fresh; older ones are dropped by the broker.
HEARTBEAT_TTL_MS = 5_000

# The dead-letter watch queue keeps at most this much (drop-head beyond).
DEAD_WATCH_MAX_MESSAGES = 100_000
DEAD_WATCH_MAX_BYTES = 256 * 1024 * 1024

# A follower's durable event queue is deleted by the broker after this long without consumers.
FOLLOWER_EXPIRES_MS = 10 * 60 * 1000

ExchangeType = Literal["direct", "fanout", "topic"]


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: ExchangeType
    durable: bool = True


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False


@dataclass(frozen=True)
class BindingSpec:
    queue: str
    exchange: str
    routing_key: str = ""


@dataclass(frozen=True)
class Topology:
    """Names under one namespace; tests use a fresh namespace each run."""

    namespace: str = DEFAULT_NAMESPACE
    # Replicas of each quorum queue, placed when it is declared (x-quorum-initial-group-size);
    # None: the broker's default. RabbitMQ refuses to redeclare a queue with another value
    # (or with one where it had none), so every process of a grid must say the same.
    quorum_replicas: int | None = None

    def __post_init__(self) -> None:
        if not NAMESPACE_PATTERN.match(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} must match {NAMESPACE_PATTERN.pattern}")
        if self.quorum_replicas is not None and not 1 <= self.quorum_replicas <= MAX_REPLICAS:
            raise ValueError(f"quorum_replicas must be 1..{MAX_REPLICAS}")

    def _quorum(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.quorum_replicas is not None:
            args["x-quorum-initial-group-size"] = self.quorum_replicas
        return args

    def _n(self, suffix: str) -> str:
        return f"{self.namespace}.{suffix}"

    @property
    def requests_exchange(self) -> str:
        return self._n("requests")

    @property
    def requests_queue(self) -> str:
        return self._n("requests")

    @property
    def heartbeats_exchange(self) -> str:
        return self._n("heartbeats")

    @property
    def substations_exchange(self) -> str:
        return self._n("substations")

    def substation_queue(self, substation_id: str) -> str:
        return self._n(f"substation.{substation_id}")

    @property
    def events_exchange(self) -> str:
        return self._n("events")

    @staticmethod
    def event_routing_key(kind: EventKind | str) -> str:
        return f"event.{EventKind(kind).value}"

    # DispatchIntent messages, on the events exchange beside (not under) event.#.
    intent_routing_key: ClassVar[str] = "intent.dispatched"

    @property
    def dead_exchange(self) -> str:
        return self._n("dead")

    @property
    def dead_queue(self) -> str:
        return self._n("dead")

    @property
    def dead_watch_queue(self) -> str:
        return self._n("dead.watch")

    # -- declarations, as data -------------------------------------------------------------

    def _work_queue_arguments(self, *, single_active_consumer: bool) -> dict[str, Any]:
        args: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead_exchange,
            # at-least-once dead-lettering needs reject-publish overflow (RabbitMQ 3.10+).
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-consumer-timeout": CONSUMER_TIMEOUT_MS,
        }
        if single_active_consumer:
            args["x-single-active-consumer"] = True
        return self._quorum(args)

    def exchanges(self) -> list[ExchangeSpec]:
        return [
            ExchangeSpec(self.requests_exchange, "fanout"),
            ExchangeSpec(self.heartbeats_exchange, "fanout"),
            ExchangeSpec(self.substations_exchange, "direct"),
            ExchangeSpec(self.events_exchange, "topic"),
            ExchangeSpec(self.dead_exchange, "fanout"),
        ]

    def requests_queue_spec(self) -> QueueSpec:
        return QueueSpec(
            self.requests_queue, self._work_queue_arguments(single_active_consumer=True)
        )

    def substation_queue_spec(self, substation_id: str) -> QueueSpec:
        return QueueSpec(
            self.substation_queue(substation_id),
            self._work_queue_arguments(single_active_consumer=False),
        )

    def dead_queue_spec(self) -> QueueSpec:
        """Durable; nothing consumes it automatically, operators inspect it. Classic on one
        node; replicated (quorum) when the grid's queues are: a classic queue lives on one
        node, and while that node is down every process that declares it on reconnecting (the
        gateway, the dispatchers) is refused (404 "process is stopped by supervisor")."""
        if self.quorum_replicas is None:
            return QueueSpec(self.dead_queue)
        return QueueSpec(self.dead_queue, self._quorum({"x-queue-type": "quorum"}))

    def dead_watch_queue_spec(self) -> QueueSpec:
        """The dispatchers' copy of every dead letter, so that what the broker dead-lettered
        by itself (a delivery limit reached, a rejection) is announced as a ``dead_lettered``
        event: quorum, one active consumer, and bounded, oldest dropped (what it holds is
        only ever announced, never charged)."""
        return QueueSpec(
            self.dead_watch_queue,
            self._quorum(
                {
                    "x-queue-type": "quorum",
                    "x-single-active-consumer": True,
                    "x-max-length": DEAD_WATCH_MAX_MESSAGES,
                    "x-max-length-bytes": DEAD_WATCH_MAX_BYTES,
                    "x-overflow": "drop-head",
                }
            ),
        )

    def dead_watch_binding(self) -> BindingSpec:
        return BindingSpec(self.dead_watch_queue, self.dead_exchange)

    @staticmethod
    def heartbeat_queue_spec(name: str) -> QueueSpec:
        """Each dispatcher's private view of heartbeats: exclusive, gone with its connection."""
        return QueueSpec(
            name,
            {"x-message-ttl": HEARTBEAT_TTL_MS},
            durable=False,
            exclusive=True,
            auto_delete=True,
        )

    def event_follower_queue_spec(self, name: str) -> QueueSpec:
        """A follower's (loadgen, tests) copy of the events: durable, so that events published
        while the follower reconnects (or the broker restarts) wait for it; it expires once
        unused for a while, should the follower die without deleting it. Replicated (quorum)
        when the grid's queues are, so that it outlives the loss of the node it was declared on
        (a classic queue there would drop the events meant for it, and refuse redeclaring)."""
        args: dict[str, Any] = {"x-expires": FOLLOWER_EXPIRES_MS}
        if self.quorum_replicas is not None:
            args = self._quorum({"x-queue-type": "quorum", **args})
        return QueueSpec(name, args)

    def core_queues(self) -> list[QueueSpec]:
        return [self.requests_queue_spec(), self.dead_queue_spec()]

    def core_bindings(self) -> list[BindingSpec]:
        return [
            BindingSpec(self.requests_queue, self.requests_exchange),
            BindingSpec(self.dead_queue, self.dead_exchange),
        ]

    def substation_binding(self, substation_id: str) -> BindingSpec:
        return BindingSpec(
            self.substation_queue(substation_id), self.substations_exchange, substation_id
        )
