"""A substation worker serving OCPP (the in-memory broker, tests/fakes.py) with simulated
stations (loadgen.stations, the ``ocpp`` package's own charge-point client) on loopback:
dispatched requests become transactions, the substation's sharing reaches the stations as
TxProfiles, and each ``completed`` event carries what the station metered."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from contracts import Assignment, ChargeEvent, ChargeRequest, SessionOutcome, Topology
from loadgen.stations.fleet import Fleet, make_fleet, run_fleet
from loadgen.stations.station import StationConfig
from substation_worker.service import WorkerService
from substation_worker.settings import WorkerSettings
from tests.fakes import FakeBroker
from tests.helpers import wait_until

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Grid:
    broker: FakeBroker
    service: WorkerService
    fleet: Fleet

    def assign(self, request: ChargeRequest) -> None:
        body = Assignment.model_validate(
            {
                "request": request,
                "substation_id": "s1",
                "snapshot": {
                    "load_kw": 0,
                    "capacity_kw": CAPACITY_KW,
                    "committed_kw": 0,
                    "pending_kw": 0,
                    "heartbeat_seq": 1,
                    "heartbeat_age_s": 0,
                },
                "policy": "headroom",
            }
        )
        self.broker.put(TOPO.substations_exchange, "s1", body.model_dump_json().encode())

    def events(self, kind: str) -> list[ChargeEvent]:
        return [
            ChargeEvent.model_validate_json(p.body)
            for p in self.broker.published_to(TOPO.events_exchange)
            if p.routing_key == f"event.{kind}"
        ]

    def unacked(self) -> int:
        queue = self.broker.queue(TOPO.substation_queue("s1"))
        return len(queue.ready) + sum(c.unacked for c in queue.consumers)


@pytest.fixture
async def grid() -> AsyncIterator[Grid]:
    port = free_port()
    broker = FakeBroker()
    settings = WorkerSettings(
        namespace=NS,
        substation_id="s1",
        capacity_kw=CAPACITY_KW,
        bays=8,
        time_scale=TIME_SCALE,
        heartbeat_interval_s=0.2,
        charger_max_kw=22.0,
        sharing="fair",
        ocpp_port=port,
        ocpp_settle_s=0.0,
        metrics_port=0,
    )
    service = WorkerService(settings, CollectorRegistry(), connect=broker.connect)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    fleet = make_fleet("cs", STATIONS, CONFIG)
    fleet_stop = asyncio.Event()
    await wait_until(lambda: service.ocpp is not None and service.ocpp._server is not None)
    stations = asyncio.create_task(
        run_fleet(f"ws://127.0.0.1:{port}/ocpp", fleet, CONFIG, TIME_SCALE, fleet_stop)
    )
    await wait_until(lambda: len(service.stations.free_bays()) == STATIONS * EVSES, timeout=10)
    # Every station has its TxDefaultProfile (0 W): no EVSE may draw before the worker says.
    await wait_until(lambda: fleet.limit_totals()[-1][1] == 0, "defaults given", timeout=10)
    yield Grid(broker, service, fleet)
    fleet_stop.set()
    await asyncio.wait_for(stations, 10)
    stop.set()
    service.settings.drain_timeout_s = 0.1
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)


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
    # Each completed event's energy is what a station metered for one ended transaction.
    metered = sorted(round(wh / 1000, 3) for wh in grid.fleet.ended_transactions().values())
    assert metered == sorted(round(e.energy_kwh or 0.0, 3) for e in completed.values())
    # The limits the stations received never summed above the capacity; the worker's count
    # of them neither; four 11 kW cars under 30 kW were limited.
    totals = [w for t, w in grid.fleet.limit_totals() if t >= started_at]
    assert max(totals) <= CAPACITY_KW * 1000 + 1e-6
    assert max(totals) > 22_000
    assert 0 < granted_peak <= CAPACITY_KW + 1e-9
    assert book.profile_updates > 0  # cars leaving gave the others more
    await wait_until(lambda: grid.unacked() == 0, "every assignment acked", timeout=5)
    assert not book.book.sessions()
