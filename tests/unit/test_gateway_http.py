"""The gateway's HTTP contract, against an in-memory fake publisher (no broker)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import RequestPublisher, create_app
from messaging import BrokerUnavailable, ConfirmTimeout, PublishNacked, PublishReturned
from tests.helpers import charge_request_body, wait_until
from tests.unit.gateway_doubles import (
    JSON,
    URL,
    FakePublisher,
    http,
    raw_body,
    settings,
)


@pytest.fixture
def fake() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def client(fake: FakePublisher) -> AsyncIterator[httpx.AsyncClient]:
    async with http(create_app(settings(), fake)) as c:
        yield c


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def metric_samples(client: httpx.AsyncClient) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(resp.text)
        for s in fam.samples
    }


def test_fake_satisfies_the_protocol(fake: FakePublisher) -> None:
    assert isinstance(fake, RequestPublisher)


# -- 202 --------------------------------------------------------------------------------------


async def test_valid_request_is_published_then_answered_202(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    body = charge_request_body()
    resp = await client.post(URL, content=json.dumps(body), headers=JSON)
    assert resp.status_code == 202
    assert resp.json() == {"request_id": body["request_id"], "status": "accepted"}
    assert [str(r.request_id) for r in fake.received] == [body["request_id"]]
    assert fake.received[0].energy_kwh == 32.5


async def test_request_id_is_generated_when_omitted(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    body = charge_request_body()
    del body["request_id"]
    resp = await client.post(URL, json=body)
    assert resp.status_code == 202
    # The id returned is the one published: the client can follow its request by it.
    assert uuid.UUID(resp.json()["request_id"]) == fake.received[0].request_id


async def test_content_type_with_charset_is_json(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    resp = await client.post(
        URL,
        content=json.dumps(charge_request_body()),
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert resp.status_code == 202
    assert len(fake.received) == 1


# -- 422 --------------------------------------------------------------------------------------

INVALID: list[tuple[str, bytes, str, str]] = [
    # (case, raw body, a loc field expected in the errors, the error type)
    ("missing fields", b"{}", "vehicle_id", "missing"),
    ("negative energy", raw_body(energy_kwh=-5), "energy_kwh", "greater_than"),
    ("zero energy", raw_body(energy_kwh=0), "energy_kwh", "greater_than"),
    ("energy as text", raw_body(energy_kwh="abc"), "energy_kwh", "float_type"),
    ("energy as a numeric string", raw_body(energy_kwh="30"), "energy_kwh", "float_type"),
    ("NaN energy", b'{"vehicle_id": "EV-1", "energy_kwh": NaN, "max_power_kw": 11}', "energy_kwh",
     "finite_number"),
    ("10 MW car", raw_body(max_power_kw=10_000), "max_power_kw", "less_than_equal"),
    ("extra field", raw_body(colour="red"), "colour", "extra_forbidden"),
    ("schema_version 2", raw_body(schema_version=2), "schema_version", "literal_error"),
    ("bad request_id", raw_body(request_id="nope"), "request_id", "uuid_parsing"),
    ("not JSON", b"energy=5", "body", "json_invalid"),
    ("truncated JSON", b'{"vehicle_id": "EV-1", ', "body", "json_invalid"),
    ("empty body", b"", "body", "json_invalid"),
    ("JSON array", b"[1, 2]", "body", "model_type"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "field", "error_type"),
    [pytest.param(raw, field, etype, id=case) for case, raw, field, etype in INVALID],
)
async def test_invalid_request_is_422_with_readable_field_errors(
    client: httpx.AsyncClient, fake: FakePublisher, raw: bytes, field: str, error_type: str
) -> None:
    resp = await client.post(URL, content=raw, headers=JSON)
    assert resp.status_code == 422
    errors = resp.json()["detail"]
    assert errors, "422 must say what is wrong"
    for e in errors:
        assert set(e) == {"loc", "msg", "type"}
        assert e["loc"][0] == "body"
        assert isinstance(e["msg"], str)
        assert e["msg"]
    assert any(field in e["loc"] and e["type"] == error_type for e in errors), errors
    assert fake.received == [], "an invalid request must never be published"


async def test_departure_before_request_is_422(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    body = charge_request_body(
        requested_at="2030-01-01T12:00:00+00:00", departure="2030-01-01T11:00:00+00:00"
    )
    resp = await client.post(URL, json=body)
    assert resp.status_code == 422
    assert "departure" in resp.json()["detail"][0]["msg"]
    assert fake.received == []


# -- 413 / 415 --------------------------------------------------------------------------------


async def test_one_megabyte_body_is_413_unread(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    raw = b'{"vehicle_id": "' + b"x" * 1_000_000 + b'"}'
    resp = await client.post(URL, content=raw, headers=JSON)
    assert resp.status_code == 413
    assert "16384" in resp.json()["detail"]
    assert fake.received == []


async def test_chunked_body_over_the_limit_is_413(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    # No Content-Length: the cap must hold on the bytes actually read.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"vehicle_id": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    resp = await client.post(URL, content=chunks(), headers=JSON)
    assert resp.status_code == 413
    assert fake.received == []


async def one_chunk(raw: bytes) -> AsyncIterator[bytes]:
    yield raw  # a streamed body: sent chunked, without Content-Length


@pytest.mark.parametrize(("extra", "status"), [(0, 202), (1, 413)])
async def test_body_limit_boundary(extra: int, status: int) -> None:
    # Given a 1024-byte limit and a valid body padded with whitespace to exactly the limit (+extra)
    fake = FakePublisher()
    limit = 1024
    raw = raw_body()
    raw += b" " * (limit - len(raw) + extra)
    async with http(create_app(settings(max_body_bytes=limit), fake)) as client:
        # When / Then, both declared (Content-Length) and streamed (chunked)
        assert (await client.post(URL, content=raw, headers=JSON)).status_code == status
        assert (await client.post(URL, content=one_chunk(raw), headers=JSON)).status_code == status
    # The second post is the same request_id: answered 202 without a second publish.
    assert len(fake.received) == (1 if status == 202 else 0)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None]
)
async def test_non_json_content_type_is_415(
    client: httpx.AsyncClient, fake: FakePublisher, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    resp = await client.post(URL, content=json.dumps(charge_request_body()), headers=headers)
    assert resp.status_code == 415
    assert fake.received == []


# -- 408, and a client that goes away mid-body -------------------------------------------------


async def test_a_body_that_stops_arriving_is_408_and_not_published(fake: FakePublisher) -> None:
    """Finding 8: a chunked body that stops arriving is timed out (408, connection closed) and
    nothing is published."""
    never = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b'{"vehicle_id": "EV-1", '
        await never.wait()
        yield b"}"  # pragma: no cover

    async with http(create_app(settings(body_timeout_s=0.2), fake)) as client:
        resp = await asyncio.wait_for(client.post(URL, content=stalls(), headers=JSON), 5)
        samples = await metric_samples(client)
    assert resp.status_code == 408
    assert "0.2s" in resp.json()["detail"]
    assert resp.headers["connection"] == "close"
    assert fake.received == []
    assert samples[("smartgrid_gateway_requests_total", (("status", "408"),))] == 1


async def test_a_client_disconnecting_mid_body_is_logged_as_such(
    fake: FakePublisher, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 8: a client that disconnects mid-body is logged at INFO as a disconnect (no
    ERROR, no traceback), counted as 499, and nothing is published."""
    app = create_app(settings(), fake)
    events: list[MutableMapping[str, Any]] = [
        {"type": "http.request", "body": b'{"vehicle_id": "EV-1", ', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> MutableMapping[str, Any]:
        return events.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        pass  # nobody is there to read it

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": URL,
        "raw_path": URL.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    with caplog.at_level(logging.DEBUG):
        await app(scope, receive, send)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    (record,) = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    assert "127.0.0.1:40000" in record.getMessage()
    assert fake.received == []
    async with http(app) as client:
        samples = await metric_samples(client)
    assert samples[("smartgrid_gateway_requests_total", (("status", "499"),))] == 1


# -- 503 --------------------------------------------------------------------------------------


async def test_disconnected_is_503_with_retry_after(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    fake.connected = False
    resp = await client.post(URL, json=charge_request_body())
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert fake.received == []


@pytest.mark.parametrize(
    "error",
    [
        BrokerUnavailable("connection lost before the broker confirmed"),
        PublishNacked("broker nacked delivery tag 7"),
        PublishReturned("message was unroutable"),
        ConfirmTimeout("no broker confirm within 5s"),
    ],
    ids=type,
)
async def test_unconfirmed_publish_is_503_with_retry_after(
    client: httpx.AsyncClient, fake: FakePublisher, error: Exception
) -> None:
    fake.error = error
    resp = await client.post(URL, json=charge_request_body())
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert type(error).__name__ in resp.json()["detail"]


async def test_retry_after_follows_settings(fake: FakePublisher) -> None:
    fake.connected = False
    async with http(create_app(settings(retry_after_s=7), fake)) as client:
        resp = await client.post(URL, json=charge_request_body())
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "7"


async def test_a_publisher_that_never_confirms_cannot_hang_a_request(fake: FakePublisher) -> None:
    # Given a publisher that ignores its own timeout
    fake.hang = True
    app = create_app(settings(confirm_timeout_s=0.1), fake)
    async with http(app) as client:
        # When / Then: the HTTP layer's own deadline answers 503 (confirm timeout + 1 s guard)
        resp = await asyncio.wait_for(client.post(URL, json=charge_request_body()), 5)
    assert resp.status_code == 503
    assert "retry-after" in resp.headers
    assert fake.received == []


async def test_publishes_are_concurrent_not_serialised(fake: FakePublisher) -> None:
    # Given a publisher whose confirms are held back
    fake.hang = True
    app = create_app(settings(), fake)
    async with http(app) as client:
        # When 5 requests are sent at once
        posts = [
            asyncio.create_task(client.post(URL, json=charge_request_body())) for _ in range(5)
        ]
        await wait_until(lambda: fake.waiting == 5, "5 publishes waiting", timeout=5, poll=0.01)
        # Then all 5 wait for their confirm at the same time, and the gauge shows them
        metrics = (await client.get("/metrics")).text
        assert "smartgrid_gateway_inflight_publishes 5.0" in metrics
        fake.release.set()
        responses = await asyncio.wait_for(asyncio.gather(*posts), 5)
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in responses] == [202] * 5
    assert "smartgrid_gateway_inflight_publishes 0.0" in metrics


# -- /healthz, /metrics, OpenAPI --------------------------------------------------------------


async def test_healthz_follows_the_broker_connection(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    resp = await client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "broker": "connected", "node": "broker.test:5672"}
    fake.connected = False
    resp = await client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json() == {"status": "unavailable", "broker": "disconnected"}


async def test_metrics_name_the_broker_node_only_while_connected(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    text = (await client.get("/metrics")).text
    assert 'smartgrid_gateway_broker_node{node="broker.test:5672"} 1.0' in text
    assert "smartgrid_gateway_broker_connected 1.0" in text
    fake.connected = False
    text = (await client.get("/metrics")).text
    assert "smartgrid_gateway_broker_node{" not in text
    assert "smartgrid_gateway_broker_connected 0.0" in text


async def test_metrics_count_answers_by_status(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    await client.post(URL, json=charge_request_body())
    await client.post(URL, json=charge_request_body())
    await client.post(URL, content=b"{}", headers=JSON)
    await client.post(URL, content=b"x", headers={"content-type": "text/plain"})
    fake.connected = False
    await client.post(URL, json=charge_request_body())

    samples = await metric_samples(client)
    status = "smartgrid_gateway_requests_total"
    assert samples[(status, (("status", "202"),))] == 2
    assert samples[(status, (("status", "422"),))] == 1
    assert samples[(status, (("status", "415"),))] == 1
    assert samples[(status, (("status", "503"),))] == 1
    assert samples[("smartgrid_gateway_publish_seconds_count", ())] == 2
    assert samples[("smartgrid_gateway_broker_connected", ())] == 0
    fake.connected = True
    assert (await metric_samples(client))[("smartgrid_gateway_broker_connected", ())] == 1


async def test_each_app_has_its_own_registry(fake: FakePublisher) -> None:
    # Two apps in one process (tests, or two gateways) must not share or clash on metrics.
    accepted = ("smartgrid_gateway_requests_total", (("status", "202"),))
    async with (
        http(create_app(settings(), fake)) as a,
        http(create_app(settings(), fake)) as b,
    ):
        await a.post(URL, json=charge_request_body())
        assert (await metric_samples(a))[accepted] == 1
        assert accepted not in await metric_samples(b)


async def test_openapi_documents_the_request_body(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    post = spec["paths"][URL]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"vehicle_id", "energy_kwh", "max_power_kw"}
    assert schema["properties"]["energy_kwh"]["exclusiveMinimum"] == 0
    assert {"202", "400", "408", "409", "413", "415", "422", "503"} <= set(post["responses"])
    assert "different body" in post["responses"]["409"]["description"]
    assert "Retry-After" in post["responses"]["503"]["headers"]
    assert (await client.get("/docs")).status_code == 200
