"""N simulated stations ``<prefix>-1`` .. ``<prefix>-N`` against one CSMS URL, for a bounded
time. A station whose connection fails or closes connects again (after 1 s, doubling to 10 s, with
jitter) with its EVSEs as they were, until the fleet stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.client import connect

from contracts.ocpp import SUBPROTOCOL
from loadgen.stations.evse import Evse
from loadgen.stations.station import SimClock, SimStation, StationConfig, cancel_all
from messaging.backoff import compute_backoff
from messaging.waiting import sleep_unless

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 10.0
# After the stop, stations still connecting or closing get this long, then are cancelled.
STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class FleetReport:
    stations: int
    booted: int
    sessions_ended: int
    charging: int
    energy_wh: float


def station_url(base: str, station_id: str) -> str:
    return f"{base.rstrip('/')}/{station_id}"


async def run_station(
    url: str,
    station_id: str,
    config: StationConfig,
    clock: Callable[[], float],
    evses: list[Evse],
    stop: asyncio.Event,
    booted: set[str],
) -> None:
    attempt = 0
    last_failure = ""
    while not stop.is_set():
        try:
            async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
                station = SimStation(station_id, ws, config, clock, evses)
                watch = asyncio.create_task(station.booted.wait())
                watch.add_done_callback(lambda _t: booted.add(station_id))
                try:
                    await station.run(stop)
                finally:
                    watch.cancel()
                attempt = 0
                last_failure = ""
        except Exception as exc:  # any failure of one connection: the station connects again
            failure = f"{type(exc).__name__}: {exc}"
            # Once per kind of failure: a thousand stations retrying must not flood the log.
            log.log(
                logging.DEBUG if failure == last_failure else logging.WARNING,
                "station %s: %s (connecting again)",
                station_id,
                failure,
            )
            last_failure = failure
        if stop.is_set():
            return
        # Jittered, as the services' own reconnects: a thousand stations do not come back at once.
        await sleep_unless(stop, compute_backoff(attempt, base_s=RETRY_FIRST_S, cap_s=RETRY_MAX_S))
        attempt += 1


Fleet = dict[str, list[Evse]]  # station id: its EVSEs, kept across reconnections


def make_fleet(prefix: str, count: int, config: StationConfig) -> Fleet:
    return {
        f"{prefix}-{n}": [Evse(i, config.evse_max_w) for i in range(1, config.evses + 1)]
        for n in range(1, count + 1)
    }


async def run_fleet(
    url: str,
    fleet: Fleet,
    config: StationConfig,
    time_scale: float,
    stop: asyncio.Event,
    duration_s: float | None = None,
) -> FleetReport:
    """Run every station of ``fleet`` until ``stop`` is set or ``duration_s`` (wall) is up."""
    clock = SimClock(time_scale)
    booted: set[str] = set()
    tasks = [
        asyncio.create_task(
            run_station(station_url(url, sid), sid, config, clock, evses, stop, booted)
        )
        for sid, evses in fleet.items()
    ]
    if duration_s is None:
        await stop.wait()
    else:
        await sleep_unless(stop, duration_s)
    stop.set()
    await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    await cancel_all(tasks)
    all_evses = [e for evses in fleet.values() for e in evses]
    return FleetReport(
        stations=len(fleet),
        booted=len(booted),
        sessions_ended=sum(e.sessions_ended for e in all_evses),
        charging=sum(e.transaction is not None for e in all_evses),
        energy_wh=sum(e.energy_ended_wh for e in all_evses)
        + sum(e.transaction.meter.energy_wh for e in all_evses if e.transaction is not None),
    )
