"""A URL list in SMARTGRID_AMQP_URL against the real RabbitMQ: of three addresses, two are closed
loopback ports (127.0.0.1:1 and :2, nobody listens) and one the real broker; processes connect
to the real one, whatever their shuffled order, and name it in health and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import CollectorRegistry

from contracts import Topology
from gateway import AmqpRequestPublisher, GatewaySettings, create_app
from messaging import AmqpSettings, Session
from substation_worker.service import WorkerService
from substation_worker.settings import WorkerSettings
from tests.helpers import register_substations, wait_until

SID = "list-north"


def with_closed_ports_first(settings: AmqpSettings) -> tuple[str, str]:
    """The list (two closed ports, then the real URL, same user and vhost) and the real node."""
    (real,) = settings.amqp_addresses()
    url = urlsplit(real.secret_url)
    credentials = url.netloc.rpartition("@")[0]
    closed = [url._replace(netloc=f"{credentials}@127.0.0.1:{port}").geturl() for port in (1, 2)]
    return ",".join([*closed, real.secret_url]), real.node


async def test_a_session_opens_on_the_node_that_answers(amqp_settings: AmqpSettings) -> None:
    urls, node = with_closed_ports_first(amqp_settings)
    settings = amqp_settings.model_copy(update={"amqp_url": AmqpSettings(amqp_url=urls).amqp_url})
    assert len(settings.amqp_addresses()) == 3
    for _ in range(3):  # each open shuffles anew; every order ends on the real node
        session = await Session.open(settings, "smartgrid-tests-broker-list")
        try:
            assert session.node == node
            assert session.is_open
        finally:
            await session.close()


@asynccontextmanager
async def gateway_client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway's app in process, its publisher started here (ASGITransport runs no
    lifespan)."""
    publisher = AmqpRequestPublisher(settings, connection_name="smartgrid-tests-broker-list")
    app = create_app(settings, publisher)
    await publisher.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client
    finally:
        await publisher.stop()
    assert publisher.fatal_error is None
    assert publisher.connections_made == 1


async def test_the_gateway_connects_to_the_real_node_and_says_so(
    amqp_settings: AmqpSettings, topology: Topology
) -> None:
    urls, node = with_closed_ports_first(amqp_settings)
    settings = GatewaySettings(amqp_url=urls, namespace=topology.namespace, confirm_timeout_s=5)
    async with gateway_client(settings) as client:

        async def healthy() -> bool:
            return (await client.get("/healthz")).status_code == 200

        await wait_until(healthy, "the gateway's /healthz to answer 200", timeout=20)
        health = (await client.get("/healthz")).json()
        assert health == {"status": "ok", "broker": "connected", "node": node}
        metrics = (await client.get("/metrics")).text
        assert f'smartgrid_gateway_broker_node{{node="{node}"}} 1.0' in metrics
        assert "smartgrid_gateway_broker_connected 1.0" in metrics
        assert 'node="127.0.0.1:1"' not in metrics
        assert 'node="127.0.0.1:2"' not in metrics


async def test_a_worker_names_its_node_in_its_gauge(
    amqp_settings: AmqpSettings, topology: Topology
) -> None:
    urls, node = with_closed_ports_first(amqp_settings)
    register_substations(topology, [SID])
    fields: dict[str, Any] = {
        "amqp_url": urls,
        "namespace": topology.namespace,
        "substation_id": SID,
        "capacity_kw": 22,
        "bays": 2,
        "metrics_port": 0,
    }
    registry = CollectorRegistry()
    service = WorkerService(WorkerSettings(**fields), registry)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(service.link.ready.wait(), 20)
        assert service.link.node == node
        labels = {"substation": SID, "node": node}
        assert registry.get_sample_value("smartgrid_substation_broker_node", labels) == 1.0
        connected = registry.get_sample_value(
            "smartgrid_substation_broker_connected", {"substation": SID}
        )
        assert connected == 1.0
        nodes = [
            sample.labels["node"]
            for family in registry.collect()
            if family.name == "smartgrid_substation_broker_node"
            for sample in family.samples
        ]
        assert nodes == [node]
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    assert registry.get_sample_value("smartgrid_substation_broker_node", labels) is None
