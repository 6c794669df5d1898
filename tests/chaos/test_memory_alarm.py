"""A memory alarm blocks publishers: the gateway must answer 503 within its confirm timeout,
never hang, give a blocked connection up after blocked_connection_timeout, and accept again once
the alarm clears. On a private broker node (alarms are node-wide)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from gateway import AmqpRequestPublisher, GatewaySettings, create_app
from tests.helpers import wait_until
from tests.private_broker import private_broker

BODY = {"vehicle_id": "EV-ALARM", "energy_kwh": 20, "max_power_kw": 11}
CONFIRM_TIMEOUT_S = 2.0
BLOCKED_TIMEOUT_S = 3.0


@pytest.mark.timeout(180)
async def test_a_memory_alarm_gets_503_in_time_and_recovers() -> None:
    with private_broker() as broker:
        settings = GatewaySettings(
            amqp_url=broker.url,
            namespace="chaos-alarm",
            confirm_timeout_s=CONFIRM_TIMEOUT_S,
            blocked_connection_timeout_s=BLOCKED_TIMEOUT_S,
            reconnect_max_s=1,
        )
        publisher = AmqpRequestPublisher(settings)
        await publisher.start()
        transport = httpx.ASGITransport(app=create_app(settings, publisher))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:

                async def post() -> tuple[int, float]:
                    started = time.monotonic()
                    r = await client.post("/v1/charge-requests", json=BODY)
                    return r.status_code, time.monotonic() - started

                await wait_until(lambda: publisher.connected, "the gateway to connect", timeout=30)
                assert (await post())[0] == 202
                # When the broker raises a memory alarm (in effect when this returns), publishes
                # are blocked
                await asyncio.to_thread(broker.memory_alarm, True)
                status, took = await post()
                # Then the request gets 503 when its confirm does not come, not a hang
                assert status == 503
                assert took < CONFIRM_TIMEOUT_S + 1.5
                # And the blocked connection is given up (and a new one tried), while requests
                # keep getting 503 in time
                await wait_until(
                    lambda: publisher.connections_made >= 2,
                    "the blocked connection given up and another one made",
                    timeout=BLOCKED_TIMEOUT_S + 1,
                )
                status, took = await post()
                assert status == 503
                assert took < CONFIRM_TIMEOUT_S + 1.5
                # When the alarm clears, the gateway reconnects and accepts again
                await asyncio.to_thread(broker.memory_alarm, False)

                async def accepted() -> bool:
                    return (await post())[0] == 202

                await wait_until(accepted, "a 202 after the alarm cleared", timeout=30, poll=0.2)
        finally:
            await publisher.stop()
