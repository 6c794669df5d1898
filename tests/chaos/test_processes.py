"""Processes die under load: a worker killed, a worker stopped, the active dispatcher killed."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from contracts import Topology
from messaging import AmqpSettings
from tests.chaos.harness import (
    assert_nothing_lost,
    chaos_grid,
    drained,
    load_with_timed_fault,
    metric,
    metric_sum,
    score,
    signal_then_wait,
    taken_back,
)

VICTIM = "s600"


@pytest.mark.timeout(240)
async def test_kill_9_a_worker_under_load(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    stale = "smartgrid_dispatcher_substations"
    with chaos_grid(amqp_settings, topology, tmp_path) as grid:

        async def kill() -> float:
            return await signal_then_wait(
                grid,
                f"worker-{VICTIM}",
                signal.SIGKILL,
                lambda: metric(grid, "dispatcher", stale, state="stale") >= 1,
                f"the dispatcher to count {VICTIM} stale",
                timeout=15,
            )

        # Given steady load, when the biggest worker is killed -9 three seconds in
        result, out_of_rotation = await load_with_timed_fault(grid, kill)
        reclaimed, left = await taken_back(grid, topology, VICTIM)
    report = score("kill -9 a worker", result, out_of_rotation, "out of rotation")
    # Then every accepted request completed, once, and nothing is left in any queue
    assert_nothing_lost(result, report)
    assert set(left.values()) == {0}, left
    # What waited at the victim, or was charging there, was taken back and completed elsewhere
    assert reclaimed > 0
    survivors = {r.substation_id: r.requests for r in report.substations}
    assert survivors["s150"] + survivors["s300"] >= reclaimed


@pytest.mark.timeout(240)
async def test_sigterm_drains_a_worker_which_exits_0(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    codes: list[int | None] = []
    with chaos_grid(amqp_settings, topology, tmp_path) as grid:

        async def stop() -> float:
            started = time.monotonic()
            grid.send_signal(f"worker-{VICTIM}", signal.SIGTERM)
            (proc,) = [p for p in grid.processes if p.name == f"worker-{VICTIM}"]
            assert proc.popen is not None
            codes.append(await asyncio.to_thread(proc.popen.wait, 30))
            return time.monotonic() - started

        result, drain_s = await load_with_timed_fault(grid, stop)
        left = await drained(grid.settings, topology)
    report = score("SIGTERM a worker", result, drain_s, "to drain and exit")
    assert codes == [0]
    assert_nothing_lost(result, report)
    assert set(left.values()) == {0}, left


@pytest.mark.timeout(240)
async def test_kill_9_the_active_dispatcher_and_the_standby_takes_over(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    decisions = "smartgrid_dispatcher_decisions_total"
    with chaos_grid(amqp_settings, topology, tmp_path, dispatchers=2) as grid:

        async def kill_active() -> float:
            counts = {d: metric_sum(grid, d, decisions) for d in ("dispatcher", "dispatcher-2")}
            active = max(counts, key=lambda d: counts[d])
            standby = "dispatcher-2" if active == "dispatcher" else "dispatcher"
            assert counts[active] > 0
            assert counts[standby] == 0  # single active consumer: only one dispatches
            return await signal_then_wait(
                grid,
                active,
                signal.SIGKILL,
                lambda: metric_sum(grid, standby, decisions) > 0,
                f"{standby} (the standby) to decide",
                timeout=30,
                poll=0.02,
            )

        result, takeover = await load_with_timed_fault(grid, kill_active)
        left = await drained(grid.settings, topology)
    report = score("kill -9 the active dispatcher", result, takeover, "standby takeover")
    assert_nothing_lost(result, report)
    assert set(left.values()) == {0}, left
