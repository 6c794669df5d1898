"""Keep a Session alive: connect, set up, and reconnect with capped jittered backoff.

pika has no automatic recovery. Recovery here is by exception type: BrokerUnavailable
(connection refused, lost, broker restarting) is retried forever with backoff; FatalBrokerError
(bad credentials, a queue declared with other arguments) stops the process with its reason.

With several broker addresses, one "attempt" is a round over all of them in this process's
shuffled order (messaging.addresses.NodeOrder), with no wait between addresses and the backoff
between rounds; after a loss the next round starts at the next address. A refusal at connect
(credentials, vhost, TLS certificate) stops the process only if every address refused in the
same round; a fatal error in setup (the topology, the same on every node) stops it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, overload

from messaging.addresses import BrokerAddress, NodeOrder
from messaging.backoff import compute_backoff
from messaging.errors import BrokerUnavailable, FatalBrokerError
from messaging.session import Session
from messaging.session_protocol import BrokerSession
from messaging.settings import AmqpSettings
from messaging.waiting import sleep_unless

log = logging.getLogger(__name__)

S = TypeVar("S", bound=BrokerSession)

# The OS's reason inside pika's nested connection errors, e.g.
# "ConnectionRefusedError(111, 'Connection refused')" -> "Connection refused".
_OS_REASON = re.compile(r"\w+Error\(\d+, '([^']+)'\)")
REASON_CHARS = 160


def unreachable_text(
    settings: AmqpSettings,
    exc: BaseException,
    attempt: int,
    delay_s: float,
    *,
    address: BrokerAddress | None = None,
    next_node: str | None = None,
) -> str:
    """The one line logged per failed connection attempt: why, and what to check; then either
    the next node tried at once (``next_node``, a round over several addresses) or the wait."""
    text = str(exc)
    found = _OS_REASON.findall(text)
    reason = found[-1] if found else text[:REASON_CHARS]
    url = address.redacted if address is not None else settings.redacted_url()
    then = f"trying {next_node} next" if next_node else f"retrying in {delay_s:.1f}s"
    return (
        f"cannot reach the broker (attempt {attempt}: {reason}); is RabbitMQ running at {url}?"
        f" {then}"
    )


class BrokerLink(Generic[S]):
    """Owns the current session. ``session`` is None while disconnected. ``connect`` opens
    each one (``Session.open``: a RabbitMQ connection; a test may give an in-memory broker's)."""

    @overload
    def __init__(
        self: BrokerLink[Session],
        settings: AmqpSettings,
        connection_name: str,
        setup: Callable[[Session], Awaitable[None]],
        on_lost: Callable[[], None] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        settings: AmqpSettings,
        connection_name: str,
        setup: Callable[[S], Awaitable[None]],
        on_lost: Callable[[], None] | None,
        connect: Callable[[AmqpSettings, str], Awaitable[S]],
    ) -> None: ...

    def __init__(
        self,
        settings: AmqpSettings,
        connection_name: str,
        setup: Callable[[Any], Awaitable[None]],
        on_lost: Callable[[], None] | None = None,
        connect: Callable[[AmqpSettings, str], Awaitable[Any]] = Session.open,
    ) -> None:
        self._settings = settings
        self._name = connection_name
        self._setup: Callable[[S], Awaitable[None]] = setup
        self._on_lost = on_lost
        self._connect: Callable[[AmqpSettings, str], Awaitable[S]] = connect
        self.session: S | None = None
        # host:port of the broker node ``session`` is connected to; None while disconnected.
        self.node: str | None = None
        self._addresses = settings.amqp_addresses()
        self._order = NodeOrder(len(self._addresses))
        self.ready = asyncio.Event()
        self.connects = 0
        self._background: asyncio.Task[None] | None = None
        self._stop_background = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: stay connected. Raises FatalBrokerError on a fatal refusal
        (of several addresses: when every one refused us in the same round)."""
        attempt = 0
        while not stop.is_set():
            found = await self._connect_round(stop, attempt)
            if found is None:
                attempt += 1
                continue
            session, index = found
            attempt = 0  # reset only once setup worked, so a flapping broker still backs off
            self.connects += 1
            self.session = session
            self.node = self._addresses[index].node
            self.ready.set()
            log.info("connected to %s as %r", self._connected_to(index), self._name)
            stopped = asyncio.ensure_future(stop.wait())
            lost = asyncio.ensure_future(session.closed.wait())
            await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            lost.cancel()
            self.ready.clear()
            self.session = None
            self.node = None
            if session.closed.is_set():
                self._order.lost(index)  # the next round starts at another node
                log.warning("connection lost: %s", session.close_reason)
                if self._on_lost is not None:
                    self._on_lost()
            else:
                await session.close()

    async def _connect_round(self, stop: asyncio.Event, attempt: int) -> tuple[S, int] | None:
        """Try each address once, in this process's order: the first that connects and is set
        up, with its index. None when none did (after the backoff for ``attempt``, or at
        ``stop``). One address is today's single attempt: the same logs, waits and errors."""
        delay = compute_backoff(attempt, cap_s=self._settings.reconnect_max_s)
        order = self._order.round()
        several = len(order) > 1
        refused: list[FatalBrokerError] = []
        for position, index in enumerate(order):
            if stop.is_set():
                return None
            address = self._addresses[index]
            following = order[position + 1] if position + 1 < len(order) else None
            next_node = self._addresses[following].node if following is not None else None
            try:
                session = await self._connect(self._settings.for_address(address), self._name)
            except FatalBrokerError as exc:
                if not several:
                    raise
                # A node that refuses our credentials or vhost is misconfigured, but another
                # may still take us; only a refusal by every node stops the process.
                log.error("broker node %s refused us: %s", address.node, exc)
                refused.append(exc)
                continue
            except BrokerUnavailable as exc:
                log.warning(
                    "%s",
                    unreachable_text(
                        self._settings,
                        exc,
                        attempt + 1,
                        delay,
                        address=address,
                        next_node=next_node,
                    ),
                )
                continue
            try:
                await self._setup(session)
            except BrokerUnavailable as exc:
                where = f" on {address.node}" if several else ""
                log.warning("setup interrupted%s: %s", where, exc)
                await session.close()
                continue
            except BaseException:
                await session.close()
                raise
            return session, index
        if len(refused) == len(order):
            raise refused[-1]
        await sleep_unless(stop, delay)
        return None

    def _connected_to(self, index: int) -> str:
        if len(self._addresses) == 1:
            return self._settings.redacted_url()
        return f"node {self._addresses[index].node} ({self._addresses[index].redacted})"

    async def start(self, within_s: float) -> None:
        """Run in the background; return once connected and set up.

        Raises BrokerUnavailable if that takes longer than ``within_s`` (the link is stopped
        then), or what ended the link (FatalBrokerError) if it gave up first.
        """
        self._stop_background = asyncio.Event()
        self._background = asyncio.create_task(self.run(self._stop_background))
        ready = asyncio.create_task(self.ready.wait())
        done, _ = await asyncio.wait(
            {self._background, ready}, timeout=within_s, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            await self.stop()  # re-raises a fatal refusal, if that is what ended the link
            raise BrokerUnavailable(
                f"no usable connection to {self._settings.redacted_url()} within {within_s:.0f}s"
            )

    async def stop(self, within_s: float = 10.0) -> None:
        """Stop what ``start`` started; re-raises what ended the link, if anything did."""
        task, self._background = self._background, None
        if task is None:
            return
        self._stop_background.set()
        with contextlib.suppress(TimeoutError):  # wait_for cancels it on timeout
            await asyncio.wait_for(task, within_s)

    async def wait_ready(self, within_s: float) -> S:
        await asyncio.wait_for(self.ready.wait(), within_s)
        assert self.session is not None
        return self.session
