"""Publishing a ChargeRequest: the small interface the HTTP layer needs, and its AMQP version.

The HTTP layer depends only on ``RequestPublisher`` so unit tests inject an in-memory fake.
``AmqpRequestPublisher`` keeps one long-lived connection (messaging.BrokerLink) on the same
asyncio loop as uvicorn. Confirms are pipelined by the shared Session: each request awaits only
its own confirm future, so any number of requests are in flight at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from contracts import ChargeEvent, ChargeRequest, EventKind
from gateway.settings import GatewaySettings
from messaging import BrokerLink, BrokerUnavailable, ConfirmTimeout, Session
from messaging.publishing import publish_event

log = logging.getLogger(__name__)

# How long stop() waits for the link to close its connection.
STOP_TIMEOUT_S = 10.0


@runtime_checkable
class RequestPublisher(Protocol):
    """What the HTTP layer needs from whatever puts requests on the broker."""

    @property
    def connected(self) -> bool:
        """True while a publish can be attempted (a broker connection is open)."""
        ...

    async def publish(self, request: ChargeRequest) -> None:
        """Return once the broker has confirmed ``request``.

        Raises:
            BrokerUnavailable: not connected, or the connection was lost before the confirm.
            PublishFailed: nacked (PublishNacked), unroutable (PublishReturned) or no confirm
                in time (ConfirmTimeout).
        """
        ...


@runtime_checkable
class ManagedPublisher(RequestPublisher, Protocol):
    """A publisher with a lifecycle; the app's lifespan starts and stops it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class AmqpRequestPublisher:
    """Publishes to ``<ns>.requests`` (fanout) with confirms, then emits an ``accepted`` event."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        connection_name: str = "smartgrid-gateway",
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._settings = settings
        self.topology = settings.topology()
        self._link = BrokerLink(settings, connection_name, self._setup)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_fatal = on_fatal
        # Set when the link gave up (e.g. refused credentials): the process should exit.
        self.fatal_error: BaseException | None = None

    @property
    def connected(self) -> bool:
        session = self._link.session
        return session is not None and session.is_open

    @property
    def broker_node(self) -> str | None:
        """host:port of the broker node it is connected to; None while disconnected."""
        return self._link.node if self.connected else None

    @property
    def connections_made(self) -> int:
        """Connections set up so far (more than one: it reconnected)."""
        return self._link.connects

    async def _setup(self, session: Session) -> None:
        topo = self.topology
        await session.declare_all(topo.exchanges(), topo.core_queues(), topo.core_bindings())

    async def start(self) -> None:
        """Start connecting in the background; the API serves (with 503s) until connected."""
        if self._task is not None:
            return
        self._stop.clear()
        self._task = asyncio.create_task(self._link.run(self._stop), name="gateway-broker-link")
        self._task.add_done_callback(self._link_ended)

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("broker link did not stop within %.0fs; cancelling", STOP_TIMEOUT_S)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        except Exception:
            pass  # already recorded and logged by _link_ended

    def _link_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("broker link stopped: %s", exc)
        self.fatal_error = exc
        if self.on_fatal is not None:
            self.on_fatal(exc)

    async def publish(self, request: ChargeRequest) -> None:
        session = self._link.session
        if session is None or not session.is_open:
            raise BrokerUnavailable("not connected to the broker")
        confirm = session.publish(
            self.topology.requests_exchange,
            "",
            request.model_dump_json().encode(),
            message_id=str(request.request_id),
        )
        timeout_s = self._settings.confirm_timeout_s
        # On timeout the future fails with ConfirmTimeout; the Session skips it when the late
        # confirm arrives. The message may still be stored: the client retries with the same
        # request_id, which downstream treats as a duplicate. (A timer on the future itself:
        # asyncio.wait_for costs a second future and its callbacks on every request.)
        timer = asyncio.get_running_loop().call_later(timeout_s, _expire, confirm, timeout_s)
        try:
            await confirm
        finally:
            timer.cancel()
        if not self._settings.accepted_events:
            return
        try:
            publish_event(
                session,
                self.topology,
                ChargeEvent(request_id=request.request_id, kind=EventKind.ACCEPTED),
            )
        except Exception:
            # Best effort: the request is safely stored; a lost event must not turn 202 into 500.
            log.debug("accepted event for %s not published", request.request_id, exc_info=True)


def _expire(confirm: asyncio.Future[None], timeout_s: float) -> None:
    if not confirm.done():
        confirm.set_exception(ConfirmTimeout(f"no broker confirm within {timeout_s:g}s"))
