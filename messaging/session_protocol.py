"""What a service may ask of its broker session: the narrow surface the dispatcher and the
worker use, so that they can be handed the real ``Session`` or an in-memory stand-in.

The services never open a connection themselves: they are given a ``Connect`` (by default
``Session.open``) and ``BrokerLink`` calls it for every (re)connection. Anything satisfying
``BrokerSession`` works: a test hands them an in-memory broker's sessions (``tests/fakes.py``)
and proves the services' rules without a RabbitMQ; the integration tests prove the wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from contracts.topology import BindingSpec, ExchangeSpec, QueueSpec
from messaging.errors import BrokerUnavailable

if TYPE_CHECKING:  # the Session module imports this one
    from messaging.session import Delivery
    from messaging.settings import AmqpSettings

log = logging.getLogger(__name__)

OnMessage = Callable[["Delivery"], None]
OnConfirmed = Callable[[BaseException | None], None]
# What waits for a publisher confirm: a future, or a callback given the error (None: confirmed).
Waiter = asyncio.Future[None] | OnConfirmed


def resolve(waiter: Waiter, exc: BaseException | None) -> None:
    """Tell ``waiter`` how its publish ended (``exc`` None: confirmed)."""
    if isinstance(waiter, asyncio.Future):
        if waiter.done():  # e.g. cancelled by a caller's timeout
            return
        if exc is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(exc)
        return
    try:
        waiter(exc)
    except Exception:
        # A bug in one callback must not break the confirms of the others (or pika's loop).
        log.exception("publisher-confirm callback failed")


def _log_unconfirmed(exc: BaseException | None) -> None:
    if exc is not None:
        log.debug("best-effort publish not confirmed: %s", exc)


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

    The real ``Session`` and the tests' in-memory one subclass it, so that what every session
    does the same way is written here once: the three ways to publish over one ``_publish``,
    the rule for a consumer callback that raises (over ``_consume``), ``declare_all``.
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
    ) -> asyncio.Future[None]:
        """Publish now; the future resolves when the broker confirms, fails on nack/return."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._publish(
            fut,
            exchange,
            routing_key,
            body,
            message_id=message_id,
            headers=headers,
            persistent=persistent,
            expiration_ms=expiration_ms,
            mandatory=mandatory,
        )
        return fut

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
    ) -> None:
        """``publish`` for hot paths: ``on_confirmed(None)`` once the broker confirmed, or
        ``on_confirmed(error)`` (PublishNacked, PublishReturned, BrokerUnavailable), called
        straight from the confirm, without a future and a trip through the event loop."""
        self._publish(
            on_confirmed,
            exchange,
            routing_key,
            body,
            message_id=message_id,
            app_id=app_id,
            mandatory=mandatory,
        )

    def publish_and_forget(self, exchange: str, routing_key: str, body: bytes, **kw: Any) -> None:
        """For best-effort messages (events, heartbeats): confirmed, but nobody waits."""
        with contextlib.suppress(BrokerUnavailable):
            self._publish(_log_unconfirmed, exchange, routing_key, body, mandatory=False, **kw)

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
        """Send one message and ``resolve`` its waiter once the broker confirmed (or failed)
        it; BrokerUnavailable, raised, if the session is not open."""
        ...

    def ack_tag(self, tag: int) -> None: ...

    def nack_tag(self, tag: int, requeue: bool) -> None: ...

    async def declare_exchange(self, spec: ExchangeSpec) -> None: ...

    async def declare_queue(self, spec: QueueSpec) -> int: ...

    async def declare_all(
        self,
        exchanges: list[ExchangeSpec],
        queues: list[QueueSpec],
        bindings: list[BindingSpec],
    ) -> None:
        for ex in exchanges:
            await self.declare_exchange(ex)
        for q in queues:
            await self.declare_queue(q)
        for b in bindings:
            await self.bind(b)

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
    ) -> str:
        """Start consuming; ``on_message`` runs on the event loop and must not block."""

        def handle(delivery: Delivery) -> None:
            try:
                on_message(delivery)
            except Exception:
                # A handler that cannot cope with a message would fail on every redelivery of
                # it too: reject it once, and the queue's dead-letter exchange takes it (with
                # x-death saying so), rather than requeue it until the delivery limit.
                log.exception("consumer callback failed; dead-lettering the delivery")
                if not delivery.settled:
                    delivery.nack(requeue=False)

        return await self._consume(queue, handle, auto_ack, exclusive)

    async def _consume(self, queue: str, handle: OnMessage, auto_ack: bool, exclusive: bool) -> str:
        """Deliver ``queue``'s messages to ``handle``; the consumer tag."""
        ...

    async def cancel(self, consumer_tag: str) -> None: ...

    async def queue_depth(self, queue: str) -> int: ...

    async def queue_exists(self, queue: str) -> int | None: ...


# How a service gets a session: given the settings and a connection name, an open one.
Connect = Callable[["AmqpSettings", str], Awaitable[BrokerSession]]
