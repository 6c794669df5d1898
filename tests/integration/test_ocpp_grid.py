"""Issue 14, acceptance point 1: the real grid (gateway, dispatcher, one OCPP substation worker
as processes, RabbitMQ) with simulated stations (loadgen.stations, the ``ocpp`` package's own
charge-point client). Requests sent through the HTTP gateway and cars that walk in all complete;
the limits the stations received never summed above the substation's capacity at any instant;
every completed event's energy is what a station metered."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from contracts import Topology
from loadgen.grid import LocalGrid, SubstationSpec, free_ports, metric_value
from loadgen.report import build_report
from loadgen.run import RunOptions, RunResult, run_load
from loadgen.settings import LoadgenSettings
from loadgen.stations.fleet import Fleet, make_fleet, run_fleet
from loadgen.stations.station import StationConfig
from loadgen.stations.walkins import WalkInConfig
from messaging import AmqpSettings
from tests.helpers import register_substations, wait_until

SUBSTATION = "ocpp1"
STATIONS, EVSES = 10, 2
EVSE_KW = 22.0
# Below what its cars would draw unconstrained: 20 EVSEs of 22 kW.
CAPACITY_KW = 100.0
REQUESTS = 50
WALK_INS = 20
TIME_SCALE = 3600.0  # a simulated hour per wall second
CONFIG = StationConfig(
    evses=EVSES,
    evse_max_w=EVSE_KW * 1000,
    car_need_wh=200_000,  # more than any request: the worker ends each dispatched session
    car_max_w=EVSE_KW * 1000,
    meter_interval_s=0.05,
)
# Walk-ins per station per simulated hour: twenty over the first few simulated hours.
WALK_IN_RATE = 0.6
KWH_TO_J = 3_600_000.0


async def drive(
    grid: LocalGrid, settings: AmqpSettings, port: int
) -> tuple[Fleet, RunResult, float]:
    fleet = make_fleet("cs", STATIONS, CONFIG)
    stop = asyncio.Event()
    stations = asyncio.create_task(
        run_fleet(
            f"ws://127.0.0.1:{port}/ocpp",
            fleet,
            CONFIG,
            TIME_SCALE,
            stop,
            walk_ins=WalkInConfig(per_hour=WALK_IN_RATE, max_count=WALK_INS, seed=14),
        )
    )
    try:
        # Every station booted and holds the worker's 0 W TxDefaultProfile: from here on no
        # EVSE may draw more than the worker gave.
        await wait_until(
            lambda: (
                len(fleet.limit_changes()) >= STATIONS * (EVSES + 1)
                and fleet.limit_totals()[-1][1] == 0
            ),
            "every station booted with its default profile",
            timeout=30,
        )
        since = time.monotonic()
        result = await run_load(
            LoadgenSettings(amqp_url=settings.amqp_url, namespace=settings.namespace),
            RunOptions(
                via="http",
                profile="steady",
                rate=10.0,
                requests=REQUESTS,
                seed=14,
                settle_s=120.0,
                gateway_url=grid.gateway_url,
            ),
        )
        await wait_until(
            lambda: (
                fleet.walk_ins == WALK_INS
                and not any(e.transaction for s in fleet.values() for e in s.evses)
            ),
            "every walk-in plugged in and left",
            timeout=90,
        )
    finally:
        stop.set()
        await asyncio.wait_for(stations, 15)
    return fleet, result, since


@pytest.mark.timeout(300)
def test_an_ocpp_substation_charges_gateway_requests_and_walk_ins_within_its_capacity(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    register_substations(topology, [SUBSTATION])
    settings = amqp_settings.model_copy(update={"namespace": topology.namespace})
    grid = LocalGrid(
        [SubstationSpec(SUBSTATION, CAPACITY_KW, STATIONS * EVSES)],
        settings=settings,
        time_scale=TIME_SCALE,
        heartbeat_interval_s=0.5,
        log_dir=tmp_path / "grid",
        process_env={
            f"worker-{SUBSTATION}": {
                "SMARTGRID_OCPP_PORT": str(port),
                "SMARTGRID_OCPP_SETTLE_S": "0",
                "SMARTGRID_CHARGER_MAX_KW": f"{EVSE_KW:g}",
            }
        },
    )
    with grid:
        fleet, result, since = asyncio.run(drive(grid, settings, port))
        text = httpx.get(grid.metrics_urls[f"worker-{SUBSTATION}"], timeout=5).text
    report = build_report(result, [SUBSTATION])
    labels = {"substation": SUBSTATION}
    delivered_kwh = (
        metric_value(text, "smartgrid_substation_energy_delivered_joules_total", labels) or 0.0
    ) / KWH_TO_J
    outcomes = {
        o: metric_value(text, "smartgrid_substation_demands_total", {**labels, "outcome": o}) or 0
        for o in ("full", "departed", "unserved")
    }
    metered = fleet.ended_transactions()
    totals = [w for t, w in fleet.limit_totals() if t >= since]
    print(
        f"\n{REQUESTS} requests + {WALK_INS} walk-ins on {STATIONS}x{EVSES} EVSEs, "
        f"{CAPACITY_KW:g} kW: delivered {delivered_kwh:.3f} kWh, outcomes {outcomes}, "
        f"peak of the limits given {max(totals) / 1000:.3f} kW, "
        f"walk-ins turned away {fleet.turned_away}"
    )
    # Every request sent through the gateway completed, once; none lost.
    assert report.lost == 0, report.lost_ids
    assert report.sent == report.accepted == report.completed == REQUESTS
    assert report.duplicates == report.suspect == 0
    # Every walk-in plugged in and ended, as a session of the substation: 70 sessions in all,
    # one transaction each.
    assert fleet.walk_ins == WALK_INS
    assert sum(outcomes.values()) == REQUESTS + WALK_INS
    assert len(metered) == REQUESTS + WALK_INS
    # The limits the stations received never summed above the capacity, and the cars were
    # limited (their EVSEs alone would take 440 kW): the capacity was handed out, in shares
    # below an EVSE's 22 kW.
    assert max(totals) <= CAPACITY_KW * 1000 + 1e-6
    assert max(totals) >= 0.75 * CAPACITY_KW * 1000
    shares = [c.limit_w for c in fleet.limit_changes() if c.evse_id and c.limit_w]
    assert any(w < EVSE_KW * 1000 * 0.9 for w in shares)
    # Each completed event's energy is what its station metered: loadgen's completions are
    # among the stations' ended transactions, and the worker's total is theirs.
    pool = Counter(round(wh / 1000, 3) for wh in metered.values())
    for _, kwh in result.state.completions.values():
        assert pool[round(kwh, 3)] > 0, f"{kwh} kWh was not metered by any station"
        pool[round(kwh, 3)] -= 1
    assert delivered_kwh == pytest.approx(math.fsum(metered.values()) / 1000, abs=1e-3)
    # Each dispatched car was stopped at its energy (no departures were given): demand met.
    assert report.demands == report.demands_met == REQUESTS
