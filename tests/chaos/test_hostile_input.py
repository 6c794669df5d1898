"""Hostile input: garbage published straight to the requests queue is dead-lettered with a reason
while valid requests behind it complete; a property-based fuzz of the HTTP API never gets a 500
and never gets an invalid message published."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import ChargeRequest, Topology
from gateway import GatewaySettings, create_app
from loadgen.run import RunOptions, run_load
from messaging import AmqpSettings, Session
from messaging.publishing import REASON_HEADER
from tests.chaos.harness import chaos_grid, loadgen_settings, score
from tests.helpers import collect

POISON: dict[str, bytes] = {
    "not json": b"\x00\xffnot json at all",
    "json, not an object": b"[1, 2, 3]",
    "wrong schema_version": json.dumps(
        {"schema_version": 2, "vehicle_id": "EV-1", "energy_kwh": 10, "max_power_kw": 11}
    ).encode(),
    "missing fields": json.dumps({"request_id": str(uuid.uuid4())}).encode(),
    "out of bounds": json.dumps(
        {"vehicle_id": "EV-2", "energy_kwh": -5, "max_power_kw": 10_000}
    ).encode(),
    "oversized": json.dumps(
        {"vehicle_id": "EV-" + "x" * 2_000_000, "energy_kwh": 10, "max_power_kw": 11}
    ).encode(),
}


@pytest.mark.timeout(180)
async def test_poison_is_dead_lettered_and_valid_requests_behind_it_complete(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    with chaos_grid(amqp_settings, topology, tmp_path) as grid:
        session = await Session.open(grid.settings, "smartgrid-chaos-poison")
        try:
            # Given poison published straight to <ns>.requests, ahead of valid requests
            for body in POISON.values():
                await session.publish(topology.requests_exchange, "", body)
            options = RunOptions(
                via="amqp", rate=50, requests=100, seed=3, settle_s=60,
                gateway_url=grid.gateway_url,
            )  # fmt: skip
            result = await run_load(loadgen_settings(grid), options)
            # Then each lies in <ns>.dead with the reason it was refused
            dead = await collect(session, topology.dead_queue, len(POISON), timeout=20)
        finally:
            await session.close()
    report = score("poison on the requests queue", result, None, f"{len(dead)} dead-lettered")
    assert sorted(d.body for d in dead) == sorted(POISON.values())
    reasons = {d.body: str(d.headers[REASON_HEADER]) for d in dead}
    oversized = reasons.pop(POISON["oversized"])
    assert oversized.startswith("larger than 16384 bytes"), oversized
    assert all(r.startswith("invalid ChargeRequest") for r in reasons.values()), reasons
    assert "schema_version" in reasons[POISON["wrong schema_version"]]
    assert "energy_kwh" in reasons[POISON["out of bounds"]]
    # And the valid requests behind them all completed
    assert (report.accepted, report.completed, report.lost) == (100, 100, 0)


class CheckingPublisher:
    """Stands in for the broker: fails the test if anything invalid would be published."""

    connected = True

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, request: ChargeRequest) -> None:
        # What goes on the wire must parse back as the contract, unchanged.
        assert ChargeRequest.model_validate_json(request.model_dump_json()) == request
        self.published += 1


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=15), children, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = {
    "request_id": st.uuids().map(str) | JSONISH,
    "vehicle_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,70}", fullmatch=True) | JSONISH,
    "energy_kwh": st.floats(allow_nan=True, allow_infinity=True) | JSONISH,
    "max_power_kw": st.floats(-10, 1000) | JSONISH,
    "priority": st.integers(-5, 20) | JSONISH,
    "departure": st.datetimes().map(lambda d: d.isoformat()) | JSONISH,
    "schema_version": st.integers(0, 3) | JSONISH,
}
VALID = st.fixed_dictionaries(
    {
        "vehicle_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,30}", fullmatch=True),
        "energy_kwh": st.floats(0.001, 300),
        "max_power_kw": st.floats(1, 500),
    },
    optional={"request_id": st.uuids().map(str), "priority": st.integers(0, 9)},
)
BODIES = st.one_of(
    VALID,
    # A valid request with one field swapped for anything at all
    st.tuples(VALID, st.sampled_from(sorted(FIELDS)), st.data()).map(
        lambda t: t[0] | {t[1]: t[2].draw(FIELDS[t[1]])}
    ),
    st.fixed_dictionaries({}, optional=FIELDS),
    JSONISH.map(lambda v: json.dumps(v, allow_nan=True)),
    st.binary(max_size=300),
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/xml"]
)


def test_fuzzing_the_http_api_never_gets_a_500_or_publishes_garbage() -> None:
    publisher = CheckingPublisher()
    app = create_app(GatewaySettings(namespace="fuzz"), publisher)
    transport = httpx.ASGITransport(app=app)
    statuses: dict[int, int] = {}

    @settings(
        max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(body=BODIES, content_type=CONTENT_TYPES, key=st.none() | st.text(max_size=40))
    def one(body: Any, content_type: str, key: str | None) -> None:
        raw = json.dumps(body, allow_nan=True).encode() if isinstance(body, dict) else body
        if isinstance(raw, str):
            raw = raw.encode()
        headers = {"content-type": content_type}
        if key is not None and key.isprintable() and key.isascii():
            headers["Idempotency-Key"] = key

        async def post() -> int:
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                return (
                    await client.post("/v1/charge-requests", content=raw, headers=headers)
                ).status_code

        status = asyncio.run(post())
        statuses[status] = statuses.get(status, 0) + 1
        # 409: an Idempotency-Key (or request_id) drawn again with another body
        assert status in {202, 409, 413, 415, 422}, (status, raw[:200], headers)

    one()
    # Valid ones got through; a repeated request_id is answered 202 (the same body) or 409
    # (another) without a second publish.
    assert 0 < publisher.published <= statuses.get(202, 0)
    assert statuses.get(422, 0) > 0
