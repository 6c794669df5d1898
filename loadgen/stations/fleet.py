"""N simulated stations ``<prefix>-1`` .. ``<prefix>-N`` against one CSMS URL, for a bounded
time. A station whose connection fails or closes connects again (after 1 s, doubling to 10 s, with
jitter) with its state as it was (EVSEs, profiles, TransactionEvents kept offline), until the
fleet stops. Its cars keep charging, filling up and leaving while it is offline."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.client import connect

from contracts.ocpp import SUBPROTOCOL
from loadgen.stations.limits import LimitChange, limit_totals
from loadgen.stations.state import SimClock, StationConfig, StationState
from loadgen.stations.station import SimStation, cancel_all
from loadgen.stations.walkins import WalkInConfig, next_arrival_wall_s, sample_walk_in
from messaging.backoff import compute_backoff
from messaging.waiting import sleep_unless

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 10.0
# After the stop, stations still connecting or closing get this long, then are cancelled.
STOP_GRACE_S = 2.0
PASSWORD_ENV = "SMARTGRID_STATION_PASSWORD"


@dataclass(frozen=True)
class FleetReport:
    stations: int
    booted: int
    sessions_ended: int
    charging: int
    energy_wh: float
    walk_ins: int = 0
    turned_away: int = 0  # walk-ins that found no free EVSE at a connected station


class Fleet(dict[str, StationState]):
    """Station id: its state, kept across reconnections."""

    def __init__(self) -> None:
        super().__init__()
        self.walk_ins = 0  # plugged in
        self.turned_away = 0  # found no free EVSE at a connected station

    def limit_changes(self) -> list[LimitChange]:
        """Every station's limit changes, in time order."""
        changes = [c for s in self.values() for c in s.limits.changes()]
        return sorted(changes, key=lambda c: c.at_monotonic)

    def limit_totals(self) -> list[tuple[float, float]]:
        """The sum over stations of the most each may draw under its limits, as steps
        (from ``time.monotonic``, W): see ``limits.limit_totals``."""
        return limit_totals(s.limits for s in self.values())

    def metered_wh(self, transaction_id: str) -> float | None:
        """Wh an ended transaction metered (the last 10 000 per EVSE); None if unknown."""
        for state in self.values():
            wh = state.metered_wh(transaction_id)
            if wh is not None:
                return wh
        return None

    def ended_transactions(self) -> dict[str, float]:
        """Transaction id: Wh metered, of every station's kept ended transactions."""
        return {tx: wh for s in self.values() for tx, wh in s.ended_transactions().items()}


def station_url(base: str, station_id: str) -> str:
    return f"{base.rstrip('/')}/{station_id}"


def basic_auth(station_id: str, password: str) -> str:
    """Security profile 1/2: HTTP Basic with the station id as the user."""
    return "Basic " + base64.b64encode(f"{station_id}:{password}".encode()).decode("ascii")


def _ssl_context(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    if not url.startswith("wss://"):
        return None
    return ssl.create_default_context(cafile=ca_file)


async def _tick_loop(state: StationState, stop: asyncio.Event) -> None:
    while not stop.is_set():
        state.tick()
        await sleep_unless(stop, state.config.tick_s)


async def run_station(
    url: str,
    state: StationState,
    stop: asyncio.Event,
    booted: set[str],
) -> None:
    station_id = state.station_id
    password = state.config.password or os.environ.get(PASSWORD_ENV)
    headers = {"Authorization": basic_auth(station_id, password)} if password else None
    tls = _ssl_context(url, state.config.ca_file)
    ticking = asyncio.create_task(_tick_loop(state, stop))
    attempt = 0
    last_failure = ""
    try:
        while not stop.is_set():
            try:
                async with connect(
                    url,
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    additional_headers=headers,
                    ssl=tls,
                ) as ws:
                    station = SimStation(state, ws)
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
            # Jittered, as the services' own reconnects: a thousand stations do not come back
            # at once.
            await sleep_unless(
                stop, compute_backoff(attempt, base_s=RETRY_FIRST_S, cap_s=RETRY_MAX_S)
            )
            attempt += 1
    finally:
        await cancel_all([ticking])


def make_fleet(prefix: str, count: int, config: StationConfig) -> Fleet:
    fleet = Fleet()
    for n in range(1, count + 1):
        fleet[f"{prefix}-{n}"] = StationState(f"{prefix}-{n}", config)
    return fleet


async def walk_in_loop(
    fleet: Fleet, walk: WalkInConfig, time_scale: float, stop: asyncio.Event
) -> None:
    """Walk-ins arrive (Poisson, ``walk.per_hour`` per station per simulated hour) at a random
    free EVSE of a connected station, until ``walk.max_count`` plugged in or the stop."""
    if walk.per_hour <= 0 or walk.max_count <= 0 or not fleet:
        return
    rng = random.Random(walk.seed)
    while fleet.walk_ins < walk.max_count and not stop.is_set():
        await sleep_unless(stop, next_arrival_wall_s(rng, walk.per_hour, len(fleet), time_scale))
        if stop.is_set():
            return
        free = [
            (state, evse)
            for state in fleet.values()
            if state.outbox.online
            for evse in state.evses
            if evse.transaction is None
        ]
        if not free:
            fleet.turned_away += 1
            continue
        state, evse = rng.choice(free)
        fleet.walk_ins += 1
        state.walk_in(evse, sample_walk_in(rng, fleet.walk_ins, evse.max_w, walk.mix))


async def run_fleet(
    url: str,
    fleet: Fleet,
    config: StationConfig,
    time_scale: float,
    stop: asyncio.Event,
    duration_s: float | None = None,
    walk_ins: WalkInConfig | None = None,
    clock: Callable[[], float] | None = None,
) -> FleetReport:
    """Run every station of ``fleet`` until ``stop`` is set or ``duration_s`` (wall) is up."""
    del config  # each station has its own (make_fleet's)
    sim_clock = clock or SimClock(time_scale)
    for state in fleet.values():
        state.clock = sim_clock
    booted: set[str] = set()
    tasks = [
        asyncio.create_task(run_station(station_url(url, sid), state, stop, booted))
        for sid, state in fleet.items()
    ]
    if walk_ins is not None:
        tasks.append(asyncio.create_task(walk_in_loop(fleet, walk_ins, time_scale, stop)))
    if duration_s is None:
        await stop.wait()
    else:
        await sleep_unless(stop, duration_s)
    stop.set()
    await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    await cancel_all(tasks)
    all_evses = [e for state in fleet.values() for e in state.evses]
    return FleetReport(
        stations=len(fleet),
        booted=len(booted),
        sessions_ended=sum(e.sessions_ended for e in all_evses),
        charging=sum(e.transaction is not None for e in all_evses),
        energy_wh=sum(e.energy_ended_wh for e in all_evses)
        + sum(e.transaction.meter.energy_wh for e in all_evses if e.transaction is not None),
        walk_ins=fleet.walk_ins,
        turned_away=fleet.turned_away,
    )
