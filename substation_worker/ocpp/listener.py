"""The CSMS listener: stations connect to ``ws://<host>:<port>/ocpp/<station_id>``.

Refused at the handshake, before any OCPP frame: a path other than ``/ocpp/<station_id>``
(404), a client that does not offer the subprotocol ``ocpp2.0.1`` (400), more stations than
``MAX_STATIONS`` (503). Without a stations file (not supported yet) any station id is accepted,
which is why WorkerSettings allows the listener on a loopback address only.

A station that connects again replaces its older connection (closed at once): a real station
reconnects before it notices that its old link is dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from contracts import ocpp as ocpp_contract
from substation_worker.metrics import OcppMetrics
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
    ) -> None:
        self.host, self.requested_port = host, port
        self.registry = registry
        self.metrics = metrics
        self.events = events  # the sessions on stations; None: connections and status only
        self._server: Server | None = None
        self._connections: dict[str, ServerConnection] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when started with 0)."""
        if self._server is None:
            raise RuntimeError("listener not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await serve(
            self._serve_station,
            self.host,
            self.requested_port,
            subprotocols=[SUBPROTOCOL],
            process_request=self._check_request,
            max_size=MAX_FRAME_BYTES,
        )
        log.info("OCPP 2.0.1 listener on ws://%s:%d/ocpp/<station_id>", self.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()  # closes every connection (1001 going away)
        await server.wait_closed()  # and waits for their handlers
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if station_id_of(request.path) is None:
            return _refuse(connection, HTTPStatus.NOT_FOUND, "connect to /ocpp/<station_id>\n")
        if self.registry.connected_count >= MAX_STATIONS:
            return _refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE, "too many stations\n")
        return None

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


def _refuse(connection: ServerConnection, status: HTTPStatus, body: str) -> Response:
    return connection.respond(status, body)
