"""Simulated stations (loadgen.stations) against a tiny CSMS in the test: the ``ocpp``
package's v201 ChargePoint as the central-system side, on a loopback websockets server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action, RegistrationStatusEnumType
from websockets.asyncio.server import Server, ServerConnection, serve

from loadgen.stations.fleet import Fleet, make_fleet, run_fleet
from loadgen.stations.meter import energy_wh
from loadgen.stations.station import StationConfig

pytestmark = pytest.mark.timeout(30)
DEADLINE_S = 3.0
TIME_SCALE = 3600.0  # one simulated hour per wall second


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Seen:
    boots: list[str] = field(default_factory=list)
    statuses: list[tuple[str, int, str]] = field(default_factory=list)
    heartbeats: list[str] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    meter_values: list[tuple[str, int, list[Any]]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["event_type"] == kind]


class Csms(ChargePoint):  # type: ignore[misc]
    def __init__(self, station_id: str, ws: Any, seen: Seen, interval: int) -> None:
        super().__init__(station_id, ws, response_timeout=DEADLINE_S)
        self.seen = seen
        self.interval = interval

    @on(Action.boot_notification)
    def on_boot(self, **_: Any) -> call_result.BootNotification:
        self.seen.boots.append(self.id)
        return call_result.BootNotification(
            current_time=_now(), interval=self.interval, status=RegistrationStatusEnumType.accepted
        )

    @on(Action.status_notification)
    def on_status(self, evse_id: int, connector_status: str, **_: Any) -> Any:
        self.seen.statuses.append((self.id, evse_id, connector_status))
        return call_result.StatusNotification()

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        self.seen.heartbeats.append(self.id)
        return call_result.Heartbeat(current_time=_now())

    @on(Action.transaction_event)
    def on_transaction_event(self, **event: Any) -> call_result.TransactionEvent:
        self.seen.events.append((self.id, event))
        return call_result.TransactionEvent()

    @on(Action.meter_values)
    def on_meter_values(self, evse_id: int, meter_value: list[Any], **_: Any) -> Any:
        self.seen.meter_values.append((self.id, evse_id, meter_value))
        return call_result.MeterValues()


@dataclass
class Central:
    server: Server
    seen: Seen
    stations: dict[str, Csms]
    sockets: dict[str, ServerConnection]

    @property
    def url(self) -> str:
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/ocpp"


@asynccontextmanager
async def central(interval: int = 60) -> AsyncIterator[Central]:
    seen = Seen()
    stations: dict[str, Csms] = {}
    sockets: dict[str, ServerConnection] = {}

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        sid = ws.request.path.rsplit("/", 1)[-1]
        cp = Csms(sid, ws, seen, interval)
        stations[sid] = cp
        sockets[sid] = ws
        with suppress(Exception):
            await cp.start()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]) as server:  # type: ignore[list-item]
        yield Central(server, seen, stations, sockets)


@asynccontextmanager
async def fleet(url: str, config: StationConfig, count: int = 1) -> AsyncIterator[Fleet]:
    stop = asyncio.Event()
    stations = make_fleet("sim", count, config)
    task = asyncio.create_task(run_fleet(url, stations, config, TIME_SCALE, stop))
    try:
        yield stations
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)


async def eventually(check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while not (value := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
    return value


def central_token(value: str) -> dict[str, str]:
    return {"id_token": value, "type": "Central"}


def tx_profile(limit_w: float, transaction_id: str | None = None) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "id": 1,
        "stack_level": 0,
        "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": [
            {
                "id": 1,
                "start_schedule": _now(),
                "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": 0, "limit": limit_w}],
            }
        ],
    }
    if transaction_id is not None:
        profile["transaction_id"] = transaction_id
    return profile


def measurand(event: dict[str, Any], name: str) -> float:
    values = [
        sv["value"]
        for mv in event["meter_value"]
        for sv in mv["sampled_value"]
        if sv.get("measurand") == name
    ]
    assert values, f"no {name} in {event}"
    return float(values[-1])


FAST = StationConfig(
    evses=2,
    evse_max_w=11_000.0,
    car_need_wh=1e9,  # never full unless a test says
    car_max_w=22_000.0,
    meter_interval_s=0.05,
    tick_s=0.01,
)


async def test_two_stations_boot_and_report_their_evses_available() -> None:
    async with central() as c, fleet(c.url, FAST, count=2):
        await eventually(lambda: len(c.seen.statuses) == 4)
        assert sorted(c.seen.boots) == ["sim-1", "sim-2"]
        assert sorted(c.seen.statuses) == [
            ("sim-1", 1, "Available"),
            ("sim-1", 2, "Available"),
            ("sim-2", 1, "Available"),
            ("sim-2", 2, "Available"),
        ]


async def test_heartbeats_at_the_interval_the_csms_answered() -> None:
    async with central(interval=1) as c, fleet(c.url, FAST):
        await eventually(lambda: c.seen.heartbeats)
        assert c.seen.heartbeats == ["sim-1"]


async def test_remote_start_profile_and_stop_meter_what_was_drawn() -> None:
    async with central() as c, fleet(c.url, FAST) as stations:
        await eventually(lambda: len(c.seen.statuses) == 2)
        csms = c.stations["sim-1"]
        started = await csms.call(
            call.RequestStartTransaction(
                id_token=central_token("req-1"), remote_start_id=41, evse_id=2
            )
        )
        assert started.status == "Accepted"
        first = (await eventually(lambda: c.seen.of("Started")))[0]
        assert first["transaction_info"]["remote_start_id"] == 41
        assert first["transaction_info"]["transaction_id"] == started.transaction_id
        assert first["id_token"] == central_token("req-1")
        assert first["evse"]["id"] == 2
        await eventually(lambda: ("sim-1", 2, "Occupied") in c.seen.statuses)
        # Unlimited the car draws the EVSE's max (11 kW < the car's 22 kW).
        await eventually(lambda: c.seen.meter_values)
        assert measurand(
            {"meter_value": c.seen.meter_values[-1][2]}, "Power.Active.Import"
        ) == pytest.approx(11_000)

        answer = await csms.call(
            call.SetChargingProfile(
                evse_id=2, charging_profile=tx_profile(7_000, started.transaction_id)
            )
        )
        assert answer.status == "Accepted"
        updated = await eventually(
            lambda: [
                e
                for e in c.seen.of("Updated")
                if measurand(e, "Power.Active.Import") == pytest.approx(7_000)
            ]
        )
        assert updated[0]["trigger_reason"] == "ChargingRateChanged"
        # A limit above the EVSE's max: the EVSE's max.
        await csms.call(call.SetChargingProfile(evse_id=2, charging_profile=tx_profile(50_000)))
        await eventually(
            lambda: (
                measurand(c.seen.of("Updated")[-1], "Power.Active.Import") == pytest.approx(11_000)
            )
        )
        await asyncio.sleep(0.1)

        stopped = await csms.call(
            call.RequestStopTransaction(transaction_id=started.transaction_id)
        )
        assert stopped.status == "Accepted"
        ended = (await eventually(lambda: c.seen.of("Ended")))[0]
        assert ended["transaction_info"]["stopped_reason"] == "Remote"
        assert ended["trigger_reason"] == "RemoteStop"
        await eventually(lambda: c.seen.statuses[-1] == ("sim-1", 2, "Available"))
        seqs = [e["seq_no"] for _, e in c.seen.events]
        assert seqs == list(range(len(seqs)))
        assert all(
            e["transaction_info"]["transaction_id"] == started.transaction_id
            for _, e in c.seen.events
        )
        # What the station integrated, recomputed from its power schedule.
        evse = stations["sim-1"].evses[1]
        assert evse.transaction is None
        assert evse.sessions_ended == 1
        tx = evse.last_ended
        assert tx is not None
        metered = measurand(ended, "Energy.Active.Import.Register")
        assert metered == pytest.approx(energy_wh(tx.meter.schedule, tx.meter.at_s), abs=0.01)
        assert metered == pytest.approx(evse.energy_ended_wh, abs=0.01)
        # 11 kW, then 7 kW, then 11 kW again: each stretch metered at its power.
        assert [p for _, p in tx.meter.schedule] == [0.0, 11_000.0, 7_000.0, 11_000.0, 0.0]
        assert metered > 0


async def test_a_full_car_ends_its_transaction_by_itself() -> None:
    # 2 kWh at 11 kW: full after 655 simulated seconds, 0.18 s wall at 3600x.
    small = StationConfig(
        evses=1,
        evse_max_w=11_000.0,
        car_need_wh=2_000.0,
        car_max_w=22_000.0,
        meter_interval_s=0.05,
        tick_s=0.01,
    )
    async with central() as c, fleet(c.url, small) as stations:
        await eventually(lambda: len(c.seen.statuses) == 1)
        started = await c.stations["sim-1"].call(
            call.RequestStartTransaction(id_token=central_token("req-2"), remote_start_id=7)
        )
        assert started.status == "Accepted"
        ended = (await eventually(lambda: c.seen.of("Ended")))[0]
        assert ended["transaction_info"]["stopped_reason"] == "EVDisconnected"
        assert ended["transaction_info"]["remote_start_id"] == 7
        assert measurand(ended, "Energy.Active.Import.Register") == pytest.approx(2_000, abs=0.01)
        await eventually(lambda: c.seen.statuses[-1] == ("sim-1", 1, "Available"))
        assert stations["sim-1"].evses[0].sessions_ended == 1


async def test_start_with_a_profile_and_rejections() -> None:
    async with central() as c, fleet(c.url, FAST):
        await eventually(lambda: len(c.seen.statuses) == 2)
        csms = c.stations["sim-1"]
        first = await csms.call(
            call.RequestStartTransaction(
                id_token=central_token("a"), remote_start_id=1, charging_profile=tx_profile(3_000)
            )
        )
        assert first.status == "Accepted"
        began = (await eventually(lambda: c.seen.of("Started")))[0]
        assert began["evse"]["id"] == 1  # the first free EVSE
        await eventually(lambda: c.seen.meter_values)
        power = measurand({"meter_value": c.seen.meter_values[-1][2]}, "Power.Active.Import")
        assert power == pytest.approx(3_000)
        busy = await csms.call(
            call.RequestStartTransaction(id_token=central_token("b"), remote_start_id=2, evse_id=1)
        )
        assert busy.status == "Rejected"
        unknown = await csms.call(
            call.RequestStartTransaction(id_token=central_token("c"), remote_start_id=3, evse_id=9)
        )
        assert unknown.status == "Rejected"
        # A TxProfile for an EVSE without a transaction, a stop of an unknown transaction.
        stray = await csms.call(call.SetChargingProfile(evse_id=2, charging_profile=tx_profile(1)))
        assert stray.status == "Rejected"
        nothing = await csms.call(call.RequestStopTransaction(transaction_id="nope"))
        assert nothing.status == "Rejected"
        assert len(c.seen.of("Started")) == 1


async def test_a_closed_connection_reconnects_with_its_transaction() -> None:
    async with central() as c, fleet(c.url, FAST) as stations:
        await eventually(lambda: len(c.seen.statuses) == 2)
        started = await c.stations["sim-1"].call(
            call.RequestStartTransaction(id_token=central_token("r"), remote_start_id=5, evse_id=1)
        )
        await eventually(lambda: ("sim-1", 1, "Occupied") in c.seen.statuses)
        await c.sockets["sim-1"].close()
        await eventually(lambda: len(c.seen.boots) == 2)
        await eventually(
            lambda: c.seen.statuses[-2:] == [("sim-1", 1, "Occupied"), ("sim-1", 2, "Available")]
        )
        tx = stations["sim-1"].evses[0].transaction
        assert tx is not None
        assert tx.transaction_id == started.transaction_id
        stopped = await c.stations["sim-1"].call(
            call.RequestStopTransaction(transaction_id=started.transaction_id)
        )
        assert stopped.status == "Accepted"
        ended = (await eventually(lambda: c.seen.of("Ended")))[0]
        seqs = [e["seq_no"] for _, e in c.seen.events]
        assert seqs == sorted(seqs)
        assert ended["transaction_info"]["transaction_id"] == started.transaction_id
