"""Who gets in, how often, and retries: API key, rate limit, Idempotency-Key, conflicting
retries (no broker)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from pydantic import ValidationError

from gateway import create_app
from gateway.idempotency import RecentRequests, request_id_for_key
from gateway.ratelimit import TokenBucket, retry_after_header
from messaging import BrokerUnavailable
from tests.helpers import charge_request_body, wait_until
from tests.unit.gateway_doubles import (
    JSON,
    URL,
    FakePublisher,
    http,
    raw_body,
    settings,
)

KEY = "k" * 24
FP = 7  # a fingerprint


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"x-api-key": "wrong-wrong-wrong-wrong"}, 401),
        ({"authorization": f"Basic {KEY}"}, 401),
        ({"x-api-key": KEY}, 202),
        ({"authorization": f"Bearer {KEY}"}, 202),
    ],
)
async def test_api_key(headers: dict[str, str], status: int) -> None:
    fake = FakePublisher()
    async with http(create_app(settings(api_key=KEY), fake)) as client:
        resp = await client.post(URL, content=raw_body(), headers=JSON | headers)
        assert resp.status_code == status
        # Health and metrics stay open for probes and Prometheus.
        assert (await client.get("/healthz")).status_code == 200
    assert len(fake.received) == (1 if status == 202 else 0)


def test_off_loopback_needs_an_api_key_and_keys_are_not_trivial() -> None:
    with pytest.raises(ValidationError, match="needs SMARTGRID_API_KEY"):
        settings(http_host="0.0.0.0")
    assert settings(http_host="0.0.0.0", api_key=KEY).api_key is not None
    assert settings(http_host="0.0.0.0", allow_no_api_key=True).api_key is None
    with pytest.raises(ValidationError, match="at least 16"):
        settings(api_key="short")


async def test_rate_limit_answers_429_with_retry_after() -> None:
    fake = FakePublisher()
    app = create_app(settings(rate_limit_per_s=1, rate_limit_burst=3), fake)
    async with http(app) as client:
        codes = [(await client.post(URL, content=raw_body(), headers=JSON)) for _ in range(5)]
    assert [r.status_code for r in codes] == [202, 202, 202, 429, 429]
    assert codes[3].headers["retry-after"] == "1"
    assert len(fake.received) == 3


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=2, now=0.0)
    assert [bucket.take(0.0), bucket.take(0.0)] == [0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1) == 0.0  # one token came back in 0.1 s
    assert bucket.take(10.0) == 0.0  # never more than the burst saved up
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) > 0
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(2.2) == "3"


async def test_idempotency_key_makes_a_retry_publish_once() -> None:
    fake = FakePublisher()
    async with http(create_app(settings(), fake)) as client:
        headers = JSON | {"Idempotency-Key": "order-77/attempt"}
        body = json.dumps({k: v for k, v in charge_request_body().items() if k != "request_id"})
        first = await client.post(URL, content=body, headers=headers)
        again = await client.post(URL, content=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["request_id"] == again.json()["request_id"]
    assert first.json()["request_id"] == str(request_id_for_key("order-77/attempt"))
    assert len(fake.received) == 1


async def test_idempotency_key_that_contradicts_the_body_is_422() -> None:
    fake = FakePublisher()
    async with http(create_app(settings(), fake)) as client:
        resp = await client.post(
            URL, content=raw_body(), headers=JSON | {"Idempotency-Key": str(uuid.uuid4())}
        )
    assert resp.status_code == 422
    assert fake.received == []


def test_a_uuid_key_is_the_request_id_itself() -> None:
    rid = uuid.uuid4()
    assert request_id_for_key(str(rid)) == rid
    assert request_id_for_key("abc") == request_id_for_key("abc") != request_id_for_key("abd")


async def test_concurrent_retries_share_one_publish_and_failures_are_forgotten() -> None:
    recent = RecentRequests(capacity=2)
    rid = uuid.uuid4()
    calls = 0
    gate = asyncio.Event()

    async def publish() -> None:
        nonlocal calls
        calls += 1
        await gate.wait()

    first = asyncio.create_task(recent.once(rid, FP, publish))
    second = asyncio.create_task(recent.once(rid, FP, publish))
    await wait_until(lambda: calls == 1, "the first publish started", poll=0)
    await asyncio.sleep(0)  # one loop turn, no time: the second task reaches its await too
    gate.set()
    assert sorted(await asyncio.gather(first, second)) == [False, True]
    assert calls == 1
    assert rid in recent

    async def broken() -> None:
        raise BrokerUnavailable("down")

    other = uuid.uuid4()
    with pytest.raises(BrokerUnavailable):
        await recent.once(other, FP, broken)
    assert other not in recent  # so the client's retry publishes again
    assert await recent.once(other, FP, publish) is True
    # Bounded: the oldest id is forgotten
    assert await recent.once(uuid.uuid4(), FP, publish) is True
    assert rid not in recent


# -- conflicting retries (finding 7) ----------------------------------------------------------


async def test_the_same_request_id_with_another_body_is_409_and_not_published() -> None:
    """Finding 7: the same request_id with 10 kWh, then 250 kWh: the second is a conflict
    (409, nothing published), while a true retry of the first is still 202."""
    fake = FakePublisher()
    first = charge_request_body(energy_kwh=10)
    async with http(create_app(settings(), fake)) as client:
        accepted = await client.post(URL, json=first)
        conflict = await client.post(URL, json=first | {"energy_kwh": 250})
        retry = await client.post(URL, json=first)
    assert (accepted.status_code, conflict.status_code, retry.status_code) == (202, 409, 202)
    detail = conflict.json()["detail"]
    assert first["request_id"] in detail
    assert "already used with a different body" in detail
    assert [r.energy_kwh for r in fake.received] == [10]


async def test_an_idempotency_key_reused_for_another_body_is_409() -> None:
    """Finding 7: the same Idempotency-Key with a different body is a conflict (409)."""
    fake = FakePublisher()
    headers = JSON | {"Idempotency-Key": "order-78"}
    body = {k: v for k, v in charge_request_body().items() if k != "request_id"}
    async with http(create_app(settings(), fake)) as client:
        first = await client.post(URL, json=body, headers=headers)
        other = await client.post(URL, json=body | {"vehicle_id": "EV-9999"}, headers=headers)
    assert (first.status_code, other.status_code) == (202, 409)
    assert [r.vehicle_id for r in fake.received] == [body["vehicle_id"]]


async def test_a_retry_differing_only_in_requested_at_is_the_same_request() -> None:
    """Finding 7: requested_at is not part of the fingerprint (a gateway sets it when the
    client did not), so a retry that differs only there is a retry: 202, one publish."""
    fake = FakePublisher()
    body = charge_request_body(requested_at="2030-01-01T12:00:00+00:00")
    async with http(create_app(settings(), fake)) as client:
        first = await client.post(URL, json=body)
        again = await client.post(URL, json=body | {"requested_at": "2030-01-01T12:00:05+00:00"})
    assert first.status_code == again.status_code == 202
    assert len(fake.received) == 1


async def test_a_conflicting_retry_while_the_first_is_in_flight_is_409_at_once() -> None:
    """Finding 7: a different body under a request_id whose first publish still waits for its
    confirm is a conflict too (409 without waiting); the same body shares the first outcome."""
    fake = FakePublisher()
    fake.hang = True
    body = charge_request_body(energy_kwh=10)
    app = create_app(settings(), fake)
    inflight = app.state.metrics.inflight_publishes
    async with http(app) as client:
        first = asyncio.create_task(client.post(URL, json=body))
        await wait_until(lambda: fake.waiting == 1, "the first publish waiting", timeout=5)
        conflict = await asyncio.wait_for(client.post(URL, json=body | {"energy_kwh": 250}), 5)
        same = asyncio.create_task(client.post(URL, json=body))
        await wait_until(
            lambda: inflight._value.get() == 2, "the same body joining the first", timeout=5
        )
        assert fake.waiting == 1
        fake.release.set()
        responses = await asyncio.wait_for(asyncio.gather(first, same), 5)
    assert conflict.status_code == 409
    assert [r.status_code for r in responses] == [202, 202]
    assert [r.energy_kwh for r in fake.received] == [10]


async def test_recent_requests_compare_fingerprints_confirmed_and_in_flight() -> None:
    """Finding 7: RecentRequests keeps a fingerprint per id, confirmed or in flight."""
    from gateway.idempotency import Conflict

    recent = RecentRequests(capacity=10)
    rid, gate = uuid.uuid4(), asyncio.Event()

    async def publish() -> None:
        await gate.wait()

    first = asyncio.create_task(recent.once(rid, 1, publish))
    await wait_until(lambda: rid.int in recent._inflight, "the first attempt in flight", poll=0)
    with pytest.raises(Conflict):
        await recent.once(rid, 2, publish)
    gate.set()
    assert await first is True
    assert recent.confirmed(rid, 1) is True
    with pytest.raises(Conflict):
        recent.confirmed(rid, 2)
    with pytest.raises(Conflict):
        await recent.once(rid, 2, publish)
    assert recent.confirmed(uuid.uuid4(), 1) is False


# -- Idempotency-Key length (finding 8) -------------------------------------------------------


@pytest.mark.parametrize(("length", "status"), [(255, 202), (256, 400), (1_000_000, 400)])
async def test_an_idempotency_key_longer_than_the_limit_is_400(length: int, status: int) -> None:
    """Finding 8: an Idempotency-Key over max_idempotency_key_chars (255) gets 400 and is
    never published; one at the limit is accepted."""
    fake = FakePublisher()
    body = json.dumps({k: v for k, v in charge_request_body().items() if k != "request_id"})
    async with http(create_app(settings(), fake)) as client:
        resp = await client.post(
            URL, content=body, headers=JSON | {"Idempotency-Key": "k" * length}
        )
    assert resp.status_code == status
    if status == 400:
        assert "Idempotency-Key longer than 255 characters" in resp.json()["detail"]
    assert len(fake.received) == (1 if status == 202 else 0)
