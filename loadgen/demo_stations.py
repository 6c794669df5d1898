"""The demo's OCPP substation: one worker serving OCPP 2.0.1 (``--ocpp-port``) and a fleet of
simulated stations (``loadgen.stations``) run in the demo process, on their own thread and event
loop, so that the end report can compare what the stations metered with what the grid reported.

Its capacity is ``KW_PER_EVSE`` per EVSE, about a third of what an EVSE delivers: its cars
together could draw about three times the capacity, so the sharing limits them and the limits
reach the stations as TxProfiles. Walk-ins (the stations' own transactions) come during the
burst, at the demo's time scale.

``summarize`` (pure) turns what the stations recorded, the run's completions and the worker's
counters into the report's figures and the problems that make the demo fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

import httpx

from loadgen.demand import DEFAULT_MIX
from loadgen.grid import SubstationSpec, metric_value
from loadgen.stations.evse import Car, Evse, Transaction
from loadgen.stations.fleet import Fleet, FleetReport, run_fleet, walk_in_loop
from loadgen.stations.state import StationConfig, StationState
from loadgen.stations.walkins import PARKING_SLACK, WalkInConfig

T = TypeVar("T")

EVSE_MAX_KW = 22.0  # a three-phase 32 A AC charger; the worker's charger max is the same
# The substation's capacity per EVSE: about a third of EVSE_MAX_KW, so that its cars are limited.
KW_PER_EVSE = 7.5
# Walk-ins arrive at this rate over the fleet: all K in about this many simulated hours.
WALK_IN_SPREAD_H = 4.0
# MeterValues this often (wall): the worker ends a dispatched car from them, and from its
# estimate in between, so a shorter interval means less energy beyond the request.
METER_INTERVAL_S = 0.1
# The longest a walk-in stays (simulated s): its most energy at its least power, times the most
# slack (loadgen.stations.walkins). Every walk-in has ended this long after it arrived.
WALK_IN_MAX_PARKING_S = (
    DEFAULT_MIX.energy_kwh[1] / min(DEFAULT_MIX.ac_kw[0], EVSE_MAX_KW) * 3600 * PARKING_SLACK[1]
)
# One ended transaction's energy as the station keeps it and as its event says it may differ by
# the meter's rounding (a thousandth of a Wh); more than this is a mismatch.
ENERGY_TOLERANCE_WH = 1.0
# The stations' summed limits may exceed the capacity by the W of rounding in the profiles.
LIMIT_TOLERANCE_W = 1.0


@dataclass(frozen=True)
class StationsOptions:
    count: int  # stations
    evses: int = 2  # EVSEs per station
    walk_ins: int = 6  # walk-ins in all (0: none)
    seed: int | None = None

    @property
    def capacity_kw(self) -> float:
        return self.count * self.evses * KW_PER_EVSE

    @property
    def substation_id(self) -> str:
        return f"s{self.capacity_kw:.0f}-ocpp"

    def spec(self) -> SubstationSpec:
        return SubstationSpec(self.substation_id, self.capacity_kw, self.count * self.evses)

    def worker_env(self, ocpp_port: int) -> dict[str, str]:
        """The worker's settings beyond a simulated substation's (docs/ocpp.md)."""
        return {
            "SMARTGRID_OCPP_PORT": str(ocpp_port),
            # A fresh demo has no transactions to recover: start at once.
            "SMARTGRID_OCPP_SETTLE_S": "0",
            # What an EVSE delivers: the worker limits no car above it, counts none above it.
            "SMARTGRID_CHARGER_MAX_KW": f"{EVSE_MAX_KW:g}",
        }

    def station_config(self) -> StationConfig:
        return StationConfig(
            evses=self.evses,
            evse_max_w=EVSE_MAX_KW * 1000,
            # The car of a remote start needs more than any request: the worker ends it, and it
            # draws what its TxProfile allows (the request's max, or the sharing's share).
            car_need_wh=1_000_000.0,
            car_max_w=EVSE_MAX_KW * 1000,
            meter_interval_s=METER_INTERVAL_S,
        )

    def walk_in_config(self) -> WalkInConfig:
        per_hour = self.walk_ins / (self.count * WALK_IN_SPREAD_H) if self.walk_ins else 0.0
        return WalkInConfig(per_hour=per_hour, max_count=self.walk_ins, seed=self.seed)


class StationsError(Exception):
    """The stations' thread is gone or does not answer: the demo fails with this message."""


# -- what the stations saw -------------------------------------------------------------------


@dataclass
class TxRecord:
    station_id: str
    transaction_id: str
    token: str | None  # the idToken: a dispatched request's id, or walkin-<n>
    walk_in: bool
    limits_w: list[float] = field(default_factory=list)  # its TxProfile limits, in order


@dataclass
class Recorder:
    """Every transaction the fleet started and the TxProfile limits each was given; the most
    the whole fleet drew at once. Touched only on the fleet's event loop."""

    transactions: dict[str, TxRecord] = field(default_factory=dict)
    peak_draw_w: float = 0.0
    fleet: Fleet | None = None

    def note_draw(self) -> None:
        if self.fleet is not None:
            drawn = math.fsum(e.power_w for s in self.fleet.values() for e in s.evses)
            self.peak_draw_w = max(self.peak_draw_w, drawn)


class RecordingStation(StationState):
    """A simulated station that tells the recorder what it started and the limits it got."""

    def __init__(self, station_id: str, config: StationConfig, recorder: Recorder) -> None:
        super().__init__(station_id, config)
        self.recorder = recorder

    def start(
        self,
        evse: Evse,
        car: Car,
        trigger: Any,
        id_token: dict[str, Any],
        remote_start_id: int | None = None,
        limit_w: float | None = None,
        departure_s: float | None = None,
    ) -> tuple[Transaction, Any]:
        tx, started = super().start(
            evse, car, trigger, id_token, remote_start_id, limit_w, departure_s
        )
        token = id_token.get("id_token", id_token.get("idToken"))
        record = TxRecord(
            self.station_id,
            tx.transaction_id,
            None if token is None else str(token),
            walk_in=remote_start_id is None,
        )
        if limit_w is not None:
            record.limits_w.append(limit_w)
        self.recorder.transactions[tx.transaction_id] = record
        return tx, started

    def set_tx_limit(self, evse: Evse, limit_w: float | None) -> None:
        tx = evse.transaction
        record = self.recorder.transactions.get(tx.transaction_id) if tx else None
        moved = record is not None and (not record.limits_w or record.limits_w[-1] != limit_w)
        if record is not None and limit_w is not None and moved:
            record.limits_w.append(limit_w)
        super().set_tx_limit(evse, limit_w)

    def rebalance(self, at_s: float) -> None:
        super().rebalance(at_s)
        self.recorder.note_draw()


def make_recording_fleet(opts: StationsOptions, recorder: Recorder) -> Fleet:
    fleet = Fleet()
    config = opts.station_config()
    for n in range(1, opts.count + 1):
        sid = f"{opts.substation_id}-cs{n}"
        fleet[sid] = RecordingStation(sid, config, recorder)
    recorder.fleet = fleet
    return fleet


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleet at one instant (taken on its loop)."""

    booted: int
    defaults_given: int  # stations holding their ChargingStationMaxProfile
    charging: int  # transactions running
    walk_ins: int
    turned_away: int
    ended_wh: dict[str, float]  # transaction id: Wh metered, ended transactions
    transactions: dict[str, TxRecord]
    peak_limits_w: float  # the most the stations' limits allowed at once, since ``since``
    peak_draw_w: float


class FleetThread:
    """The fleet on a thread of its own (its own event loop), stopped within seconds."""

    def __init__(self, url: str, opts: StationsOptions, time_scale: float) -> None:
        self.url = url
        self.opts = opts
        self.time_scale = time_scale
        self.recorder = Recorder()
        self.fleet = make_recording_fleet(opts, self.recorder)
        self.report: FleetReport | None = None
        self.ready_at = 0.0  # time.monotonic() once every station had its profiles
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._walk_stop: asyncio.Event | None = None
        self._booted: set[str] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="demo-stations", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # seen by the demo thread, which fails with it
            self.error = exc
        finally:
            self._ready.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._walk_stop = asyncio.Event()
        self._ready.set()
        self.report = await run_fleet(
            self.url, self.fleet, self.opts.station_config(), self.time_scale, self._stop
        )

    def start(self, timeout_s: float = 5.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._loop is None:
            raise StationsError(f"the stations' thread did not start: {self.error!r}")

    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, fn: Callable[[], T], timeout_s: float = 5.0) -> T:
        """``fn()`` run on the fleet's loop (its state is only touched there)."""
        if self._loop is None or not self.alive():
            raise StationsError(f"the stations stopped ({self.error!r})")

        async def run() -> T:
            return fn()

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StationsError(f"the stations did not answer within {timeout_s:g}s") from None

    def start_walk_ins(self) -> None:
        walk = self.opts.walk_in_config()

        def spawn() -> None:
            assert self._walk_stop is not None
            task = asyncio.get_running_loop().create_task(
                walk_in_loop(self.fleet, walk, self.time_scale, self._walk_stop)
            )
            self._walk_task = task  # kept: a task nobody holds may be collected

        self.call(spawn)

    def stop_walk_ins(self) -> None:
        self.call(lambda: self._walk_stop.set() if self._walk_stop else None)

    def snapshot(self, since: float = 0.0) -> FleetSnapshot:
        def take() -> FleetSnapshot:
            evses = [e for s in self.fleet.values() for e in s.evses]
            totals = [w for at, w in self.fleet.limit_totals() if at >= since]
            return FleetSnapshot(
                booted=sum(1 for s in self.fleet.values() if s.outbox.online),
                # The worker sends the TxDefaultProfile, then the station max, at boot.
                defaults_given=sum(1 for s in self.fleet.values() if s.station_max is not None),
                charging=sum(e.transaction is not None for e in evses),
                walk_ins=self.fleet.walk_ins,
                turned_away=self.fleet.turned_away,
                ended_wh=self.fleet.ended_transactions(),
                transactions={k: _copy(v) for k, v in self.recorder.transactions.items()},
                peak_limits_w=max(totals, default=0.0),
                peak_draw_w=self.recorder.peak_draw_w,
            )

        return self.call(take)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the stations (they close their connections) and wait for the thread."""
        loop, stop, walk_stop = self._loop, self._stop, self._walk_stop
        if loop is not None and stop is not None and self.alive():
            for event in (walk_stop, stop):
                if event is not None:
                    loop.call_soon_threadsafe(event.set)
        if self._thread.is_alive():
            self._thread.join(timeout_s)


def _copy(record: TxRecord) -> TxRecord:
    return TxRecord(
        record.station_id,
        record.transaction_id,
        record.token,
        record.walk_in,
        list(record.limits_w),
    )


# -- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerCounts:
    """The OCPP worker's own counters (its /metrics)."""

    stations_connected: float | None
    sessions_completed: float | None
    energy_delivered_kwh: float | None


@dataclass(frozen=True)
class StationsSummary:
    substation_id: str
    capacity_kw: float
    stations: int
    evses: int
    stations_connected: int  # as the worker counted them, before the stations stopped
    requests: int  # this run's requests completed at the substation
    requests_kwh: float  # their completed events' energy
    requests_metered_kwh: float  # what the stations metered for them
    mismatched: list[str]  # request ids whose event and meter disagree, or have no transaction
    walk_ins: int  # plugged in
    walk_ins_turned_away: int
    walk_ins_ended: int
    walk_ins_served: int  # ended with energy
    walk_ins_charging: int  # still charging when the demo stopped
    walk_ins_kwh: float  # metered by the ended ones
    worker_sessions: int | None  # completed events the worker counted (requests and walk-ins)
    worker_kwh: float | None  # their energy
    ended_transactions: int
    metered_kwh: float  # every ended transaction
    cars_limits_moved: int  # transactions whose TxProfile the sharing changed while they ran
    limit_updates: int
    peak_limits_kw: float
    peak_draw_kw: float
    problems: list[str]

    @property
    def unconstrained_kw(self) -> float:
        return self.evses * EVSE_MAX_KW


def summarize(
    opts: StationsOptions,
    snapshot: FleetSnapshot,
    completions: Mapping[UUID, tuple[str | None, float]],
    worker: WorkerCounts,
    problems: list[str] | None = None,
) -> StationsSummary:
    """The OCPP substation's figures; ``problems`` (those given, and more) says what is not as
    it must be."""
    sid = opts.substation_id
    problems = list(problems or [])
    # Wh metered per idToken (a request id), over its ended transactions.
    by_token: dict[str, float] = {}
    walk_ended = walk_served = 0
    walk_wh = 0.0
    for tx_id, wh in snapshot.ended_wh.items():
        record = snapshot.transactions.get(tx_id)
        if record is None:
            continue
        if record.walk_in:
            walk_ended += 1
            walk_served += wh > 0
            walk_wh += wh
        elif record.token is not None:
            by_token[record.token] = by_token.get(record.token, 0.0) + wh
    ours = {rid: kwh for rid, (s, kwh) in completions.items() if s == sid}
    mismatched = [
        str(rid)
        for rid, kwh in ours.items()
        if str(rid) not in by_token or abs(by_token[str(rid)] - kwh * 1000) > ENERGY_TOLERANCE_WH
    ]
    if mismatched:
        problems.append(
            f"{len(mismatched)} completed requests' energy is not what a station metered for "
            f"them (e.g. {mismatched[0]})"
        )
    metered_wh = math.fsum(snapshot.ended_wh.values())
    ended = len(snapshot.ended_wh)
    sessions = None if worker.sessions_completed is None else round(worker.sessions_completed)
    if sessions != ended:
        problems.append(
            f"the worker counted {sessions} completed sessions, its stations ended {ended} "
            "transactions"
        )
    tolerance_kwh = ENERGY_TOLERANCE_WH * max(1, ended) / 1000
    if worker.energy_delivered_kwh is None or (
        abs(worker.energy_delivered_kwh - metered_wh / 1000) > tolerance_kwh
    ):
        problems.append(
            f"the worker's completed sessions delivered {worker.energy_delivered_kwh} kWh, "
            f"its stations metered {metered_wh / 1000:.3f} kWh"
        )
    connected = round(worker.stations_connected or 0)
    if connected != opts.count:
        problems.append(f"{connected} of {opts.count} stations connected at the end")
    if snapshot.peak_limits_w > opts.capacity_kw * 1000 + LIMIT_TOLERANCE_W:
        problems.append(
            f"the stations' limits summed to {snapshot.peak_limits_w / 1000:.1f} kW, above the "
            f"capacity of {opts.capacity_kw:g} kW"
        )
    walk_charging = sum(
        1
        for tx_id, r in snapshot.transactions.items()
        if r.walk_in and tx_id not in snapshot.ended_wh
    )
    moved = [r for r in snapshot.transactions.values() if len(r.limits_w) > 1]
    return StationsSummary(
        substation_id=sid,
        capacity_kw=opts.capacity_kw,
        stations=opts.count,
        evses=opts.count * opts.evses,
        stations_connected=connected,
        requests=len(ours),
        requests_kwh=math.fsum(ours.values()),
        requests_metered_kwh=math.fsum(by_token.get(str(r), 0.0) for r in ours) / 1000,
        mismatched=mismatched,
        walk_ins=snapshot.walk_ins,
        walk_ins_turned_away=snapshot.turned_away,
        walk_ins_ended=walk_ended,
        walk_ins_served=walk_served,
        walk_ins_charging=walk_charging,
        walk_ins_kwh=walk_wh / 1000,
        worker_sessions=sessions,
        worker_kwh=worker.energy_delivered_kwh,
        ended_transactions=ended,
        metered_kwh=metered_wh / 1000,
        cars_limits_moved=len(moved),
        limit_updates=sum(len(r.limits_w) - 1 for r in moved),
        peak_limits_kw=snapshot.peak_limits_w / 1000,
        peak_draw_kw=snapshot.peak_draw_w / 1000,
        problems=problems,
    )


def summary_lines(s: StationsSummary) -> list[str]:
    """The report's OCPP section, plain text (rich markup-free)."""
    worker_kwh = "?" if s.worker_kwh is None else f"{s.worker_kwh:.3f}"
    return [
        f"OCPP substation {s.substation_id} ({s.capacity_kw:g} kW): stations connected "
        f"{s.stations_connected}/{s.stations} ({s.evses} EVSEs of {EVSE_MAX_KW:g} kW: "
        f"{s.unconstrained_kw:g} kW if unconstrained)",
        f"  requests: {s.requests} completed there, {s.requests_kwh:.3f} kWh in their completed "
        f"events, {s.requests_metered_kwh:.3f} kWh metered by the stations for them "
        f"({len(s.mismatched)} differ)",
        f"  walk-ins: {s.walk_ins} plugged in ({s.walk_ins_turned_away} found no free EVSE), "
        f"{s.walk_ins_served} served ({s.walk_ins_ended} ended, {s.walk_ins_charging} still "
        f"charging at the end), {s.walk_ins_kwh:.3f} kWh metered; their started and completed "
        "events are not this run's requests (ignored above)",
        f"  completed events (the worker's count, requests and walk-ins): {s.worker_sessions} "
        f"sessions, {worker_kwh} kWh; the stations ended {s.ended_transactions} transactions "
        f"and metered {s.metered_kwh:.3f} kWh",
        f"  sharing: the stations' limits summed to at most {s.peak_limits_kw:.1f} kW, they drew "
        f"at most {s.peak_draw_kw:.1f} kW; {s.cars_limits_moved} cars had their TxProfile "
        f"changed while charging ({s.limit_updates} changes)",
    ]


def walk_ins_drain_s(time_scale: float) -> float:
    """Wall seconds by which every walk-in plugged in by now has left (plus a margin)."""
    return WALK_IN_MAX_PARKING_S / time_scale + 5.0


def wait_for(check: Callable[[], str | None], timeout_s: float, poll_s: float = 0.1) -> str | None:
    """Poll ``check`` (None: done, else what is missing) until done or ``timeout_s``; returns
    the last missing thing, or None."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = check()
        if missing is None or time.monotonic() >= deadline:
            return missing
        time.sleep(poll_s)


def worker_counts(metrics_url: str, substation_id: str) -> WorkerCounts:
    """The OCPP worker's counters from its /metrics (None where unreadable)."""
    label = {"substation": substation_id}
    try:
        text = httpx.get(metrics_url, timeout=2.0).text
    except httpx.HTTPError:
        return WorkerCounts(None, None, None)
    joules = metric_value(text, "smartgrid_substation_energy_delivered_joules_total", label)
    return WorkerCounts(
        stations_connected=metric_value(
            text, "smartgrid_substation_ocpp_stations_connected", label
        ),
        sessions_completed=metric_value(
            text, "smartgrid_substation_sessions_completed_total", label
        ),
        energy_delivered_kwh=None if joules is None else joules / 3_600_000,
    )
