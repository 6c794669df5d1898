"""The gateway against the real RabbitMQ, served by a real uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from contracts import ChargeEvent, ChargeRequest, EventKind, Topology
from contracts.topology import BindingSpec, QueueSpec
from gateway import AmqpRequestPublisher, GatewaySettings, create_app
from messaging import AmqpSettings, Delivery, Session
from messaging.publishing import publish_event
from tests.helpers import charge_request_body, wait_until

URL = "/v1/charge-requests"
UNREACHABLE_AMQP_URL = "amqp://guest:guest@127.0.0.1:1/%2F"  # nothing listens on port 1


@dataclass
class RunningGateway:
    client: httpx.AsyncClient
    publisher: AmqpRequestPublisher


@asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[RunningGateway]:
    """uvicorn serving the real app (lifespan included) on this test's event loop."""
    publisher = AmqpRequestPublisher(settings, connection_name="smartgrid-tests-gateway")
    app = create_app(settings, publisher)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http="httptools", lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))

    def started() -> bool:
        assert not serving.done(), "uvicorn stopped while starting"
        return server.started

    try:
        await wait_until(started, "uvicorn to start serving", poll=0.02)
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=15, limits=limits
        ) as client:
            yield RunningGateway(client, publisher)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 20)
        sock.close()


async def wait_until_healthy(client: httpx.AsyncClient) -> None:
    async def healthy() -> bool:
        return (await client.get("/healthz")).status_code == 200

    await wait_until(healthy, "the gateway's /healthz to answer 200 (broker connected)")


def gateway_settings(amqp_settings: AmqpSettings, topology: Topology) -> GatewaySettings:
    return GatewaySettings(
        amqp_url=amqp_settings.amqp_url, namespace=topology.namespace, confirm_timeout_s=5
    )


class Collector:
    """Consumes a queue, acking everything, until ``expected`` messages arrived."""

    def __init__(self, expected: int) -> None:
        self.deliveries: list[Delivery] = []
        self.expected = expected
        self.enough = asyncio.Event()

    def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        delivery.ack()
        if len(self.deliveries) >= self.expected:
            self.enough.set()

    async def wait(self, within_s: float = 10) -> list[Delivery]:
        await asyncio.wait_for(self.enough.wait(), within_s)
        return self.deliveries


async def watch_accepted_events(session: Session, topology: Topology, expected: int) -> Collector:
    """A private, exclusive queue bound to event.accepted (gone with the test's connection)."""
    spec = QueueSpec(
        f"{topology.namespace}.test-accepted-events",
        durable=False,
        exclusive=True,
        auto_delete=True,
    )
    await session.declare_queue(spec)
    await session.bind(
        BindingSpec(spec.name, topology.events_exchange, topology.event_routing_key("accepted"))
    )
    collector = Collector(expected)
    await session.consume(spec.name, collector)
    return collector


async def test_concurrent_requests_are_confirmed_queued_and_announced(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    n = 50
    settings = gateway_settings(amqp_settings, topology).model_copy(
        update={"accepted_events": True}
    )
    async with running_gateway(settings) as gw:
        await wait_until_healthy(gw.client)
        # Given someone listening for accepted events (the gateway declared the exchanges)
        events = await watch_accepted_events(session, topology, n)
        bodies = [charge_request_body(energy_kwh=1.0 + i) for i in range(n)]

        # When 50 requests are posted at once
        responses = await asyncio.gather(*(gw.client.post(URL, json=b) for b in bodies))

        # Then every one is 202 with its own request_id...
        assert [r.status_code for r in responses] == [202] * n
        sent_ids = {b["request_id"] for b in bodies}
        assert {r.json()["request_id"] for r in responses} == sent_ids
        assert all(r.json()["status"] == "accepted" for r in responses)

        # ...202 means confirmed: all 50 are in the requests queue already, and nothing else
        assert await session.queue_depth(topology.requests_queue) == n
        await session.set_prefetch(n * 2)
        queued = Collector(n)
        tag = await session.consume(topology.requests_queue, queued)
        deliveries = await queued.wait()
        await session.cancel(tag)
        assert {d.properties.message_id for d in deliveries} == sent_ids
        assert all(d.properties.delivery_mode == 2 for d in deliveries), "must be persistent"
        assert all(d.properties.content_type == "application/json" for d in deliveries)
        published = {str(r.request_id): r for r in (parse(d.body) for d in deliveries)}
        assert set(published) == sent_ids
        assert {b["request_id"]: b["energy_kwh"] for b in bodies} == {
            i: r.energy_kwh for i, r in published.items()
        }

        # ...and an accepted event was emitted for each
        accepted = [ChargeEvent.model_validate_json(d.body) for d in await events.wait()]
        assert {str(e.request_id) for e in accepted} == sent_ids
        assert {e.kind for e in accepted} == {EventKind.ACCEPTED}

        # ...which the metrics saw too
        metrics = (await gw.client.get("/metrics")).text
        assert 'smartgrid_gateway_requests_total{status="202"} 50.0' in metrics
        assert "smartgrid_gateway_publish_seconds_count 50.0" in metrics
        assert "smartgrid_gateway_broker_connected 1.0" in metrics
        assert "smartgrid_gateway_inflight_publishes 0.0" in metrics


def parse(body: bytes) -> ChargeRequest:
    return ChargeRequest.model_validate_json(body)


async def test_no_accepted_events_unless_asked(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    async with running_gateway(gateway_settings(amqp_settings, topology)) as gw:
        await wait_until_healthy(gw.client)
        events = await watch_accepted_events(session, topology, 1)
        answers = [await gw.client.post(URL, json=charge_request_body()) for _ in range(5)]
        assert [a.status_code for a in answers] == [202] * 5
        assert await session.queue_depth(topology.requests_queue) == 5
        # A sentinel event on the gateway's own channel, after the answers: a channel's publishes
        # are routed in order, so any event the gateway published is delivered before it.
        gateway_session = gw.publisher._link.session
        assert gateway_session is not None
        sentinel = ChargeEvent(request_id=uuid.uuid4(), kind=EventKind.ACCEPTED)
        publish_event(gateway_session, topology, sentinel)
        delivered = await events.wait()
        assert [ChargeEvent.model_validate_json(d.body) for d in delivered] == [sentinel]


async def test_invalid_requests_put_nothing_in_the_queue(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    async with running_gateway(gateway_settings(amqp_settings, topology)) as gw:
        await wait_until_healthy(gw.client)
        json_headers = {"content-type": "application/json"}

        async def oversized_chunks() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield b" " * 1024

        # When invalid requests of every kind are posted
        answers = [
            await gw.client.post(URL, json=charge_request_body(energy_kwh=-5)),
            await gw.client.post(URL, json=charge_request_body(energy_kwh="abc")),
            await gw.client.post(URL, json=charge_request_body(schema_version=2)),
            await gw.client.post(URL, json={"vehicle_id": "EV-1"}),
            await gw.client.post(URL, content=b"{not json", headers=json_headers),
            await gw.client.post(URL, content=b" " * 1_000_000, headers=json_headers),
            await gw.client.post(URL, content=oversized_chunks(), headers=json_headers),
            await gw.client.post(URL, content=b"{}", headers={"content-type": "text/plain"}),
        ]
        # Then each is refused for its reason, over one kept-alive connection
        assert [a.status_code for a in answers] == [422, 422, 422, 422, 422, 413, 413, 415]
        # ...and the queue is empty; a valid request after them is the only message there
        assert await session.queue_depth(topology.requests_queue) == 0
        ok = await gw.client.post(URL, json=charge_request_body())
        assert ok.status_code == 202
        assert await session.queue_depth(topology.requests_queue) == 1


async def test_unreachable_broker_answers_503_quickly(
    monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    # Given a gateway whose broker URL points where nothing listens
    monkeypatch.setenv("SMARTGRID_AMQP_URL", UNREACHABLE_AMQP_URL)
    monkeypatch.setenv("SMARTGRID_NAMESPACE", namespace)
    settings = GatewaySettings()
    async with running_gateway(settings) as gw:
        # When a request arrives / Then it is refused within a few seconds, with Retry-After
        resp = await asyncio.wait_for(gw.client.post(URL, json=charge_request_body()), 3)
        assert resp.status_code == 503
        assert resp.headers["retry-after"] == str(settings.retry_after_s)
        health = await gw.client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["broker"] == "disconnected"
        assert "smartgrid_gateway_broker_connected 0.0" in (await gw.client.get("/metrics")).text
        assert not gw.publisher.connected
        assert gw.publisher.fatal_error is None, "an unreachable broker is retried, not fatal"


async def test_refused_credentials_are_fatal(amqp_settings: AmqpSettings, namespace: str) -> None:
    # Given a broker that refuses the password
    settings = GatewaySettings(
        amqp_url="amqp://guest:not-the-password@127.0.0.1:5672/%2F", namespace=namespace
    )
    async with running_gateway(settings) as gw:
        # Then the publisher gives up (the CLI exits 3) instead of retrying forever
        await wait_until(
            lambda: gw.publisher.fatal_error is not None, "the publisher to give up", timeout=10
        )
        assert "refused the credentials" in str(gw.publisher.fatal_error)
        assert (await gw.client.post(URL, json=charge_request_body())).status_code == 503
