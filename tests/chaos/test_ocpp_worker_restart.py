"""An OCPP substation's worker killed -9 under load and started again (issue 14, acceptance 2,
on the real grid): the cars are on the stations, so its queue is not taken back (its heartbeat
says ``keeps_sessions``) although a simulated substation could take the work; the new worker
rebuilds its sessions from the stations and completes them. Nothing lost, nothing charged twice:
one station transaction per request charged there."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from contracts import Topology
from loadgen.grid import LocalGrid, SubstationSpec, free_ports
from loadgen.report import build_report
from loadgen.stations.fleet import make_fleet, run_fleet
from loadgen.stations.station import StationConfig
from messaging import AmqpSettings
from tests.chaos.harness import (
    FAST_RECONNECT,
    HEARTBEAT_S,
    assert_nothing_lost,
    load_with_fault,
    metric,
    score,
)
from tests.helpers import register_substations, wait_until

SIM, OCPP = "s300", "oc60"
TIME_SCALE = 1200.0  # a session of ~20 kWh lasts about 8 wall seconds at 7.5 kW
STATIONS, EVSES = 4, 2
CONFIG = StationConfig(
    evses=EVSES,
    evse_max_w=22_000,
    car_need_wh=200_000,
    car_max_w=22_000,
    meter_interval_s=0.1,
)
# Longer than the dispatcher's stale window (3 heartbeats): it would take the queue back now.
DOWN_S = 3.0


@pytest.mark.timeout(240)
async def test_kill_9_an_ocpp_worker_and_start_it_again(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    register_substations(topology, [SIM, OCPP])
    worker = f"worker-{OCPP}"
    grid = LocalGrid(
        [SubstationSpec(SIM, 300, 8), SubstationSpec(OCPP, 60, STATIONS * EVSES)],
        settings=amqp_settings.model_copy(update={"namespace": topology.namespace}),
        time_scale=TIME_SCALE,
        heartbeat_interval_s=HEARTBEAT_S,
        log_dir=tmp_path,
        extra_env=FAST_RECONNECT,
        process_env={
            worker: {
                "SMARTGRID_OCPP_PORT": str(port),
                "SMARTGRID_OCPP_SETTLE_S": "8",
                "SMARTGRID_CHARGER_MAX_KW": "22",
            }
        },
    )
    fleet = make_fleet("cs", STATIONS, CONFIG)
    stop = asyncio.Event()
    with grid:
        stations = asyncio.create_task(
            run_fleet(f"ws://127.0.0.1:{port}/ocpp", fleet, CONFIG, TIME_SCALE, stop)
        )
        await wait_until(
            lambda: len(fleet.limit_changes()) >= STATIONS * (EVSES + 1),
            "every station booted with its profiles",
            timeout=30,
        )
        # The settle time of the first worker passes before the load.
        await asyncio.sleep(8.0)
        down: list[float] = []

        async def kill_and_restart() -> None:
            await wait_until(
                lambda: (
                    sum(e.transaction is not None for s in fleet.values() for e in s.evses) >= 3
                ),
                "cars charging at the OCPP substation",
                timeout=30,
            )
            grid.send_signal(worker, signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.sleep(DOWN_S)
            grid.restart(worker)
            await wait_until(
                lambda: (
                    metric(grid, worker, "smartgrid_substation_broker_connected", substation=OCPP)
                    == 1
                ),
                "the new worker connected",
                blocking=True,
                timeout=30,
            )
            down.append(time.monotonic() - killed)

        try:
            result = await load_with_fault(
                grid, kill_and_restart, rate=10.0, requests=50, settle_s=150.0
            )
        finally:
            stop.set()
            await asyncio.wait_for(stations, 15)
        walk_ins = metric(grid, worker, "smartgrid_substation_ocpp_walk_ins_total", substation=OCPP)
        reclaimed = metric(
            grid, "dispatcher", "smartgrid_dispatcher_reclaimed_total", substation=OCPP
        )
    report = score("kill -9 an OCPP worker, restart", result, down[0], "down, restarted")
    assert_nothing_lost(result, report)
    # Its queue was never taken back: its cars stayed where they charge.
    assert reclaimed == 0
    # Every transaction the new worker found is a request's: none taken for a walk-in.
    assert walk_ins == 0
    # One station transaction per request charged at the OCPP substation: none started twice.
    at_ocpp = [rid for rid, (sid, _) in result.state.completions.items() if sid == OCPP]
    assert at_ocpp, "the OCPP substation charged nothing"
    assert len(fleet.ended_transactions()) == len(at_ocpp)
    assert build_report(result, [SIM, OCPP]).lost == 0
