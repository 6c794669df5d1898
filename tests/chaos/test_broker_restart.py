"""The broker goes away under load and comes back: every process reconnects by itself, the
gateway says 503 (never 202, never a hang) meanwhile, and every accepted request completes.

It restarts a private RabbitMQ node of its own, never the shared one."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest

from contracts import Topology
from messaging import AmqpSettings
from tests.chaos.harness import (
    IDS,
    assert_nothing_lost,
    chaos_grid,
    drained,
    load_with_timed_fault,
    metric,
    metric_sum,
    score,
)
from tests.helpers import wait_until
from tests.private_broker import private_broker

OUTAGE_S = 4.0


@pytest.mark.timeout(300)
async def test_broker_restart_under_load(tmp_path: Path) -> None:
    with private_broker() as broker:
        settings = AmqpSettings(amqp_url=broker.url)
        topology = Topology(f"chaos-restart-{uuid.uuid4().hex[:6]}")
        with chaos_grid(settings, topology, tmp_path) as grid:

            def connected() -> bool:
                gauges = [metric(grid, "dispatcher", "smartgrid_dispatcher_broker_connected")]
                connected = "smartgrid_substation_broker_connected"
                gauges += [metric(grid, f"worker-{s}", connected, substation=s) for s in IDS]
                try:
                    ok = httpx.get(f"{grid.gateway_url}/healthz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    ok = False
                return ok and all(v == 1.0 for v in gauges)

            async def restart() -> float:
                await asyncio.to_thread(broker.stop_app)
                # How long the broker stays away is the fault itself, not a wait for anything.
                await asyncio.sleep(OUTAGE_S)
                back = time.monotonic()
                await asyncio.to_thread(broker.start_app)
                await wait_until(
                    connected,
                    "the gateway healthy and every process reconnected",
                    timeout=60,
                    poll=0.1,
                    blocking=True,
                )
                return time.monotonic() - back

            # Given steady load for 12 s, when the broker is away from 3 s for 4 s
            result, recovered = await load_with_timed_fault(
                grid, restart, requests=300, settle_s=120
            )
            left = await drained(settings, topology)
            # No worker died: after reconnecting, the dispatcher waited for fresh heartbeats
            # instead of taking back every substation's queue (their last ones predate the outage).
            reclaimed = metric_sum(grid, "dispatcher", "smartgrid_dispatcher_reclaimed_total")
    report = score("restart the broker", result, recovered, "all reconnected")
    # Then the gateway refused with 503 while the broker was away, and nothing else
    assert report.rejected_at_ingress.get("503", 0) > 0, report.rejected_at_ingress
    assert set(report.rejected_at_ingress) == {"503"}, report.rejected_at_ingress
    # And everything it accepted completed, once
    assert_nothing_lost(result, report)
    assert set(left.values()) == {0}, left
    assert reclaimed == 0
