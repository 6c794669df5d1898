"""A URL list in SMARTGRID_AMQP_URL against the real RabbitMQ: of three addresses, two are closed
loopback ports (127.0.0.1:1 and :2, nobody listens) and one the real broker; processes connect
to the real one, whatever their shuffled order, and name it in health and metrics."""

from __future__ import annotations

from urllib.parse import urlsplit

from contracts import Topology
from gateway import GatewaySettings
from messaging import AmqpSettings, Session
from tests.integration.test_gateway import running_gateway, wait_until_healthy
from tests.integration.test_worker import SID, metric, running_worker


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


async def test_the_gateway_connects_to_the_real_node_and_says_so(
    amqp_settings: AmqpSettings, topology: Topology
) -> None:
    urls, node = with_closed_ports_first(amqp_settings)
    settings = GatewaySettings(amqp_url=urls, namespace=topology.namespace, confirm_timeout_s=5)
    async with running_gateway(settings) as gw:
        await wait_until_healthy(gw.client)
        health = (await gw.client.get("/healthz")).json()
        assert health == {"status": "ok", "broker": "connected", "node": node}
        metrics = (await gw.client.get("/metrics")).text
        assert f'smartgrid_gateway_broker_node{{node="{node}"}} 1.0' in metrics
        assert "smartgrid_gateway_broker_connected 1.0" in metrics
        assert 'node="127.0.0.1:1"' not in metrics
        assert 'node="127.0.0.1:2"' not in metrics
        assert gw.publisher.connections_made == 1


async def test_a_worker_names_its_node_in_its_gauge(
    amqp_settings: AmqpSettings, topology: Topology
) -> None:
    urls, node = with_closed_ports_first(amqp_settings)
    async with running_worker(amqp_settings, topology, amqp_url=urls) as (service, registry):
        assert service.link.node == node
        labels = {"substation": SID, "node": node}
        assert registry.get_sample_value("smartgrid_substation_broker_node", labels) == 1.0
        assert metric(registry, "smartgrid_substation_broker_connected") == 1.0
        nodes = [
            s.labels["node"]
            for family in registry.collect()
            if family.name == "smartgrid_substation_broker_node"
            for s in family.samples
        ]
        assert nodes == [node]
