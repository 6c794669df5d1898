"""The OCPP listener on a free loopback port, driven by the ``ocpp`` package's own
charge-point client (ocpp.v201.ChargePoint over websockets)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from ocpp.v201 import ChargePoint, call
from ocpp.v201.enums import RegistrationStatusEnumType
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from substation_worker.metrics import OcppMetrics
from substation_worker.ocpp.listener import OcppListener
from substation_worker.ocpp.registry import Bay, StationRegistry
from substation_worker.service import WorkerService
from substation_worker.settings import WorkerSettings
from tests.fakes import FakeBroker
from tests.loopback.ocpp_client import DEADLINE_S, boot, charge_point, free_port
from tests.loopback.ocpp_client import station_url as url

pytestmark = pytest.mark.timeout(30)
SID = "s1"


@pytest.fixture
def metrics_registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def listener(metrics_registry: CollectorRegistry) -> AsyncIterator[OcppListener]:
    lis = OcppListener("127.0.0.1", 0, StationRegistry(), OcppMetrics(metrics_registry, SID))
    await lis.start()
    yield lis
    await lis.stop()


def station(lis: OcppListener, station_id: str) -> AbstractAsyncContextManager[ChargePoint]:
    return charge_point(url(lis, station_id), station_id)


async def report(cp: ChargePoint, evse_id: int, status: str) -> None:
    await cp.call(
        call.StatusNotification(
            timestamp="2026-01-01T00:00:00Z",
            connector_status=status,
            evse_id=evse_id,
            connector_id=1,
        )
    )


async def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, {"substation": SID, **labels}) or 0.0


async def test_boot_heartbeat_and_status_make_free_bays(
    listener: OcppListener, metrics_registry: CollectorRegistry
) -> None:
    async with station(listener, "cs1") as cp:
        booted = await boot(cp)
        assert booted.status == RegistrationStatusEnumType.accepted
        assert booted.interval > 0
        beat = await cp.call(call.Heartbeat())
        assert beat.current_time.endswith("Z")
        await report(cp, 1, "Available")
        await report(cp, 2, "Available")
        assert listener.registry.free_bays() == [Bay("cs1", 1), Bay("cs1", 2)]
        await report(cp, 2, "Occupied")
        assert listener.registry.free_bays() == [Bay("cs1", 1)]
        gauge = "smartgrid_substation_ocpp_stations_connected"
        assert sample(metrics_registry, gauge) == 1
        counted = "smartgrid_substation_ocpp_messages_total"
        ok = sample(metrics_registry, counted, action="StatusNotification", result="ok")
        assert ok == 3
        assert sample(metrics_registry, counted, action="BootNotification", result="ok") == 1
    await eventually(lambda: sample(metrics_registry, gauge) == 0)
    assert listener.registry.connected_count == 0
    assert listener.registry.free_bays() == []


@pytest.mark.parametrize("subprotocols", [None, ["ocpp1.6"]])
async def test_no_ocpp201_subprotocol_is_refused_at_the_handshake(
    listener: OcppListener, subprotocols: list[Any] | None
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url(listener, "cs1"), subprotocols=subprotocols):
            pass
    assert refused.value.response.status_code == 400
    assert listener.registry.connected_count == 0


@pytest.mark.parametrize("path", ["/", "/ocpp/", "/ocpp/a/b", "/other/cs1", "/ocpp/" + "x" * 49])
async def test_another_path_is_refused_at_the_handshake(listener: OcppListener, path: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{listener.port}{path}", subprotocols=["ocpp2.0.1"]):  # type: ignore[list-item]
            pass
    assert refused.value.response.status_code == 404


async def answer(ws: ClientConnection, frame: str) -> list[Any]:
    await ws.send(frame)
    return list(json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S)))


async def test_garbage_and_invalid_calls_leave_every_station_working(
    listener: OcppListener, metrics_registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        station(listener, "good") as good,
        connect(url(listener, "bad"), subprotocols=["ocpp2.0.1"]) as bad,  # type: ignore[list-item]
    ):
        assert (await boot(good)).status == RegistrationStatusEnumType.accepted
        # Frames with no message id cannot be answered: dropped, the next call is answered.
        for garbage in ("not json", "{}", "[]", '"x"', "[9, 1]", "[2]"):
            await bad.send(garbage)
        await bad.send(b"\x00binary")
        assert (await answer(bad, '[2, "h1", "Heartbeat", {}]'))[:2] == [3, "h1"]
        # Schema-invalid calls get a CallError naming the violation.
        missing = await answer(bad, '[2, "b1", "BootNotification", {"reason": "PowerUp"}]')
        assert missing[:2] == [4, "b1"]
        assert missing[2] == "ProtocolError"  # the package's code for a missing field
        wrong_type = await answer(
            bad,
            '[2, "s1", "StatusNotification", {"timestamp": "2026-01-01T00:00:00Z", '
            '"connectorStatus": "Available", "evseId": "one", "connectorId": 1}]',
        )
        assert wrong_type[:3] == [4, "s1", "TypeConstraintViolation"]
        bad_status = await answer(
            bad,
            '[2, "s2", "StatusNotification", {"timestamp": "2026-01-01T00:00:00Z", '
            '"connectorStatus": "Plugged", "evseId": 1, "connectorId": 1}]',
        )
        assert bad_status[:3] == [4, "s2", "FormatViolation"]
        out_of_range = await answer(
            bad,
            '[2, "s3", "StatusNotification", {"timestamp": "2026-01-01T00:00:00Z", '
            '"connectorStatus": "Available", "evseId": 100000, "connectorId": 1}]',
        )
        assert out_of_range[:3] == [4, "s3", "PropertyConstraintViolation"]
        # An OCPP 2.0.1 action the worker does not handle, and one that is not OCPP 2.0.1.
        later = await answer(bad, '[2, "a1", "FirmwareStatusNotification", {"status": "Idle"}]')
        assert later[:3] == [4, "a1", "NotImplemented"]
        foreign = await answer(bad, '[2, "f1", "NoSuchAction", {}]')
        assert foreign[:3] == [4, "f1", "NotSupported"]
        assert (await answer(bad, '[2, "h2", "Heartbeat", {}]'))[:2] == [3, "h2"]
        # The other station never noticed.
        await report(good, 1, "Available")
        assert (await good.call(call.Heartbeat())).current_time
        assert listener.registry.free_bays() == [Bay("good", 1)]
        assert listener.registry.connected_count == 2
        counted = "smartgrid_substation_ocpp_messages_total"
        assert sample(metrics_registry, counted, action="invalid", result="dropped") == 7
        assert sample(metrics_registry, counted, action="unknown", result="call_error") == 1
        firmware = "FirmwareStatusNotification"
        assert sample(metrics_registry, counted, action=firmware, result="call_error") == 1
        status_errors = sample(
            metrics_registry, counted, action="StatusNotification", result="call_error"
        )
        assert status_errors == 3
    # A station's invalid frames are its fault, logged as warnings without tracebacks.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_station_that_connects_again_replaces_its_older_connection(
    listener: OcppListener, metrics_registry: CollectorRegistry
) -> None:
    async with station(listener, "cs1") as first:
        await boot(first)
        await report(first, 1, "Available")
        async with station(listener, "cs1") as second:
            await eventually(lambda: first._connection.state.name == "CLOSED")
            assert listener.registry.connected_count == 1
            assert listener.registry.free_bays() == []  # not booted on this connection yet
            await boot(second)
            await report(second, 1, "Available")
            assert listener.registry.free_bays() == [Bay("cs1", 1)]
            gauge = "smartgrid_substation_ocpp_stations_connected"
            assert sample(metrics_registry, gauge) == 1
    await eventually(lambda: listener.registry.connected_count == 0)


async def test_stop_closes_every_station(listener: OcppListener) -> None:
    async with station(listener, "cs1") as cp, station(listener, "cs2"):
        await boot(cp)
        await eventually(lambda: listener.registry.connected_count == 2)
        await listener.stop()
        assert listener.registry.connected_count == 0
        await eventually(lambda: cp._connection.state.name == "CLOSED")


async def test_the_worker_serves_ocpp_beside_its_bays_and_stops_it() -> None:
    port = free_port()
    settings = WorkerSettings(
        substation_id=SID, capacity_kw=100, bays=2, ocpp_port=port, metrics_port=0
    )
    registry = CollectorRegistry()
    service = WorkerService(settings, registry, connect=FakeBroker().connect)
    assert service.ocpp is not None
    stop = asyncio.Event()
    running = asyncio.create_task(service.run(stop))
    try:
        await eventually(lambda: service.ocpp is not None and service.ocpp._server is not None)
        async with station(service.ocpp, "cs1") as cp:
            assert (await boot(cp)).status == RegistrationStatusEnumType.accepted
            await report(cp, 1, "Available")
            assert service.stations.free_bays() == [Bay("cs1", 1)]
            stop.set()
            await asyncio.wait_for(running, DEADLINE_S)
        assert service.stations.connected_count == 0
        assert sample(registry, "smartgrid_substation_ocpp_stations_connected") == 0
    finally:
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)


async def test_the_worker_without_ocpp_has_no_listener_and_no_ocpp_metrics() -> None:
    registry = CollectorRegistry()
    settings = WorkerSettings(substation_id=SID, capacity_kw=100, bays=2, metrics_port=0)
    service = WorkerService(settings, registry, connect=FakeBroker().connect)
    assert service.ocpp is None
    names = {m.name for m in registry.collect()}
    assert not any("ocpp" in n for n in names)
