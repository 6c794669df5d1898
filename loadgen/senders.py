"""The two ways loadgen submits a ChargeRequest: the gateway's HTTP API, or AMQP directly.

Both answer with a short status: ``"202"`` (HTTP) or ``"confirmed"`` (AMQP) when the broker
took the request (``state.ACCEPTED_STATUSES``), else the HTTP status or the error's name.
Neither raises for a refusal: a refused request is a result to count, not a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Any, Protocol
from uuid import UUID

import httpx

from contracts import ChargeRequest, Topology
from loadgen.bounded import BROKER_TIMEOUT_S, within
from loadgen.state import CONFIRMED
from messaging import AmqpSettings, BrokerLink, MessagingError, Session

CHARGE_REQUESTS_PATH = "/v1/charge-requests"
CONNECT_TIMEOUT_S = 10.0
# How long a gateway that refuses connections is given to start listening, and the pause
# between tries.
GATEWAY_START_S = 10.0
GATEWAY_RETRY_S = 0.25


class IngressUnreachable(Exception):
    """The gateway (or broker) loadgen should send to does not answer; the message says how."""


class Sender(Protocol):
    """An async context manager (connects on enter, fails with IngressUnreachable) that sends."""

    via: str

    async def __aenter__(self) -> Sender: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def send(self, request_id: UUID, body: dict[str, Any]) -> str:
        """Submit one request; return its status (see the module docstring)."""
        ...


class HttpSender:
    """POSTs to the gateway with at most ``concurrency`` connections; the rest wait for one."""

    via = "http"

    def __init__(
        self, gateway_url: str, *, concurrency: int, timeout_s: float, api_key: str | None = None
    ) -> None:
        self.base_url = gateway_url.rstrip("/")
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        headers = {"X-API-Key": api_key} if api_key else None
        self._client = httpx.AsyncClient(limits=limits, timeout=timeout_s, headers=headers)

    async def __aenter__(self) -> HttpSender:
        await self.check()
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        await self._client.aclose()

    async def check(self) -> None:
        """Fail early and clearly if no gateway listens at ``base_url``.

        A refused connection is tried again for ``GATEWAY_START_S``: a gateway started a moment
        before loadgen (as in the README's example) takes seconds to listen."""
        try:
            r = await self._healthz()
        except httpx.HTTPError as exc:
            await self._client.aclose()
            raise IngressUnreachable(
                f"cannot reach the gateway at {self.base_url} ({type(exc).__name__}): start one "
                "(`smartgrid-gateway`) or point --gateway-url / SMARTGRID_GATEWAY_URL at it"
            ) from exc
        if r.status_code not in (200, 503):  # 503: up, but its broker is away for now
            await self._client.aclose()
            raise IngressUnreachable(
                f"{self.base_url}/healthz answered {r.status_code}: is that a smartgrid gateway?"
            )

    async def _healthz(self) -> httpx.Response:
        deadline = time.monotonic() + GATEWAY_START_S
        while True:
            try:
                return await self._client.get(f"{self.base_url}/healthz", timeout=CONNECT_TIMEOUT_S)
            except httpx.ConnectError:
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(GATEWAY_RETRY_S)

    async def send(self, request_id: UUID, body: dict[str, Any]) -> str:
        try:
            response = await self._client.post(f"{self.base_url}{CHARGE_REQUESTS_PATH}", json=body)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return str(response.status_code)


class AmqpSender:
    """Publishes to ``<ns>.requests`` with pipelined publisher confirms, as any client may.

    It keeps its connection up with the same reconnect loop as the services; a request sent
    while disconnected is counted as refused (``BrokerUnavailable``), as a 503 would be.
    """

    via = "amqp"

    def __init__(
        self,
        settings: AmqpSettings,
        topology: Topology,
        *,
        timeout_s: float,
        call_timeout_s: float = BROKER_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.timeout_s = timeout_s
        self.call_timeout_s = call_timeout_s
        self._link = BrokerLink(settings, "smartgrid-loadgen-publisher", self._setup)

    async def _setup(self, session: Session) -> None:
        t = self.topology
        declare = session.declare_all(t.exchanges(), t.core_queues(), t.core_bindings())
        await within(declare, self.call_timeout_s, "declaring the topology")

    async def __aenter__(self) -> AmqpSender:
        try:
            await self._link.start(CONNECT_TIMEOUT_S)
        except MessagingError as exc:
            raise IngressUnreachable(f"cannot publish: {exc}") from exc
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        with contextlib.suppress(MessagingError):
            await self._link.stop(self.call_timeout_s)

    async def send(self, request_id: UUID, body: dict[str, Any]) -> str:
        session = self._link.session
        if session is None or not session.is_open:
            return "BrokerUnavailable"
        payload = ChargeRequest.model_validate(body).model_dump_json().encode()
        try:
            confirm = session.publish(
                self.topology.requests_exchange, "", payload, message_id=str(request_id)
            )
            await asyncio.wait_for(confirm, self.timeout_s)
        except TimeoutError:
            return "ConfirmTimeout"
        except MessagingError as exc:
            return type(exc).__name__
        return CONFIRMED
