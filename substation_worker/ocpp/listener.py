"""The CSMS listener: stations connect to ``ws[s]://<host>:<port>/ocpp/<station_id>``.

Refused at the handshake, before any OCPP frame: a path other than ``/ocpp/<station_id>``
(404), a client that does not offer the subprotocol ``ocpp2.0.1`` (400), more stations than
``MAX_STATIONS`` (503) and, with a stations file, a station that does not log in with HTTP
Basic as itself with its password (401; OCPP security profile 1, profile 2 over TLS). Without a
stations file any station id is accepted, which is why WorkerSettings then allows the listener
on a loopback address only.

A station that connects again replaces its older connection (closed at once): a real station
reconnects before it notices that its old link is dead.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import ssl as ssl_module
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from contracts import ocpp as ocpp_contract
from messaging.settings import is_loopback_host
from substation_worker.metrics import OcppMetrics
from substation_worker.ocpp.credentials import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    StationsFile,
    burn_verification,
    verify_password,
)
from substation_worker.ocpp.registry import StationRegistry
from substation_worker.ocpp.station import StationEvents, StationHandler

log = logging.getLogger(__name__)

SUBPROTOCOL = Subprotocol(ocpp_contract.SUBPROTOCOL)
_PATH = re.compile(
    rf"/ocpp/([{ocpp_contract.STATION_ID_CHARS}]{{1,{ocpp_contract.MAX_STATION_ID}}})"
)
MAX_STATIONS = 1_000
# The largest frame taken, bytes: OCPP 2.0.1 messages are a few kB; reports of many variables
# (NotifyReport) stay well below this.
MAX_FRAME_BYTES = 256 * 1024
# Password hashes verified at once (each ~0.3 s of CPU, off the event loop): a burst of
# handshakes queues here instead of taking every core; websockets' open_timeout (10 s) bounds
# the wait, and a handshake given up is taken off the queue.
MAX_VERIFYING = 2
REALM = 'Basic realm="smartgrid"'


def station_id_of(path: str) -> str | None:
    match = _PATH.fullmatch(path)
    return match.group(1) if match else None


class OcppListener:
    """``await start()``, then ``await stop()``: closes every station's connection and waits
    for their handlers to end."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: StationRegistry,
        metrics: OcppMetrics,
        events: StationEvents | None = None,
        *,
        stations: StationsFile | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        """``events``: where the stations' reports go (None: connections and status only);
        ``stations``: who may connect, with which password (None: anyone, unauthenticated);
        ``ssl``: serve wss:// (None: ws://)."""
        self.host, self.requested_port = host, port
        self.registry = registry
        self.metrics = metrics
        self.events = events  # the sessions on stations; None: connections and status only
        self.stations = stations
        self.ssl = ssl
        self._server: Server | None = None
        self._verifier: ThreadPoolExecutor | None = None
        self._connections: dict[str, ServerConnection] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when started with 0)."""
        if self._server is None:
            raise RuntimeError("listener not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def scheme(self) -> str:
        return "ws" if self.ssl is None else "wss"

    async def start(self) -> None:
        if self.stations is not None:
            self._verifier = ThreadPoolExecutor(MAX_VERIFYING, thread_name_prefix="ocpp-auth")
        try:
            self._server = await serve(
                self._serve_station,
                self.host,
                self.requested_port,
                subprotocols=[SUBPROTOCOL],
                process_request=self._check_request,
                max_size=MAX_FRAME_BYTES,
                ssl=self.ssl,
            )
        except BaseException:
            self._stop_verifier()
            raise
        security = (
            "any station id, unauthenticated"
            if self.stations is None
            else f"{len(self.stations.stations)} stations, HTTP Basic "
            + ("over TLS (security profile 2)" if self.ssl else "(security profile 1)")
        )
        log.info(
            "OCPP 2.0.1 listener on %s://%s:%d/ocpp/<station_id>: %s",
            self.scheme,
            self.host,
            self.port,
            security,
        )
        if passwords_in_clear(self.host, self.stations, self.ssl):
            log.warning(
                "OCPP security profile 1 on %s: station passwords cross the network in clear "
                "(HTTP Basic without TLS), fit for a trusted network only; set "
                "SMARTGRID_OCPP_TLS_CERT and SMARTGRID_OCPP_TLS_KEY for profile 2 (TLS)",
                self.host,
            )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()  # closes every connection (1001 going away)
        await server.wait_closed()  # and waits for their handlers
        await asyncio.gather(*self._closing, return_exceptions=True)
        self._stop_verifier()

    def _stop_verifier(self) -> None:
        verifier, self._verifier = self._verifier, None
        if verifier is not None:
            verifier.shutdown(wait=False, cancel_futures=True)

    async def _check_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        station_id = station_id_of(request.path)
        if station_id is None:
            return self._refuse(
                connection, "bad_path", HTTPStatus.NOT_FOUND, "connect to /ocpp/<station_id>\n"
            )
        # websockets would refuse it too (after this), but uncounted.
        if SUBPROTOCOL not in offered_subprotocols(request):
            return self._refuse(
                connection, "no_subprotocol", HTTPStatus.BAD_REQUEST, "offer ocpp2.0.1\n"
            )
        if self.registry.connected_count >= MAX_STATIONS:
            return self._refuse(
                connection, "full", HTTPStatus.SERVICE_UNAVAILABLE, "too many stations\n"
            )
        if self.stations is None:
            return None
        reason = await self._authenticate(self.stations, station_id, request)
        if reason is not None:
            log.info(
                "station %s refused from %s: %s", station_id, connection.remote_address, reason
            )
            # One answer whatever the reason: a client learns nothing of which ids exist.
            refused = self._refuse(
                connection, reason, HTTPStatus.UNAUTHORIZED, "authentication failed\n"
            )
            refused.headers["WWW-Authenticate"] = REALM
            return refused
        if self.registry.connected_count >= MAX_STATIONS:  # others got in while verifying
            return self._refuse(
                connection, "full", HTTPStatus.SERVICE_UNAVAILABLE, "too many stations\n"
            )
        return None

    async def _authenticate(
        self, stations: StationsFile, station_id: str, request: Request
    ) -> str | None:
        """None when the station logs in as itself with its password, else the refusal's
        reason. An unknown station costs what a known one does, so that time tells no ids."""
        credentials = basic_credentials(request.headers.get_all("Authorization"))
        if credentials is None:
            return "no_credentials"
        user, password = credentials
        if user != station_id:
            return "user_mismatch"
        entry = stations.station(station_id)
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            return "unknown_station" if entry is None else "bad_password"  # no hash computed
        loop = asyncio.get_running_loop()
        if entry is None:
            await loop.run_in_executor(self._verifier, burn_verification, stations.most_iterations)
            return "unknown_station"
        if await loop.run_in_executor(self._verifier, verify_password, entry, password):
            return None
        return "bad_password"

    def _refuse(
        self, connection: ServerConnection, reason: str, status: HTTPStatus, body: str
    ) -> Response:
        self.metrics.count_refused(reason)
        return connection.respond(status, body)

    async def _serve_station(self, connection: ServerConnection) -> None:
        station_id = station_id_of(connection.request.path if connection.request else "")
        if station_id is None or connection.subprotocol != SUBPROTOCOL:
            await connection.close(1002, "not an OCPP 2.0.1 station")  # the handshake checks
            return
        older = self._connections.get(station_id)
        token = self.registry.connect(station_id)
        self._connections[station_id] = connection
        if older is not None:
            log.info("station %s connected again: its older connection is closed", station_id)
            # Its handler ends on its own; this one does not wait for the close handshake.
            closing = asyncio.create_task(older.close(1000, "replaced"))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self._update_gauge()
        log.info("station %s connected from %s", station_id, connection.remote_address)
        handler = StationHandler(
            station_id, connection, self.registry, token, self._count, self.events
        )
        if self.events is not None:
            self.events.connected(handler)
        try:
            with contextlib.suppress(ConnectionClosed):
                async for frame in connection:
                    await handler.handle_frame(frame)
        finally:
            if self._connections.get(station_id) is connection:
                del self._connections[station_id]
            self.registry.disconnect(station_id, token)
            if self.events is not None:
                self.events.disconnected(handler)
            self._update_gauge()
            log.info("station %s disconnected", station_id)

    def _count(self, action: str, result: str) -> None:
        self.metrics.count_message(action, result)

    def _update_gauge(self) -> None:
        self.metrics.stations_connected.set(self.registry.connected_count)


def passwords_in_clear(
    host: str, stations: StationsFile | None, ssl: ssl_module.SSLContext | None
) -> bool:
    """Profile 1 off loopback: OCPP allows it on trusted networks only, so the start warns."""
    return stations is not None and ssl is None and not is_loopback_host(host)


def offered_subprotocols(request: Request) -> set[str]:
    return {
        token.strip()
        for header in request.headers.get_all("Sec-WebSocket-Protocol")
        for token in header.split(",")
    }


def basic_credentials(headers: list[str]) -> tuple[str, str] | None:
    """(user, password) of the one ``Authorization: Basic <base64 user:password>`` header
    (RFC 7617, UTF-8); None if absent, repeated or malformed."""
    if len(headers) != 1:
        return None
    scheme, _, token = headers[0].strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None
