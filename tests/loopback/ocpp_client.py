"""The station side of the loopback OCPP tests: the ``ocpp`` package's own
``ocpp.v201.ChargePoint`` over ``websockets.connect``, its receive loop running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from ocpp.v201 import ChargePoint, call
from websockets.asyncio.client import connect

from loadgen.grid import free_ports
from substation_worker.ocpp.listener import OcppListener

DEADLINE_S = 5.0


def free_port() -> int:
    return free_ports(1)[0]


def station_url(lis: OcppListener, station_id: str) -> str:
    return f"{lis.scheme}://127.0.0.1:{lis.port}/ocpp/{station_id}"


@asynccontextmanager
async def charge_point(
    url: str, station_id: str, **connect_kwargs: Any
) -> AsyncIterator[ChargePoint]:
    """A connected station offering ``ocpp2.0.1``; ``connect_kwargs`` go to ``connect``."""
    async with connect(url, subprotocols=["ocpp2.0.1"], **connect_kwargs) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ocpp2.0.1"
        cp = ChargePoint(station_id, ws, response_timeout=DEADLINE_S)
        reading = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            reading.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await reading


async def boot(cp: ChargePoint) -> Any:
    return await cp.call(
        call.BootNotification(
            charging_station={"model": "Wallbox", "vendor_name": "Acme"}, reason="PowerUp"
        )
    )
