"""What a service may ask of its broker session: the narrow surface the dispatcher and the
worker use, so that they can be handed the real ``Session`` or an in-memory stand-in.

The services never open a connection themselves: they are given a ``Connect`` (by default
``Session.open``) and ``BrokerLink`` calls it for every (re)connection. Anything satisfying
``BrokerSession`` works: a test hands them an in-memory broker's sessions (``tests/fakes.py``)
and proves the services' rules without a RabbitMQ; the integration tests prove the wiring.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from contracts.topology import BindingSpec, ExchangeSpec, QueueSpec

if TYPE_CHECKING:  # the Session module imports this one
    from messaging.session import Delivery
    from messaging.settings import AmqpSettings

OnMessage = Callable[["Delivery"], None]
OnConfirmed = Callable[[BaseException | None], None]


class MessageProperties(Protocol):
    """The AMQP properties a service reads from a delivery (pika's BasicProperties has them)."""

    @property
    def message_id(self) -> str | None: ...

    @property
    def app_id(self) -> str | None: ...

    @property
    def user_id(self) -> str | None: ...

    @property
    def headers(self) -> dict[str, Any] | None: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def delivery_mode(self) -> int | None: ...

    @property
    def expiration(self) -> str | None: ...


class BrokerSession(Protocol):
    """One connection with its confirm channel, as the services use it.

    Publishes are ``mandatory`` unless told otherwise and confirmed: the future (or callback)
    fails with PublishReturned (unroutable), PublishNacked, or BrokerUnavailable (the session
    ended first). Deliveries are settled through ``ack_tag``/``nack_tag`` (``Delivery.ack``
    calls them), which do nothing once the session is gone: the broker requeued those.
    """

    closed: asyncio.Event
    close_reason: BaseException | None

    @property
    def is_open(self) -> bool: ...

    async def close(self) -> None: ...

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: dict[str, Any] | None = None,
        persistent: bool = True,
        expiration_ms: int | None = None,
        mandatory: bool = True,
    ) -> asyncio.Future[None]: ...

    def publish_then(
        self,
        on_confirmed: OnConfirmed,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        app_id: str | None = None,
        mandatory: bool = True,
    ) -> None: ...

    def publish_and_forget(
        self, exchange: str, routing_key: str, body: bytes, **kw: Any
    ) -> None: ...

    def ack_tag(self, tag: int) -> None: ...

    def nack_tag(self, tag: int, requeue: bool) -> None: ...

    async def declare_queue(self, spec: QueueSpec) -> int: ...

    async def declare_all(
        self,
        exchanges: list[ExchangeSpec],
        queues: list[QueueSpec],
        bindings: list[BindingSpec],
    ) -> None: ...

    async def bind(self, spec: BindingSpec) -> None: ...

    async def unbind(self, spec: BindingSpec) -> None: ...

    async def set_prefetch(self, count: int) -> None: ...

    async def consume(
        self,
        queue: str,
        on_message: OnMessage,
        *,
        auto_ack: bool = False,
        exclusive: bool = False,
    ) -> str: ...

    async def cancel(self, consumer_tag: str) -> None: ...

    async def queue_depth(self, queue: str) -> int: ...

    async def queue_exists(self, queue: str) -> int | None: ...


# How a service gets a session: given the settings and a connection name, an open one.
Connect = Callable[["AmqpSettings", str], Awaitable[BrokerSession]]
