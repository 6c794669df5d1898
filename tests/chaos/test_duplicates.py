"""Duplicates on the wire, one charge each: the same request_id published twice, and a
dispatcher that dies between the broker's confirm of an assignment and its ack of the request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from contracts import ChargeRequest, EventKind, Topology
from loadgen.observe import GridObserver
from messaging import AmqpSettings, Session
from tests.chaos.harness import (
    assert_nothing_lost,
    chaos_grid,
    drained,
    load_with_fault,
    metric,
    metric_sum,
    score,
)
from tests.helpers import wait_until

CRASH_AT = 120  # confirms, of 200 requests


@pytest.mark.timeout(180)
async def test_the_same_request_id_twice_completes_once(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    with chaos_grid(amqp_settings, topology, tmp_path) as grid:
        async with GridObserver(grid.settings, topology) as observer:
            session = await Session.open(grid.settings, "smartgrid-chaos-duplicates")
            try:
                twins = [
                    ChargeRequest(vehicle_id=f"EV-TWIN-{i}", energy_kwh=20, max_power_kw=11)
                    for i in range(20)
                ]
                # Given each request published twice at once, and again once it was dispatched
                for request in twins:
                    body = request.model_dump_json().encode()
                    await asyncio.gather(
                        session.publish(topology.requests_exchange, "", body),
                        session.publish(topology.requests_exchange, "", body),
                    )
                ids = {r.request_id for r in twins}
                await wait_until(
                    lambda: ids <= observer.state.by_kind[EventKind.DISPATCHED],
                    "every twin dispatched",
                    timeout=60,
                )
                for request in twins:
                    body = request.model_dump_json().encode()
                    await session.publish(topology.requests_exchange, "", body)
            finally:
                await session.close()
            state = observer.state
            await wait_until(
                lambda: ids <= state.by_kind[EventKind.COMPLETED],
                "every twin completed",
                timeout=60,
            )
            # Once the dispatcher dropped every copy, no copy is left to complete a second time.
            duplicates = "smartgrid_dispatcher_duplicates_total"
            await wait_until(
                lambda: metric(grid, "dispatcher", duplicates) >= 2 * len(twins),
                f"the dispatcher to drop all {2 * len(twins)} copies",
                timeout=30,
                blocking=True,
                detail=lambda: f"dropped {metric(grid, 'dispatcher', duplicates):g}",
            )
        dropped = metric(grid, "dispatcher", duplicates)
        left = await drained(grid.settings, topology)
    # Then every one completed, exactly once, and the dispatcher dropped the copies
    assert ids <= state.by_kind[EventKind.COMPLETED]
    assert {len(state.completion_events[r]) for r in ids} == {1}
    assert dropped == 2 * len(twins)
    assert set(left.values()) == {0}, left


@pytest.mark.timeout(240)
async def test_a_dispatcher_dying_between_confirm_and_ack_charges_once(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    # Both dispatchers carry the fault; the active one reaches it, the standby never does.
    fault = {"SMARTGRID_FAULT_EXIT_AFTER_CONFIRMS": str(CRASH_AT)}
    with chaos_grid(
        amqp_settings,
        topology,
        tmp_path,
        dispatchers=2,
        process_env={"dispatcher": fault, "dispatcher-2": fault},
    ) as grid:
        crashed = [p for p in grid.processes if p.name.startswith("dispatcher")]

        async def nothing() -> None:
            return None

        result = await load_with_fault(grid, nothing, requests=200)
        codes = {p.name: (p.popen.poll() if p.popen else None) for p in crashed}
        survivor = next(name for name, code in codes.items() if code is None)
        dropped = metric_sum(grid, survivor, "smartgrid_dispatcher_duplicates_total")
        resent = metric_sum(grid, survivor, "smartgrid_dispatcher_resent_total")
        left = await drained(grid.settings, topology)
    report = score(
        "dispatcher dies after confirm", result, None, f"{dropped + resent:.0f} came back"
    )
    # One dispatcher died at the fault, the other took over
    assert sorted(c for c in codes.values() if c is not None) == [137], codes
    # What it had announced but not acked came back to the standby, which sent it to the same
    # substation (whose worker dropped the copy) rather than charge it somewhere else too
    assert dropped + resent >= 1
    assert_nothing_lost(result, report)
    assert set(left.values()) == {0}, left
