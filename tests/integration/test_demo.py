"""`make demo`'s command end to end: it brings up the grid, drives a burst through the gateway,
shows every substation, reports, exits 0, and leaves no process and no namespace behind."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contracts import Topology
from messaging import AmqpSettings, FatalBrokerError, Session

REQUESTS = 90


async def _queue_exists(settings: AmqpSettings, queue: str) -> bool:
    session = await Session.open(settings, "smartgrid-tests-demo-check")
    try:
        await session.queue_depth(queue)
    except FatalBrokerError:  # 404 NOT_FOUND closes the channel
        return False
    finally:
        await session.close()
    return True


@pytest.mark.timeout(180)
def test_demo_runs_the_grid_and_exits_0(amqp_settings: AmqpSettings, tmp_path: Path) -> None:
    # Given a broker; When the demo runs a small, fast burst (from a scratch folder for its logs)
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "loadgen", "demo"),
            *("--requests", str(REQUESTS), "--time-scale", "36000", "--timeout", "120"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout + done.stderr
    # Then it ends by itself with 0, every request completed, each substation in the report
    assert done.returncode == 0, out
    assert f"all {REQUESTS} accepted requests completed" in out, out
    for sid in ("s150", "s300", "s600"):
        assert re.search(rf"^\W*{sid}\W+\d+\W+\d+\W", out, re.MULTILINE), (sid, out)
    # And its namespace is gone
    match = re.search(r"namespace (demo-[0-9a-f]+)", out)
    assert match, out
    assert not asyncio.run(_queue_exists(amqp_settings, Topology(match[1]).requests_queue))


STATION_REQUESTS = 150


@pytest.mark.timeout(120)
def test_demo_with_stations_reports_what_the_stations_metered(
    amqp_settings: AmqpSettings, tmp_path: Path
) -> None:
    # Given a broker; When the demo runs with an OCPP substation of 4 simulated stations
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "loadgen", "demo", "--stations", "4", "--walk-ins", "4", "--seed", "7"),
            *("--requests", str(STATION_REQUESTS), "--time-scale", "7200", "--timeout", "60"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout + done.stderr
    # Then it ends by itself with 0, every request completed, the OCPP substation listed too
    assert done.returncode == 0, out
    assert f"all {STATION_REQUESTS} accepted requests completed" in out, out
    for sid in ("s150", "s300", "s600", "s60-ocpp"):
        assert re.search(rf"^\W*{sid}\W+\d+\W+\d+\W", out, re.MULTILINE), (sid, out)
    # And every station connected; the requests completed there carry what the stations metered
    assert "stations connected 4/4" in out, out
    requests = re.search(
        r"requests: (\d+) completed there, ([\d.]+) kWh in their completed events, ([\d.]+) kWh "
        r"metered by the stations for them \(0 differ\)",
        out,
    )
    assert requests, out
    assert int(requests[1]) > 0, out
    assert requests[2] == requests[3], out
    # And walk-ins were served; the worker's completed sessions are the stations' transactions
    walk_ins = re.search(
        r"walk-ins: 4 plugged in \(\d+ found no free EVSE\), (\d+) served \((\d+) ended", out
    )
    assert walk_ins, out
    assert int(walk_ins[1]) > 0, out
    events = re.search(
        r"(\d+) sessions, ([\d.]+) kWh; the stations ended (\d+) transactions and metered "
        r"([\d.]+) kWh",
        out,
    )
    assert events, out
    assert (events[1], events[2]) == (events[3], events[4]), out
    assert int(events[1]) == int(requests[1]) + int(walk_ins[2]), out
    # And the sharing reached the stations, never above the 60 kW capacity
    sharing = re.search(
        r"limits summed to at most ([\d.]+) kW, they drew at most ([\d.]+) kW; (\d+) cars had", out
    )
    assert sharing, out
    assert float(sharing[1]) <= 60.0, out
    assert int(sharing[3]) > 0, out
    # And its namespace is gone
    match = re.search(r"namespace (demo-[0-9a-f]+)", out)
    assert match, out
    assert not asyncio.run(_queue_exists(amqp_settings, Topology(match[1]).requests_queue))
