"""A substation worker serving OCPP (the in-memory broker, tests/fakes.py) with simulated
stations (loadgen.stations, the ``ocpp`` package's own charge-point client) on loopback:
dispatched requests become transactions, the substation's sharing reaches the stations as
TxProfiles, and each ``completed`` event carries what the station metered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass

import pytest
from ocpp.exceptions import OCPPError
from ocpp.v201 import ChargePoint, call
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from contracts import ChargeEvent, ChargeRequest, SessionOutcome, Topology
from loadgen.stations.fleet import Fleet, make_fleet, run_fleet
from loadgen.stations.station import StationConfig
from loadgen.stations.walkins import WalkInConfig
from substation_worker.service import WorkerService
from substation_worker.settings import WorkerSettings
from tests.fakes import FakeBroker
from tests.helpers import assignment_of, events_of, wait_until
from tests.loopback.ocpp_client import free_port

pytestmark = pytest.mark.timeout(60)
NS = "ocppmem"
TOPO = Topology(NS)
TIME_SCALE = 1800.0  # half a simulated hour per wall second
CAPACITY_KW = 30.0
STATIONS, EVSES = 2, 2
CONFIG = StationConfig(
    evses=EVSES,
    evse_max_w=22_000,
    car_need_wh=100_000,  # more than any request: the worker, not the car, ends each session
    car_max_w=11_000,
    meter_interval_s=0.05,
    tick_s=0.01,
)


@dataclass
class Grid:
    broker: FakeBroker
    service: WorkerService
    fleet: Fleet
    port: int
    worker: Running

    def check_energy(self, completed: list[ChargeEvent]) -> None:
        """Each completed event's energy is what a station metered for one ended transaction,
        and every transaction that ended is one completed event."""
        metered = sorted(wh / 1000 for wh in self.fleet.ended_transactions().values())
        # A station reports its meter to the mWh (loadgen.stations.state): equal to 1e-6 kWh,
        # not rounded on both sides (rounding flips where the value sits on a boundary).
        assert metered == pytest.approx(sorted(e.energy_kwh or 0.0 for e in completed), abs=1e-6)

    def check_limits(self, since: float) -> float:
        """The limits the stations received never summed above the capacity; their peak."""
        totals = [w for t, w in self.fleet.limit_totals() if t >= since]
        assert max(totals) <= CAPACITY_KW * 1000 + 1e-6
        return max(totals)

    def assign(self, request: ChargeRequest) -> None:
        body = assignment_of(request, "s1", CAPACITY_KW).model_dump_json().encode()
        self.broker.put(TOPO.substations_exchange, "s1", body)

    def events(self, kind: str) -> list[ChargeEvent]:
        return events_of(self.broker, TOPO, kind)

    def unacked(self) -> int:
        queue = self.broker.queue(TOPO.substation_queue("s1"))
        return len(queue.ready) + sum(c.unacked for c in queue.consumers)


def worker_settings(port: int, settle_s: float = 0.0) -> WorkerSettings:
    return WorkerSettings(
        namespace=NS,
        substation_id="s1",
        capacity_kw=CAPACITY_KW,
        bays=8,
        time_scale=TIME_SCALE,
        heartbeat_interval_s=0.2,
        charger_max_kw=22.0,
        sharing="fair",
        ocpp_port=port,
        ocpp_settle_s=settle_s,
        metrics_port=0,
    )


@dataclass
class Running:
    service: WorkerService
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def end(self) -> None:
        self.stop.set()
        self.service.settings.drain_timeout_s = 0.1
        await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), 10)


async def start_worker(broker: FakeBroker, port: int, settle_s: float = 0.0) -> Running:
    service = WorkerService(
        worker_settings(port, settle_s), CollectorRegistry(), connect=broker.connect
    )
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await wait_until(lambda: service.ocpp is not None and service.ocpp._server is not None)
    return Running(service, stop, task)


@pytest.fixture
async def grid(request: pytest.FixtureRequest) -> AsyncIterator[Grid]:
    walk_ins: WalkInConfig | None = getattr(request, "param", None)
    port = free_port()
    broker = FakeBroker()
    worker = await start_worker(broker, port)
    fleet = make_fleet("cs", STATIONS, CONFIG)
    fleet_stop = asyncio.Event()
    stations = asyncio.create_task(
        run_fleet(
            f"ws://127.0.0.1:{port}/ocpp",
            fleet,
            CONFIG,
            TIME_SCALE,
            fleet_stop,
            walk_ins=walk_ins,
        )
    )
    service = worker.service
    await wait_until(lambda: len(service.stations.free_bays()) == STATIONS * EVSES, timeout=10)
    # Every station has its TxDefaultProfile (0 W): no EVSE may draw before the worker says.
    await wait_until(lambda: fleet.limit_totals()[-1][1] == 0, "defaults given", timeout=10)
    grid = Grid(broker, service, fleet, port, worker)
    yield grid
    fleet_stop.set()
    await asyncio.wait_for(stations, 10)
    await grid.worker.end()


async def test_dispatched_requests_charge_on_stations_within_the_capacity(grid: Grid) -> None:
    requests = [
        ChargeRequest(vehicle_id=f"ev-{i}", energy_kwh=3.0 + i % 3, max_power_kw=11.0)
        for i in range(6)
    ]
    granted_peak = 0.0
    book = grid.service.station_bays
    assert book is not None
    started_at = time.monotonic()
    for r in requests:
        grid.assign(r)

    def done() -> bool:
        nonlocal granted_peak
        granted_peak = max(granted_peak, book.book.granted_kw)
        return len(grid.events("completed")) == len(requests)

    await wait_until(done, "every request completed", timeout=40, poll=0.01)
    completed = {e.request_id: e for e in grid.events("completed")}
    assert set(completed) == {r.request_id for r in requests}
    started = {e.request_id for e in grid.events("started")}
    assert started == set(completed)
    for r in requests:
        event = completed[r.request_id]
        assert event.outcome is SessionOutcome.FULL
        assert event.energy_kwh is not None
        assert r.energy_kwh <= event.energy_kwh <= r.energy_kwh + 0.5
    grid.check_energy(list(completed.values()))
    # The worker's count of the limits never went above the capacity either; four 11 kW cars
    # under 30 kW were limited.
    assert grid.check_limits(started_at) > 22_000
    assert 0 < granted_peak <= CAPACITY_KW + 1e-9
    assert book.profile_updates > 0  # cars leaving gave the others more
    await wait_until(lambda: grid.unacked() == 0, "every assignment acked", timeout=5)
    assert not book.book.sessions()


def requests(n: int, energy_kwh: float = 3.0) -> list[ChargeRequest]:
    return [
        ChargeRequest(vehicle_id=f"ev-{i}", energy_kwh=energy_kwh, max_power_kw=11.0)
        for i in range(n)
    ]


@pytest.mark.parametrize("grid", [WalkInConfig(per_hour=6.0, max_count=4, seed=7)], indirect=True)
async def test_walk_ins_share_the_capacity_with_dispatched_cars(grid: Grid) -> None:
    started_at = time.monotonic()
    dispatched = requests(3)
    for r in dispatched:
        grid.assign(r)
    await wait_until(lambda: grid.fleet.walk_ins == 4, "four walk-ins plugged in", timeout=20)
    sent = {r.request_id for r in dispatched}

    def walk_ins_completed() -> list[ChargeEvent]:
        return [e for e in grid.events("completed") if e.request_id not in sent]

    await wait_until(
        lambda: (
            len(walk_ins_completed()) == 4
            and sent <= {e.request_id for e in grid.events("completed")}
        ),
        "every walk-in and request completed",
        timeout=40,
    )
    walk_ins = walk_ins_completed()
    assert {e.attempt for e in walk_ins} == {None}
    assert all(e.outcome in (SessionOutcome.FULL, SessionOutcome.DEPARTED) for e in walk_ins)
    # Their starts were announced too, under the same (derived) request ids.
    assert {e.request_id for e in walk_ins} <= {e.request_id for e in grid.events("started")}
    grid.check_energy(grid.events("completed"))
    grid.check_limits(started_at)


async def test_a_station_that_drops_its_link_mid_session_completes_its_sessions(
    grid: Grid,
) -> None:
    sent = requests(4, energy_kwh=4.0)
    for r in sent:
        grid.assign(r)
    book = grid.service.station_bays
    assert book is not None
    assert grid.service.ocpp is not None
    await wait_until(lambda: len(grid.events("started")) == 4, "four charging", timeout=10)
    # The link breaks under the station (no close handshake): it reconnects by itself.
    connection = grid.service.ocpp._connections["cs-1"]
    connection.transport.abort()
    await wait_until(lambda: "cs-1" in book.book.offline, "cs-1 offline", timeout=5)
    # Its cars are still there: nothing is handed back, their limits still count.
    assert sum(s.station_id == "cs-1" for s in book.book.sessions()) == 2
    await wait_until(
        lambda: {e.request_id for e in grid.events("completed")} == {r.request_id for r in sent},
        "every request completed",
        timeout=40,
    )
    assert len(grid.events("completed")) == 4  # once each
    grid.check_energy(grid.events("completed"))
    await wait_until(lambda: grid.unacked() == 0, "every assignment acked", timeout=5)


async def test_a_restarted_worker_rebuilds_its_sessions_from_the_stations(grid: Grid) -> None:
    sent = requests(4, energy_kwh=6.0)
    for r in sent:
        grid.assign(r)
    await wait_until(lambda: len(grid.events("started")) == 4, "four charging", timeout=10)
    await grid.worker.end()
    # Not acked: the broker gives the assignments to the next worker, which must not start
    # them again: the stations report them (TriggerMessage) within its settle time.
    grid.worker = await start_worker(grid.broker, grid.port, settle_s=8.0)
    grid.service = grid.worker.service
    await wait_until(
        lambda: {e.request_id for e in grid.events("completed")} == {r.request_id for r in sent},
        "every request completed",
        timeout=40,
    )
    completed = grid.events("completed")
    assert len(completed) == 4
    assert all(e.outcome is SessionOutcome.FULL for e in completed)
    grid.check_energy(completed)
    # One transaction per request: none was started twice.
    assert len(grid.fleet.ended_transactions()) == 4
    await wait_until(lambda: grid.unacked() == 0, "every assignment acked", timeout=5)


async def test_bad_and_out_of_order_messages_leave_the_other_stations_charging(
    grid: Grid,
) -> None:
    book = grid.service.station_bays
    assert book is not None
    url = f"ws://127.0.0.1:{grid.port}/ocpp/rogue"
    async with connect(url, subprotocols=[Subprotocol("ocpp2.0.1")]) as ws:
        rogue = ChargePoint("rogue", ws, response_timeout=5)
        reading = asyncio.create_task(rogue.start())
        try:
            boot = call.BootNotification(
                charging_station={"model": "X", "vendor_name": "Y"}, reason="PowerUp"
            )
            assert (await rogue.call(boot)).status == "Accepted"
            event = {
                "timestamp": "2026-01-01T00:00:00Z",
                "trigger_reason": "Trigger",
                "seq_no": 1,
            }
            # Events of transactions never seen: answered, no session made or ended.
            await rogue.call(
                call.TransactionEvent(
                    event_type="Ended", transaction_info={"transaction_id": "nope"}, **event
                )
            )
            await rogue.call(
                call.TransactionEvent(
                    event_type="Updated", transaction_info={"transaction_id": "nope"}, **event
                )
            )
            assert not [s for s in book.book.sessions() if s.station_id == "rogue"]
            # A transaction that ends, then an Updated of it (out of order): it stays ended.
            for kind in ("Started", "Ended", "Updated"):
                await rogue.call(
                    call.TransactionEvent(
                        event_type=kind,
                        transaction_info={"transaction_id": "late"},
                        evse={"id": 1, "connector_id": 1},
                        **event,
                    )
                )
            assert not [s for s in book.book.sessions() if s.station_id == "rogue"]
            assert book.book.has_ended("rogue", "late")
            # An EVSE out of range, a schema-invalid event: CallErrors.
            with pytest.raises(OCPPError, match="EVSE id 99"):
                await rogue.call(
                    call.StatusNotification(
                        timestamp="2026-01-01T00:00:00Z",
                        connector_status="Available",
                        evse_id=99,
                        connector_id=1,
                    ),
                    suppress=False,
                )
            with pytest.raises(OCPPError):
                await rogue.call(
                    call.TransactionEvent(event_type="Started", transaction_info={}, **event),
                    suppress=False,
                    skip_schema_validation=True,
                )
            # Needs for a car that is not there; meter values for no session.
            needs = await rogue.call(
                call.NotifyEVChargingNeeds(
                    evse_id=1, charging_needs={"requested_energy_transfer": "DC"}
                )
            )
            assert needs.status == "Rejected"
            await rogue.call(
                call.MeterValues(
                    evse_id=1,
                    meter_value=[
                        {"timestamp": "2026-01-01T00:00:00Z", "sampled_value": [{"value": 5}]}
                    ],
                )
            )
            await ws.send("not an OCPP frame")
            await ws.send(b"\x00binary")
            # The other stations charge on.
            sent = requests(2)
            for r in sent:
                grid.assign(r)
            await wait_until(
                lambda: (
                    {r.request_id for r in sent} <= {e.request_id for e in grid.events("completed")}
                ),
                "the requests completed on the good stations",
                timeout=20,
            )
            assert (await rogue.call(call.Heartbeat())).current_time
        finally:
            reading.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await reading
