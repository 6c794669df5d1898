"""Keep a Session alive: connect, set up, and reconnect with capped jittered backoff.

pika has no automatic recovery. Recovery here is by exception type: BrokerUnavailable
(connection refused, lost, broker restarting) is retried forever with backoff; FatalBrokerError
(bad credentials, a queue declared with other arguments) stops the process with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, overload

from messaging.backoff import compute_backoff
from messaging.errors import BrokerUnavailable
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
    settings: AmqpSettings, exc: BaseException, attempt: int, delay_s: float
) -> str:
    """The one line logged per failed connection attempt: why, and what to check."""
    text = str(exc)
    found = _OS_REASON.findall(text)
    reason = found[-1] if found else text[:REASON_CHARS]
    url = settings.redacted_url()
    return (
        f"cannot reach the broker (attempt {attempt}: {reason}); is RabbitMQ running at {url}?"
        f" retrying in {delay_s:.1f}s"
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
        self.ready = asyncio.Event()
        self.connects = 0
        self._background: asyncio.Task[None] | None = None
        self._stop_background = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: stay connected. Raises FatalBrokerError on a fatal refusal."""
        attempt = 0
        while not stop.is_set():
            try:
                session = await self._connect(self._settings, self._name)
            except BrokerUnavailable as exc:
                delay = compute_backoff(attempt, cap_s=self._settings.reconnect_max_s)
                attempt += 1
                log.warning("%s", unreachable_text(self._settings, exc, attempt, delay))
                await sleep_unless(stop, delay)
                continue
            try:
                await self._setup(session)
            except BrokerUnavailable as exc:
                log.warning("setup interrupted: %s", exc)
                await session.close()
                await sleep_unless(
                    stop, compute_backoff(attempt, cap_s=self._settings.reconnect_max_s)
                )
                attempt += 1
                continue
            except BaseException:
                await session.close()
                raise
            attempt = 0  # reset only once setup worked, so a flapping broker still backs off
            self.connects += 1
            self.session = session
            self.ready.set()
            log.info("connected to %s as %r", self._settings.redacted_url(), self._name)
            stopped = asyncio.ensure_future(stop.wait())
            lost = asyncio.ensure_future(session.closed.wait())
            await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            lost.cancel()
            self.ready.clear()
            self.session = None
            if session.closed.is_set():
                log.warning("connection lost: %s", session.close_reason)
                if self._on_lost is not None:
                    self._on_lost()
            else:
                await session.close()

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
