"""What operators look at, against real parts: a real Prometheus (Debian's package, run with the
config that ``make prometheus`` writes) scraping a live local grid under load answers every
query of the Grafana dashboard; and RabbitMQ's management API shows the topology that
docs/contract.md names.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from contracts import Topology
from loadgen import local_prometheus
from loadgen.broker import delete_namespace
from loadgen.demo import DEMO_SUBSTATIONS
from loadgen.grid import LocalGrid, free_ports
from loadgen.report import Report, build_report
from loadgen.run import RunOptions, run_load
from loadgen.settings import LoadgenSettings
from messaging import AmqpSettings, Session
from tests.helpers import DEPLOY, require, wait_until_serving
from tests.management import get, management_client, vhost_of

# The demo's three substations: 150/300/600 kW, 8/16/32 bays.
SUBSTATIONS = DEMO_SUBSTATIONS
IDS = [s.id for s in SUBSTATIONS]
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "smartgrid.json"
# Grafana's own variables, as Grafana would expand them for a 5-minute view of this run.
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$__range": "5m", "$substation": ".*"}
# The OCPP listener's metrics: only workers serving stations have them.
OCPP_METRIC = "smartgrid_substation_ocpp_"
LOAD_S = 25.0
RATE = 30.0


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in the dashboard."""
    doc = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], t["expr"])
        for p in doc["panels"]
        for t in p.get("targets", [])
        if t.get("expr")
    ]


def expand(expr: str, namespace: str) -> str:
    for var, value in {**GRAFANA_VARIABLES, "$namespace": namespace}.items():
        expr = expr.replace(var, value)
    return expr


@dataclass
class Observed:
    grid: LocalGrid
    namespace: str
    prometheus_url: str
    report: Report
    # Dashboard query -> the most series with a finite value it returned during the load.
    seen: dict[str, int]


class PromClient:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = self.http.get("/api/v1/query", params={"query": expr})
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def finite(self, expr: str) -> list[tuple[dict[str, str], float]]:
        return [
            (s["metric"], float(s["value"][1]))
            for s in self.query(expr)
            if math.isfinite(float(s["value"][1]))
        ]


@pytest.fixture(scope="module")
def observed(
    amqp_settings: AmqpSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    require("prometheus", "Debian: apt-get install prometheus")
    namespace = f"test-obs-{uuid.uuid4().hex[:8]}"
    topology = Topology(namespace)
    settings = amqp_settings.model_copy(update={"namespace": namespace})
    root = tmp_path_factory.mktemp("observability")
    targets = root / "targets"
    config = local_prometheus.write_config(targets, scrape_interval="1s")
    (port,) = free_ports(1)
    prom_url = f"http://127.0.0.1:{port}"
    proc = local_prometheus.start(config, listen=f"127.0.0.1:{port}")
    prom = PromClient(prom_url)
    grid = LocalGrid(
        SUBSTATIONS,
        settings=settings,
        time_scale=3600.0,
        heartbeat_interval_s=0.5,
        dispatchers=2,
        log_dir=root / "grid",
        targets_dir=targets,
    )
    try:
        wait_until_serving(
            f"{prom_url}/-/ready", proc, config.parent / "prometheus.log", "prometheus"
        )
        with grid:
            yield _observe(grid, namespace, prom, settings)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        prom.http.close()
        asyncio.run(delete_namespace(amqp_settings, topology, IDS))


def _observe(grid: LocalGrid, namespace: str, prom: PromClient, settings: AmqpSettings) -> Observed:
    # Something for every panel: a poison message (dead letters) and a refused request (4xx).
    asyncio.run(_send_poison(settings, Topology(namespace)))
    assert httpx.post(f"{grid.gateway_url}/v1/charge-requests", json={}).status_code == 422

    options = RunOptions(
        via="http",
        profile="steady",
        rate=RATE,
        duration_s=LOAD_S,
        seed=7,
        settle_s=90.0,
        gateway_url=grid.gateway_url,
    )
    loadgen = LoadgenSettings(amqp_url=settings.amqp_url, namespace=namespace)
    done: list[Report] = []
    failed: list[BaseException] = []

    def drive() -> None:
        try:
            done.append(build_report(asyncio.run(run_load(loadgen, options)), IDS))
        except BaseException as exc:  # re-raised in the test's thread
            failed.append(exc)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    seen: dict[str, int] = {}
    queries = [expand(q, namespace) for _, q in dashboard_queries()]
    # Sample the dashboard while the load runs, as someone watching it would: once a second
    # (Prometheus scrapes every second), until the load ends.
    while driver.is_alive():
        for q in queries:
            seen[q] = max(seen.get(q, 0), len(prom.finite(q)))
        driver.join(timeout=1.0)
    driver.join()
    if failed:
        raise failed[0]
    return Observed(grid, namespace, prom.http.base_url.__str__(), done[0], seen)


async def _send_poison(settings: AmqpSettings, topology: Topology) -> None:
    session = await Session.open(settings, "test-poison")
    try:
        await session.publish(topology.requests_exchange, "", b"{not json", persistent=True)
    finally:
        await session.close()


# -- Prometheus and the dashboard -------------------------------------------------------------


def test_load_was_real_and_nothing_was_lost(observed: Observed) -> None:
    r = observed.report
    assert r.accepted >= 0.9 * RATE * LOAD_S
    assert r.lost == 0
    assert r.completed == r.accepted


@pytest.mark.parametrize(("title", "query"), dashboard_queries())
def test_every_dashboard_query_returns_series(observed: Observed, title: str, query: str) -> None:
    expanded = expand(query, observed.namespace)
    if OCPP_METRIC in query:
        # This grid's workers serve no OCPP (no ocpp_port), so these have no series here:
        # Prometheus evaluated the query while the load ran (an invalid one fails the fixture);
        # tests/loopback/test_ocpp_metrics.py checks a worker serving stations exports every
        # name and label such a query uses.
        assert expanded in observed.seen, f"{title}: {expanded} not evaluated"
        return
    assert observed.seen[expanded] >= 1, f"{title}: {expanded} returned no finite series"


def test_dashboard_variables_resolve(observed: Observed) -> None:
    prom = PromClient(observed.prometheus_url)
    doc = json.loads(DASHBOARD.read_text())
    names = {v["name"] for v in doc["templating"]["list"]}
    assert names == {"namespace", "substation"}
    r = prom.http.get(
        "/api/v1/label/namespace/values", params={"match[]": "smartgrid_substation_capacity_watts"}
    )
    assert observed.namespace in r.json()["data"]
    r = prom.http.get(
        "/api/v1/label/substation/values",
        params={
            "match[]": f'smartgrid_substation_capacity_watts{{namespace="{observed.namespace}"}}'
        },
    )
    assert sorted(r.json()["data"]) == sorted(IDS)


def test_load_never_exceeds_capacity(observed: Observed) -> None:
    prom = PromClient(observed.prometheus_url)
    sel = f'namespace="{observed.namespace}"'
    over = prom.finite(
        f"max_over_time((smartgrid_substation_load_watts{{{sel}}}"
        f" - smartgrid_substation_capacity_watts{{{sel}}})[10m:1s])"
    )
    assert {m["substation"] for m, _ in over} == set(IDS)
    assert all(v <= 1e-6 for _, v in over), over
    peak = dict(
        (m["substation"], v)
        for m, v in prom.finite(f"max_over_time(smartgrid_substation_load_watts{{{sel}}}[10m])")
    )
    # Not vacuous: every substation carried load (and the busiest ran near its capacity).
    assert all(peak[s] > 0 for s in IDS), peak
    capacity = {s.id: s.capacity_kw * 1000 for s in SUBSTATIONS}
    assert max(peak[s] / capacity[s] for s in IDS) > 0.5, peak
    assert prom.query('ALERTS{alertname="SubstationOverloaded"}') == []


def test_prometheus_sees_the_dead_letter_and_every_target_up(observed: Observed) -> None:
    prom = PromClient(observed.prometheus_url)
    dead = prom.finite(f'rabbitmq_detailed_queue_messages{{queue="{observed.namespace}.dead"}}')
    assert [v for _, v in dead] == [1.0]
    up = prom.finite(f'up{{namespace="{observed.namespace}"}}')
    assert len(up) == 1 + 2 + len(SUBSTATIONS)
    assert all(v == 1.0 for _, v in up)


# -- the management API: the topology an operator sees -------------------------------------


def test_management_api_shows_the_designed_topology(
    observed: Observed, amqp_settings: AmqpSettings
) -> None:
    t = Topology(observed.namespace)
    mine = f"{observed.namespace}."
    vhost = vhost_of(amqp_settings)
    with management_client(amqp_settings) as api:
        exchanges = {
            e["name"]: e for e in get(api, "/exchanges", vhost) if e["name"].startswith(mine)
        }
        queues = {q["name"]: q for q in get(api, "/queues", vhost) if q["name"].startswith(mine)}
        bindings = [b for b in get(api, "/bindings", vhost) if b["source"].startswith(mine)]

    assert {n: (e["type"], e["durable"]) for n, e in exchanges.items()} == {
        e.name: (e.type, True) for e in t.exchanges()
    }

    def work_queue(name: str, spec_args: dict[str, Any]) -> None:
        q = queues[name]
        assert (q["type"], q["durable"]) == ("quorum", True), q
        assert q["arguments"] == spec_args

    work_queue(t.requests_queue, t.requests_queue_spec().arguments)
    assert queues[t.requests_queue]["arguments"]["x-single-active-consumer"] is True
    # Two dispatchers: one active consumer, one waiting (single active consumer).
    assert queues[t.requests_queue]["consumers"] == 2
    for sid in IDS:
        work_queue(t.substation_queue(sid), t.substation_queue_spec(sid).arguments)
        assert queues[t.substation_queue(sid)]["consumers"] >= 1
    dead = queues[t.dead_queue]
    assert dead["type"] == "classic"
    assert dead["durable"]
    heartbeat_queues = [n for n in queues if n.startswith(f"{t.heartbeats_exchange}.dispatcher-")]
    assert len(heartbeat_queues) == 2
    for n in heartbeat_queues:
        assert queues[n]["exclusive"] is True
        assert queues[n]["arguments"]["x-message-ttl"] > 0

    edges = {(b["source"], b["destination"], b["routing_key"]) for b in bindings}
    assert (t.requests_exchange, t.requests_queue, "") in edges
    assert (t.dead_exchange, t.dead_queue, "") in edges
    for sid in IDS:
        assert (t.substations_exchange, t.substation_queue(sid), sid) in edges
    for n in heartbeat_queues:
        assert (t.heartbeats_exchange, n, "") in edges
    # Events are a topic exchange with event.<kind> keys, and the dispatchers' intents beside
    # them: a standby follows those (the active one has stopped by now, having got requests).
    event_keys = {k for s, _, k in edges if s == t.events_exchange}
    assert t.intent_routing_key in event_keys
    assert all(k.startswith("event.") for k in event_keys - {t.intent_routing_key})
