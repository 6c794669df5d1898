"""The OCPP metrics of a worker serving simulated stations (loadgen.stations) on loopback, with
the in-memory broker (tests/fakes.py): starts, profile updates and stops counted by answer, a
series per EVSE with a session (gone when it ends), their sum within the capacity, EVSEs by
state, walk-ins; and the station gauges back at nothing once the stations have gone."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from contracts import ChargeEvent, ChargeRequest, Topology
from loadgen.stations.fleet import Fleet, make_fleet, run_fleet
from loadgen.stations.station import StationConfig
from loadgen.stations.walkins import WalkInCar
from substation_worker.service import WorkerService
from substation_worker.settings import WorkerSettings
from tests.fakes import FakeBroker
from tests.helpers import DEPLOY, assignment_of, events_of, wait_until
from tests.loopback.ocpp_client import free_port

pytestmark = pytest.mark.timeout(60)
NS = "ocppmetrics"
TOPO = Topology(NS)
SID = "s1"
TIME_SCALE = 1800.0
CAPACITY_KW = 20.0
STATIONS, EVSES = 2, 2
CONFIG = StationConfig(
    evses=EVSES,
    evse_max_w=22_000,
    car_need_wh=100_000,  # more than any request: the worker ends each dispatched session
    car_max_w=11_000,
    meter_interval_s=0.05,
    tick_s=0.01,
)


DASHBOARD = DEPLOY / "grafana" / "dashboards" / "smartgrid.json"
# Labels Prometheus adds to every series of a target (loadgen.local_prometheus, deploy/).
TARGET_LABELS = {"namespace", "job", "instance"}


def ocpp_queries() -> list[str]:
    """The dashboard's queries of the OCPP metrics (with the variables still in them)."""
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    legends = [t.get("legendFormat", "") for p in doc["panels"] for t in p.get("targets", [])]
    return [
        f"{e} {legend}"
        for e, legend in zip(exprs, legends, strict=True)
        if "smartgrid_substation_ocpp_" in e
    ]


def assert_dashboard_served(exposition: str) -> None:
    """Every metric an OCPP panel queries has samples here, carrying every label the query
    groups, matches, selects or names in its legend (tests/integration/test_observability.py
    runs the queries against a real Prometheus, whose grid serves no OCPP)."""
    labels_of: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels_of.setdefault(sample.name, set()).update(sample.labels)
    queries = ocpp_queries()
    assert len(queries) >= 6
    for query in queries:
        names = set(re.findall(r"smartgrid_[a-z_]+", query))
        missing = sorted(n for n in names if n not in labels_of)
        assert not missing, (query, missing)
        used = set(re.findall(r"\{\{(\w+)\}\}", query))
        for group in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", query):
            used |= {label.strip() for label in group.split(",")}
        used |= set(re.findall(r"[{,](\w+)=~?\"", query))
        have = set().union(*(labels_of[n] for n in names))
        assert used - TARGET_LABELS <= have, (query, sorted(used - TARGET_LABELS - have))


@dataclass
class Worker:
    broker: FakeBroker
    service: WorkerService
    fleet: Fleet
    metrics: CollectorRegistry
    fleet_stop: asyncio.Event
    stations: asyncio.Task[object]

    def value(self, name: str, **labels: str) -> float:
        v = self.metrics.get_sample_value(name, {"substation": SID, **labels})
        assert v is not None, (name, labels)
        return v

    def limits(self) -> dict[tuple[str, str], float]:
        (family,) = [
            m for m in self.metrics.collect() if m.name == "smartgrid_substation_ocpp_limit_watts"
        ]
        return {(s.labels["station"], s.labels["evse"]): s.value for s in family.samples}

    def evses(self, state: str) -> float:
        return self.value("smartgrid_substation_ocpp_evses", state=state)

    def answers(self, command: str, result: str) -> float:
        return self.value(f"smartgrid_substation_ocpp_{command}_total", result=result)

    def assign(self, request: ChargeRequest) -> None:
        body = assignment_of(request, SID, CAPACITY_KW).model_dump_json().encode()
        self.broker.put(TOPO.substations_exchange, SID, body)

    def completed(self) -> list[ChargeEvent]:
        return events_of(self.broker, TOPO, "completed")


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    port = free_port()
    broker = FakeBroker()
    settings = WorkerSettings(
        namespace=NS,
        substation_id=SID,
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
    metrics = CollectorRegistry()
    service = WorkerService(settings, metrics, connect=broker.connect)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    fleet = make_fleet("cs", STATIONS, CONFIG)
    fleet_stop = asyncio.Event()
    await wait_until(lambda: service.ocpp is not None and service.ocpp._server is not None)
    stations = asyncio.create_task(
        run_fleet(f"ws://127.0.0.1:{port}/ocpp", fleet, CONFIG, TIME_SCALE, fleet_stop)
    )
    await wait_until(lambda: fleet.limit_totals()[-1][1] == 0, "defaults given", timeout=10)
    yield Worker(broker, service, fleet, metrics, fleet_stop, stations)
    fleet_stop.set()
    await asyncio.wait_for(stations, 10)
    stop.set()
    service.settings.drain_timeout_s = 0.1
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)


async def test_the_metrics_follow_sessions_from_start_to_end(worker: Worker) -> None:
    w = worker
    capacity_w = CAPACITY_KW * 1000
    await wait_until(lambda: w.evses("free") == STATIONS * EVSES, "every EVSE free", timeout=10)
    assert w.value("smartgrid_substation_ocpp_stations_connected") == STATIONS
    assert w.limits() == {}
    assert w.value("smartgrid_substation_ocpp_walk_ins_total") == 0

    # Three 11 kW cars under 20 kW: started, then limited as each one's share moves.
    requests = [
        ChargeRequest(vehicle_id=f"ev-{i}", energy_kwh=6.0 + i, max_power_kw=11.0) for i in range(3)
    ]
    for r in requests:
        w.assign(r)
    peak_series = 0
    granted_seen = 0.0

    def consistent() -> None:
        """What holds at every look: one series per EVSE at most, summing to the granted
        total, which the capacity bounds."""
        nonlocal peak_series, granted_seen
        limits = w.limits()
        granted = w.value("smartgrid_substation_ocpp_limits_granted_watts")
        assert len(limits) <= STATIONS * EVSES
        assert sum(limits.values()) == pytest.approx(granted)
        assert granted <= capacity_w + 1e-6
        peak_series = max(peak_series, len(limits))
        granted_seen = max(granted_seen, granted)

    def started() -> bool:
        consistent()
        return w.answers("starts", "accepted") == len(requests)

    await wait_until(started, "every start accepted", timeout=15, poll=0.01)
    await wait_until(
        lambda: w.evses("charging") == len(requests), "three EVSEs charging", timeout=5
    )
    assert set(w.limits()) <= {(f"cs-{s}", str(e)) for s in (1, 2) for e in (1, 2)}

    # A walk-in plugs into the free EVSE: seen, given its own series.
    (state, evse) = next(
        (st, e) for st in w.fleet.values() for e in st.evses if e.transaction is None
    )
    state.walk_in(evse, WalkInCar(1, need_wh=1_500, max_w=11_000, parking_s=7200, dc=False))
    bay = (state.station_id, str(evse.evse_id))

    def walked_in() -> bool:
        consistent()
        return w.value("smartgrid_substation_ocpp_walk_ins_total") == 1 and bay in w.limits()

    await wait_until(walked_in, "the walk-in counted", timeout=10, poll=0.01)
    assert_dashboard_served(generate_latest(w.metrics).decode())
    await wait_until(lambda: w.evses("free") == 0, "no EVSE free", timeout=5)

    def all_done() -> bool:
        consistent()
        return (
            len(w.completed()) == len(requests) + 1
            and w.limits() == {}
            and w.evses("charging") == 0
        )

    await wait_until(all_done, "every session ended and its series gone", timeout=40, poll=0.01)
    assert peak_series == len(requests) + 1
    assert granted_seen > 11_000  # more than one car held a limit at once
    assert w.value("smartgrid_substation_ocpp_limits_granted_watts") == 0
    assert w.value("smartgrid_substation_ocpp_walk_ins_total") == 1
    assert w.answers("profile_updates", "accepted") > 0  # cars leaving gave the others more
    # Each dispatched car is stopped by the worker; the walk-in's car may end it itself first,
    # or as its stop arrives (refused then): both stop at the same energy, its charging needs.
    stops = [w.answers("stops", r) for r in ("accepted", "rejected", "unanswered")]
    assert stops[0] >= len(requests)
    assert sum(stops) <= len(requests) + 1
    assert w.answers("starts", "rejected") == 0
    await wait_until(lambda: w.evses("free") == STATIONS * EVSES, "EVSEs free again", timeout=5)

    # The stations go: nothing connected, no EVSE counted, no series left.
    w.fleet_stop.set()
    await asyncio.wait_for(w.stations, 10)
    await wait_until(
        lambda: w.value("smartgrid_substation_ocpp_stations_connected") == 0,
        "stations gone",
        timeout=5,
    )
    await wait_until(lambda: w.evses("free") == 0, "no EVSE counted", timeout=5)
    assert all(w.evses(s) == 0 for s in ("charging", "unavailable", "offline"))
    assert w.limits() == {}
