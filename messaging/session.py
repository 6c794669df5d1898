"""One broker connection with one confirm-mode channel, driven by asyncio.

Every smartgrid process talks to RabbitMQ through this module; outside the ``messaging``
package nothing imports pika. Design points:

* pika's ``AsyncioConnection`` runs on the process's own event loop, so callbacks never block
  and heartbeats are never starved; nothing here sleeps.
* Publisher confirms are pipelined: ``publish`` returns a future per message, resolved when the
  broker's ``Basic.Ack`` (often ``multiple``) covers its delivery tag. Many publishes are in
  flight at once; no caller waits for another's confirm.
* Every publish is ``mandatory``: an unroutable message comes back as ``Basic.Return`` (which
  the broker sends before the ack for that message) and its future fails with PublishReturned.
* A delivery remembers the session it came from. Once that session is gone, its tag is
  meaningless (acking it on a new channel closes the channel with PRECONDITION_FAILED), so
  acks of stale deliveries are dropped: the broker has already requeued those messages.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.channel
import pika.connection
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.asyncio_connection import AsyncioConnection

from contracts.topology import BindingSpec, ExchangeSpec, QueueSpec
from messaging.addresses import NodeOrder
from messaging.errors import (
    BrokerUnavailable,
    FatalBrokerError,
    PublishNacked,
    PublishReturned,
)
from messaging.frames import PublishFrames
from messaging.nack_streak import NackStreaks
from messaging.session_protocol import (
    BrokerSession,
    MessageProperties,
    OnMessage,
    Waiter,
    resolve,
)
from messaging.settings import AmqpSettings
from messaging.tls import ssl_options

log = logging.getLogger(__name__)


def _not_a_probe_404(record: logging.LogRecord) -> bool:
    """pika warns of every channel the broker closes; a probe's 404 (``queue_exists`` of a
    missing queue) is an answer, not a problem, and a flood of heartbeats could make thousands."""
    return "Channel.Close (404)" not in record.getMessage()


logging.getLogger("pika.channel").addFilter(_not_a_probe_404)

# AMQP reply codes that retrying will not fix: access refused, not found, precondition failed,
# not allowed. A channel closed with one of these during setup is a configuration error.
_FATAL_REPLY_CODES = {403, 404, 406, 530}


@dataclass(slots=True)
class Delivery:
    """A message handed to a consumer; ack/nack only while its session lives."""

    session: BrokerSession
    delivery_tag: int
    redelivered: bool
    routing_key: str
    exchange: str
    properties: MessageProperties
    body: bytes
    settled: bool = field(default=False)

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})

    @property
    def user_id(self) -> str | None:
        """The publisher's user as the broker validated it (it refuses a ``user_id`` other
        than the publishing connection's own user), if the publisher set one."""
        return self.properties.user_id

    @property
    def delivery_count(self) -> int:
        """How often a quorum queue delivered it before (``x-delivery-count``), 0 if never."""
        return int(self.headers.get("x-delivery-count", 0) or 0)

    def ack(self) -> None:
        if self._settle():
            self.session.ack_tag(self.delivery_tag)

    def nack(self, *, requeue: bool) -> None:
        if self._settle():
            self.session.nack_tag(self.delivery_tag, requeue)

    def _settle(self) -> bool:
        """Mark settled; False if there is nothing to send (already settled, or stale)."""
        if self.settled:
            return False
        self.settled = True
        if not self.session.is_open:
            # Stale tag from a dead channel: the broker requeued the message already.
            log.debug("dropping settle of stale delivery %s", self.delivery_tag)
            return False
        return True


class _BatchingConnection(AsyncioConnection):
    """pika's AsyncioConnection, sending what one event-loop turn wrote in one piece.

    pika hands the transport every frame on its own (a publish is three: method, header, body)
    and the transport makes one ``send()`` per frame. Here the frames written during one turn of
    the loop are joined and handed over together at the end of it: one system call for a whole
    batch of publishes and acks, in the same order. Nothing waits longer than that turn.
    """

    def __init__(
        self,
        parameters: pika.connection.Parameters,
        *,
        on_open_callback: Callable[[Any], None],
        on_open_error_callback: Callable[[Any, BaseException], None],
        on_close_callback: Callable[[Any, BaseException], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._out: list[bytes] = []
        self._out_loop = loop
        super().__init__(
            parameters,
            on_open_callback=on_open_callback,
            on_open_error_callback=on_open_error_callback,
            on_close_callback=on_close_callback,
            custom_ioloop=loop,
        )

    def _adapter_emit_data(self, data: bytes) -> None:
        if not self._out:
            self._out_loop.call_soon(self._emit_batch)
        self._out.append(data)

    def emit_frames(self, data: bytes, frames: int) -> None:
        """Frames marshalled elsewhere (``PublishFrames``), counted as pika counts its own."""
        # pika's own counters (set in its _init_connection_state; the stubs lack them).
        self.bytes_sent += len(data)  # type: ignore[attr-defined]
        self.frames_sent += frames  # type: ignore[attr-defined]
        self._adapter_emit_data(data)

    def _emit_batch(self) -> None:
        data = b"".join(self._out)
        self._out.clear()
        transport = getattr(self, "_transport", None)  # None once the stream is gone
        if data and transport is not None:
            transport.write(data)


class Session(BrokerSession):
    """An open connection + confirm channel. Create with ``await Session.open(...)``."""

    def __init__(self, connection: _BatchingConnection, channel: pika.channel.Channel) -> None:
        self.connection = connection
        self.channel = channel
        self._frames = PublishFrames(channel.channel_number)
        # What one body frame holds, as pika computes it from the negotiated frame_max.
        self._body_max = connection.params.frame_max - (
            pika.spec.FRAME_HEADER_SIZE + pika.spec.FRAME_END_SIZE
        )
        self.closed = asyncio.Event()
        self.close_reason: BaseException | None = None
        # The broker node this connection is to, host:port ("" until open() sets it).
        self.node = ""
        self._next_tag = 1
        # Delivery tag -> the waiter, message id and destination (exchange/routing key).
        self._unconfirmed: dict[int, tuple[Waiter, str | None, str]] = {}
        self._returned: set[str] = set()
        self._nacks = NackStreaks()
        # Manual-ack deliveries not yet settled on the wire, in delivery order; those settled
        # out of order (sent on their own); acks waiting for the end of this loop turn.
        self._unsettled: deque[int] = deque()
        self._settled_alone: set[int] = set()
        self._acks: set[int] = set()
        # A second channel for passive declares: one of a missing queue closes its channel.
        self._probe: pika.channel.Channel | None = None
        self._probe_lock = asyncio.Lock()
        self._probe_waiting: asyncio.Future[Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, settings: AmqpSettings, connection_name: str) -> Session:
        """Connect to the broker of ``settings``; of several addresses, to the first that
        answers, tried in a shuffled order (a BrokerLink keeps its own order and hands this
        one address at a time). FatalBrokerError only if every address refused us."""
        addresses = settings.amqp_addresses()
        if len(addresses) == 1:
            return await cls._open_one(settings, connection_name)
        refused: list[FatalBrokerError] = []
        failures: list[str] = []
        for index in NodeOrder(len(addresses)).round():
            address = addresses[index]
            try:
                return await cls._open_one(settings.for_address(address), connection_name)
            except FatalBrokerError as exc:
                log.error("broker node %s refused us: %s", address.node, exc)
                refused.append(exc)
                failures.append(f"{address.node} refused us")
            except BrokerUnavailable as exc:
                failures.append(f"{address.node}: {exc}")
        if len(refused) == len(addresses):
            raise refused[-1]
        raise BrokerUnavailable("no broker node answered: " + "; ".join(failures))

    @classmethod
    async def _open_one(cls, settings: AmqpSettings, connection_name: str) -> Session:
        loop = asyncio.get_running_loop()
        params = pika.URLParameters(settings.amqp_url.get_secret_value())
        params.heartbeat = settings.amqp_heartbeat_s
        params.blocked_connection_timeout = settings.blocked_connection_timeout_s
        params.socket_timeout = settings.connect_timeout_s
        params.stack_timeout = settings.connect_timeout_s * 2
        params.connection_attempts = 1
        params.client_properties = {"connection_name": connection_name, "product": "smartgrid"}
        params.ssl_options = ssl_options(settings)

        opened: asyncio.Future[AsyncioConnection] = loop.create_future()
        holder: dict[str, Session] = {}

        def on_open(conn: Any) -> None:
            if not opened.done():
                opened.set_result(conn)

        def on_open_error(_conn: Any, exc: BaseException) -> None:
            if not opened.done():
                opened.set_exception(_classify_open_error(exc, settings))

        def on_close(_conn: Any, exc: BaseException) -> None:
            session = holder.get("s")
            if session is not None:
                session._on_closed(exc)
            elif not opened.done():
                opened.set_exception(BrokerUnavailable(f"connection closed while opening: {exc}"))

        conn = _BatchingConnection(
            params,
            on_open_callback=on_open,
            on_open_error_callback=on_open_error,
            on_close_callback=on_close,
            loop=loop,
        )
        try:
            await asyncio.wait_for(opened, settings.connect_timeout_s * 2)
        except TimeoutError as exc:
            _close_quietly(conn)
            raise BrokerUnavailable(
                f"no answer from {settings.redacted_url()} in {settings.connect_timeout_s * 2}s"
            ) from exc

        channel_ready: asyncio.Future[pika.channel.Channel] = loop.create_future()
        conn.channel(on_open_callback=channel_ready.set_result)
        try:
            channel = await asyncio.wait_for(channel_ready, settings.connect_timeout_s)
        except TimeoutError as exc:
            _close_quietly(conn)
            raise BrokerUnavailable("channel did not open in time") from exc

        session = cls(conn, channel)
        session.node = settings.amqp_addresses()[0].node
        holder["s"] = session
        channel.add_on_close_callback(session._on_channel_closed)
        channel.add_on_return_callback(session._on_return)
        confirmed: asyncio.Future[None] = loop.create_future()
        channel.confirm_delivery(
            session._on_confirm, callback=lambda _f: confirmed.set_result(None)
        )
        try:
            await asyncio.wait_for(session._await(confirmed), settings.connect_timeout_s)
        except TimeoutError as exc:
            _close_quietly(conn)
            raise BrokerUnavailable("confirm mode was not acknowledged in time") from exc
        return session

    @property
    def is_open(self) -> bool:
        return not self.closed.is_set() and self.channel.is_open

    async def close(self) -> None:
        self._flush_acks()  # before the channel closes, or they would be lost with it
        if self.connection.is_open:
            self.connection.close()
        try:
            await asyncio.wait_for(self.closed.wait(), 5)
        except TimeoutError:
            log.warning("connection did not close within 5 s")

    def _on_channel_closed(self, _channel: Any, exc: BaseException) -> None:
        # One channel per connection: a closed channel ends the session.
        if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
            log.warning("broker closed the channel: %s %s", exc.reply_code, exc.reply_text)
        self.close_reason = self.close_reason or exc
        if self.connection.is_open:
            self.connection.close()
        else:
            self._on_closed(exc)

    def _on_closed(self, exc: BaseException) -> None:
        if self.closed.is_set():
            return
        self.close_reason = self.close_reason or exc
        self.closed.set()
        failure = BrokerUnavailable(f"connection lost before the broker confirmed: {exc}")
        pending, self._unconfirmed = self._unconfirmed, {}
        for waiter, _, _ in pending.values():
            resolve(waiter, failure)
            if isinstance(waiter, asyncio.Future) and not waiter.cancelled():
                waiter.exception()  # a caller that gave up must not leave it "never retrieved"

    # -- publishing ------------------------------------------------------------------------

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
        if not self.is_open:
            raise BrokerUnavailable("not connected to the broker")
        frames = None
        if headers is None and expiration_ms is None and user_id is None:
            frames = self._frames.encode(
                exchange,
                routing_key,
                body,
                mandatory=mandatory,
                persistent=persistent,
                message_id=message_id,
                app_id=app_id,
                body_max=self._body_max,
            )
        tag = self._next_tag
        self._next_tag += 1
        self._unconfirmed[tag] = (waiter, message_id, f"{exchange}/{routing_key}")
        if frames is not None:
            self.connection.emit_frames(frames, 3)
            return
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2 if persistent else 1,
            message_id=message_id,
            app_id=app_id,
            headers=headers,
            expiration=str(expiration_ms) if expiration_ms is not None else None,
            user_id=user_id,
        )
        self.channel.basic_publish(exchange, routing_key, body, props, mandatory=mandatory)

    def _on_return(self, _ch: Any, method: Any, props: Any, _body: bytes) -> None:
        if props.message_id:
            self._returned.add(props.message_id)
        log.debug("returned by broker: %s %s", method.reply_code, method.reply_text)

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        tag = method.delivery_tag
        if method.multiple:
            # The dict is in publish (= tag) order: the covered tags are a prefix of it.
            tags = list(itertools.takewhile(lambda t: t <= tag, self._unconfirmed))
        else:
            tags = [tag] if tag in self._unconfirmed else []
        nacked_to: dict[str, int] = {}
        for t in tags:
            waiter, message_id, destination = self._unconfirmed.pop(t)
            if nacked:
                nacked_to[destination] = nacked_to.get(destination, 0) + 1
                resolve(waiter, PublishNacked(f"broker nacked delivery tag {t}"))
                continue
            if self._nacks:
                self._nacks.acked(destination)
            if message_id is not None and message_id in self._returned:
                self._returned.discard(message_id)
                resolve(waiter, PublishReturned(f"message {message_id} was unroutable"))
            else:
                resolve(waiter, None)
        if not nacked_to:
            return
        now = time.monotonic()
        for destination, count in nacked_to.items():
            if self._nacks.nacked(destination, count, now) and self.connection.is_open:
                # The callers of the nacked publishes retry; on this channel they never would
                # succeed (messaging.nack_streak). Closing ends the session: the link reconnects.
                reason = f"{self._nacks.describe(destination, now)}: giving up this channel"
                log.warning("%s (reconnecting)", reason)
                self.close_reason = BrokerUnavailable(reason)
                self._flush_acks()  # what was settled meanwhile, not redelivered for nothing
                self.connection.close()
                return

    # -- settling deliveries ---------------------------------------------------------------

    def ack_tag(self, tag: int) -> None:
        """Ack at the end of this loop turn, together with the others acked meanwhile.

        The acked deliveries that form a prefix of the unsettled ones (in delivery order) go as
        one ``Basic.Ack`` with ``multiple``; the others on their own. Acks never wait for a
        delivery still held: they are only coalesced within one turn of the loop.
        """
        if not self._acks:
            asyncio.get_running_loop().call_soon(self._flush_acks)
        self._acks.add(tag)

    def nack_tag(self, tag: int, requeue: bool) -> None:
        # At once and on its own: a later multiple ack must not cover it.
        self._settled_alone.add(tag)
        self.channel.basic_nack(tag, requeue=requeue)

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, set()
        if not acks or not self.is_open:
            return
        last, covered = 0, 0
        unsettled = self._unsettled
        while unsettled:
            head = unsettled[0]
            if head in acks:
                acks.discard(head)
                last = head
                covered += 1
            elif head in self._settled_alone:
                self._settled_alone.discard(head)
            else:
                break
            unsettled.popleft()
        if last:
            self.channel.basic_ack(last, multiple=covered > 1)
        for tag in sorted(acks):
            self._settled_alone.add(tag)
            self.channel.basic_ack(tag)

    # -- topology and consuming ------------------------------------------------------------

    async def _await(self, fut: asyncio.Future[Any]) -> Any:
        """Wait for a broker reply, or fail if the session ends first (e.g. channel error)."""
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            done, _ = await asyncio.wait({fut, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if fut in done:
            return fut.result()
        fut.cancel()
        reason = self.close_reason
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and (
            reason.reply_code in _FATAL_REPLY_CODES
        ):
            raise FatalBrokerError(f"broker refused: {reason.reply_code} {reason.reply_text}")
        raise BrokerUnavailable(f"session closed: {reason}")

    def _rpc(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(frame: Any) -> None:
            if not fut.done():
                fut.set_result(frame)

        if not self.is_open:
            fut.set_exception(BrokerUnavailable("not connected to the broker"))
            return fut
        method(*args, callback=done, **kwargs)
        return fut

    async def declare_exchange(self, spec: ExchangeSpec) -> None:
        await self._await(
            self._rpc(
                self.channel.exchange_declare,
                exchange=spec.name,
                exchange_type=spec.type,
                durable=spec.durable,
            )
        )

    async def declare_queue(self, spec: QueueSpec) -> int:
        """Declare (idempotently) and return the number of ready messages in it."""
        frame = await self._await(
            self._rpc(
                self.channel.queue_declare,
                queue=spec.name,
                durable=spec.durable,
                exclusive=spec.exclusive,
                auto_delete=spec.auto_delete,
                arguments=spec.arguments or None,
            )
        )
        return int(frame.method.message_count)

    async def queue_depth(self, queue: str) -> int:
        """Ready messages in an existing queue (passive declare)."""
        frame = await self._await(self._rpc(self.channel.queue_declare, queue=queue, passive=True))
        return int(frame.method.message_count)

    async def queue_exists(self, queue: str) -> int | None:
        """Ready messages in ``queue``, or None if there is no such queue; creates nothing.

        The passive declare runs on a probe channel of its own: for a missing queue the broker
        closes the channel it was asked on (404), and this session's channel must not end.
        The probe channel is opened again when next needed; probes run one at a time.
        """
        async with self._probe_lock:
            channel = await self._probe_channel()
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._probe_waiting = fut

            def done(frame: Any) -> None:
                if not fut.done():
                    fut.set_result(frame)

            try:
                channel.queue_declare(queue, passive=True, callback=done)
                frame = await self._await(fut)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return None
                raise BrokerUnavailable(f"probe of {queue} refused: {exc}") from exc
            finally:
                self._probe_waiting = None
            return int(frame.method.message_count)

    async def _probe_channel(self) -> pika.channel.Channel:
        probe = self._probe
        if probe is not None and probe.is_open:
            return probe
        if not self.is_open:
            raise BrokerUnavailable("not connected to the broker")
        opened: asyncio.Future[pika.channel.Channel] = asyncio.get_running_loop().create_future()

        def on_open(ch: pika.channel.Channel) -> None:
            if not opened.done():
                opened.set_result(ch)

        probe = self.connection.channel(on_open_callback=on_open)
        probe.add_on_close_callback(self._on_probe_closed)
        self._probe = probe
        await self._await(opened)
        return probe

    def _on_probe_closed(self, channel: Any, exc: BaseException) -> None:
        if self._probe is channel:
            self._probe = None
        waiting = self._probe_waiting
        if waiting is not None and not waiting.done():
            waiting.set_exception(exc)

    async def bind(self, spec: BindingSpec) -> None:
        await self._binding(self.channel.queue_bind, spec)

    async def unbind(self, spec: BindingSpec) -> None:
        await self._binding(self.channel.queue_unbind, spec)

    async def _binding(self, method: Callable[..., Any], spec: BindingSpec) -> None:
        # Explicit "": pika's None means "the queue's name", which is what the management UI
        # would then show as the key of every fanout binding.
        await self._await(
            self._rpc(
                method, queue=spec.queue, exchange=spec.exchange, routing_key=spec.routing_key
            )
        )

    async def delete_queue(self, queue: str) -> None:
        await self._await(self._rpc(self.channel.queue_delete, queue=queue))

    async def delete_exchange(self, exchange: str) -> None:
        await self._await(self._rpc(self.channel.exchange_delete, exchange=exchange))

    async def set_prefetch(self, count: int) -> None:
        """Per-consumer limit for consumers started after this call (never ``global``)."""
        await self._await(self._rpc(self.channel.basic_qos, prefetch_count=count))

    async def _consume(self, queue: str, handle: OnMessage, auto_ack: bool, exclusive: bool) -> str:
        def deliver(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            if not auto_ack:
                self._unsettled.append(method.delivery_tag)
            handle(
                Delivery(
                    self,
                    method.delivery_tag,
                    method.redelivered,
                    method.routing_key,
                    method.exchange,
                    props,
                    body,
                    settled=auto_ack,
                )
            )

        frame = await self._await(
            self._rpc(
                self.channel.basic_consume,
                queue,
                deliver,
                auto_ack=auto_ack,
                exclusive=exclusive,
            )
        )
        return str(frame.method.consumer_tag)

    async def cancel(self, consumer_tag: str) -> None:
        await self._await(self._rpc(self.channel.basic_cancel, consumer_tag))


def _close_quietly(conn: AsyncioConnection) -> None:
    try:
        # pika has no is_opening; close() is valid while opening or open (aborts the handshake).
        if not (conn.is_closing or conn.is_closed):
            conn.close()
    except pika.exceptions.AMQPError:
        pass


def _classify_open_error(exc: BaseException, settings: AmqpSettings) -> Exception:
    where = settings.redacted_url()
    if isinstance(
        exc, pika.exceptions.ProbableAuthenticationError | pika.exceptions.AuthenticationError
    ):
        return FatalBrokerError(f"{where} refused the credentials: {exc}")
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return FatalBrokerError(f"{where} refused access to the vhost: {exc}")
    if isinstance(exc, pika.exceptions.ConnectionClosedByBroker) and exc.reply_code in (403, 530):
        return FatalBrokerError(f"{where} refused the connection: {exc.reply_text}")
    bad_cert = next((e for e in _causes(exc) if isinstance(e, ssl.SSLCertVerificationError)), None)
    if bad_cert is not None:
        # The broker's certificate is not the one we trust: retrying will not change that.
        return FatalBrokerError(f"{where}: TLS {bad_cert.verify_message or bad_cert}")
    return BrokerUnavailable(f"cannot connect to {where}: {str(exc) or repr(exc)}")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: pika nests the real error in its connection workflow's."""
    found: list[BaseException] = []
    todo = [exc]
    while todo and len(found) < 20:
        e = todo.pop()
        found.append(e)
        nested = [*(getattr(e, "exceptions", None) or []), getattr(e, "exception", None)]
        nested += [*e.args, e.__cause__, e.__context__]
        todo += [n for n in nested if isinstance(n, BaseException) and n not in found]
    return found
