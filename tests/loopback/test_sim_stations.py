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

from loadgen.demand import DemandMix
from loadgen.stations.fleet import Fleet, basic_auth, make_fleet, run_fleet
from loadgen.stations.meter import energy_wh
from loadgen.stations.station import StationConfig
from loadgen.stations.walkins import WalkInConfig

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
    needs: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    # Every call a station made, in the order they came: (station, action, its payload).
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)

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
    def on_status(self, evse_id: int, connector_status: str, **rest: Any) -> Any:
        self.seen.statuses.append((self.id, evse_id, connector_status))
        self.seen.calls.append(
            (self.id, "StatusNotification", {"evse_id": evse_id, "status": connector_status})
        )
        return call_result.StatusNotification()

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        self.seen.heartbeats.append(self.id)
        return call_result.Heartbeat(current_time=_now())

    @on(Action.transaction_event)
    def on_transaction_event(self, **event: Any) -> call_result.TransactionEvent:
        self.seen.events.append((self.id, event))
        self.seen.calls.append((self.id, "TransactionEvent", event))
        return call_result.TransactionEvent()

    @on(Action.notify_ev_charging_needs)
    def on_needs(self, evse_id: int, charging_needs: dict[str, Any], **_: Any) -> Any:
        self.seen.needs.append((self.id, evse_id, charging_needs))
        self.seen.calls.append((self.id, "NotifyEVChargingNeeds", charging_needs))
        return call_result.NotifyEVChargingNeeds(status="Accepted")

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
    refusing: asyncio.Event  # set: connections are closed at once (the station stays offline)

    @property
    def url(self) -> str:
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/ocpp"


@asynccontextmanager
async def central(interval: int = 60) -> AsyncIterator[Central]:
    seen = Seen()
    stations: dict[str, Csms] = {}
    sockets: dict[str, ServerConnection] = {}
    refusing = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        if refusing.is_set():
            await ws.close()
            return
        seen.authorization.append(ws.request.headers.get("Authorization"))
        sid = ws.request.path.rsplit("/", 1)[-1]
        cp = Csms(sid, ws, seen, interval)
        stations[sid] = cp
        sockets[sid] = ws
        with suppress(Exception):
            await cp.start()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]) as server:  # type: ignore[list-item]
        yield Central(server, seen, stations, sockets, refusing)


@asynccontextmanager
async def fleet(
    url: str,
    config: StationConfig,
    count: int = 1,
    walk_ins: WalkInConfig | None = None,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[Fleet]:
    stop = asyncio.Event()
    stations = make_fleet("sim", count, config)
    task = asyncio.create_task(
        run_fleet(url, stations, config, TIME_SCALE, stop, walk_ins=walk_ins, clock=clock)
    )
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


def station_profile(purpose: str, limit_w: float, profile_id: int = 9) -> dict[str, Any]:
    profile = tx_profile(limit_w)
    profile.update(id=profile_id, charging_profile_purpose=purpose)
    return profile


async def test_a_walk_in_plugs_in_states_its_needs_and_stops_when_asked() -> None:
    # ~20 a wall second at 3600x; 60 kWh at 11 kW: it stays hours (seconds here), not full.
    mix = DemandMix(energy_kwh=(60.0, 60.0), energy_mode_kwh=60.0)
    walk = WalkInConfig(per_hour=20.0, max_count=1, seed=1, mix=mix)
    async with central() as c, fleet(c.url, FAST, walk_ins=walk) as stations:
        needs = await eventually(lambda: c.seen.needs)
        sid, evse_id, charging_needs = needs[0]
        calls = [(a, p) for s, a, p in c.seen.calls if s == sid and a != "StatusNotification"]
        statuses = [p for s, a, p in c.seen.calls if s == sid and a == "StatusNotification"]
        # After the boot's statuses: Occupied, Started, then the needs.
        assert statuses[-1] == {"evse_id": evse_id, "status": "Occupied"}
        (kind, started), (kind2, _) = calls[:2]
        assert (kind, kind2) == ("TransactionEvent", "NotifyEVChargingNeeds")
        order = [a for s, a, p in c.seen.calls if s == sid]
        assert order[-3:] == ["StatusNotification", "TransactionEvent", "NotifyEVChargingNeeds"]
        assert started["event_type"] == "Started"
        assert started["trigger_reason"] == "CablePluggedIn"
        assert started["id_token"] == {"id_token": "walkin-1", "type": "Local"}
        assert "remote_start_id" not in started["transaction_info"]
        assert measurand(started, "Energy.Active.Import.Register") == 0
        transfer = charging_needs["requested_energy_transfer"]
        params = charging_needs[
            "ac_charging_parameters" if transfer != "DC" else "dc_charging_parameters"
        ]
        assert params["energy_amount"] >= 10_000
        departure = datetime.fromisoformat(charging_needs["departure_time"].replace("Z", "+00:00"))
        assert departure > datetime.now(UTC)
        tx_id = started["transaction_info"]["transaction_id"]
        stopped = await c.stations[sid].call(call.RequestStopTransaction(transaction_id=tx_id))
        assert stopped.status == "Accepted"
        ended = (await eventually(lambda: c.seen.of("Ended")))[0]
        assert ended["transaction_info"]["stopped_reason"] == "Remote"
        metered = measurand(ended, "Energy.Active.Import.Register")
        assert stations.metered_wh(tx_id) == pytest.approx(metered, abs=0.01)
        assert stations.ended_transactions() == {tx_id: pytest.approx(metered, abs=0.01)}
        await asyncio.sleep(0.1)
        assert stations.walk_ins == 1  # the bound holds
        assert len(c.seen.needs) == 1


async def test_station_max_and_tx_default_cap_the_cars_and_are_logged() -> None:
    async with central() as c, fleet(c.url, FAST) as stations:
        await eventually(lambda: len(c.seen.statuses) == 2)
        csms = c.stations["sim-1"]
        wrong = await csms.call(
            call.SetChargingProfile(
                evse_id=1, charging_profile=station_profile("ChargingStationMaxProfile", 1)
            )
        )
        assert wrong.status == "Rejected"  # a station max is for EVSE 0
        for purpose, limit in (("ChargingStationMaxProfile", 5_000), ("TxDefaultProfile", 3_000)):
            answer = await csms.call(
                call.SetChargingProfile(evse_id=0, charging_profile=station_profile(purpose, limit))
            )
            assert answer.status == "Accepted"
        for n, evse_id in enumerate((1, 2)):
            await csms.call(
                call.RequestStartTransaction(
                    id_token=central_token(f"d{n}"), remote_start_id=n, evse_id=evse_id
                )
            )
        state = stations["sim-1"]
        # Each wants its default's 3 kW; the station has 5: 2.5 kW each.
        await eventually(lambda: all(e.transaction is not None for e in state.evses))
        assert [e.power_w for e in state.evses] == pytest.approx([2_500.0, 2_500.0])
        got = [(ch.evse_id, ch.limit_w) for ch in stations.limit_changes()]
        assert got == [(0, 5_000.0), (1, 3_000.0), (2, 3_000.0)]
        totals = stations.limit_totals()
        assert [w for _, w in totals] == [22_000.0, 5_000.0]
        cleared = await csms.call(call.ClearChargingProfile(charging_profile_id=9))
        assert cleared.status == "Accepted"  # both had id 9
        assert [e.power_w for e in state.evses] == pytest.approx([11_000.0, 11_000.0])
        assert stations.limit_totals()[-1][1] == 22_000.0


async def test_trigger_message_sends_transactions_and_statuses_again() -> None:
    async with central() as c, fleet(c.url, FAST):
        await eventually(lambda: len(c.seen.statuses) == 2)
        csms = c.stations["sim-1"]
        started = await csms.call(
            call.RequestStartTransaction(id_token=central_token("t"), remote_start_id=77, evse_id=2)
        )
        await eventually(lambda: ("sim-1", 2, "Occupied") in c.seen.statuses)
        answer = await csms.call(call.TriggerMessage(requested_message="TransactionEvent"))
        assert answer.status == "Accepted"
        triggered = await eventually(
            lambda: [e for e in c.seen.of("Updated") if e["trigger_reason"] == "Trigger"]
        )
        assert len(triggered) == 1
        assert triggered[0]["transaction_info"]["transaction_id"] == started.transaction_id
        assert triggered[0]["transaction_info"]["remote_start_id"] == 77
        assert triggered[0]["id_token"] == central_token("t")
        assert measurand(triggered[0], "Power.Active.Import") == pytest.approx(11_000)
        before = len(c.seen.statuses)
        answer = await csms.call(
            call.TriggerMessage(requested_message="StatusNotification", evse={"id": 1})
        )
        assert answer.status == "Accepted"
        await eventually(lambda: len(c.seen.statuses) == before + 1)
        assert c.seen.statuses[-1] == ("sim-1", 1, "Available")
        boot = await csms.call(call.TriggerMessage(requested_message="BootNotification"))
        assert boot.status == "Rejected"
        other = await csms.call(call.TriggerMessage(requested_message="LogStatusNotification"))
        assert other.status == "NotImplemented"
        assert len(c.seen.boots) == 1


class StepClock:
    """Simulated time the test moves."""

    time_scale = TIME_SCALE

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_transaction_events_made_offline_are_sent_after_reconnecting() -> None:
    small = StationConfig(
        evses=2,
        evse_max_w=11_000.0,
        car_need_wh=2_000.0,
        car_max_w=22_000.0,
        meter_interval_s=60.0,  # no periodic samples in this test
        tick_s=0.01,
    )
    clock = StepClock()
    async with central() as c, fleet(c.url, small, clock=clock) as stations:
        await eventually(lambda: len(c.seen.statuses) == 2)
        started = await c.stations["sim-1"].call(
            call.RequestStartTransaction(id_token=central_token("o"), remote_start_id=3, evse_id=1)
        )
        await eventually(lambda: ("sim-1", 1, "Occupied") in c.seen.statuses)
        state = stations["sim-1"]
        c.refusing.set()
        await c.sockets["sim-1"].close()
        await eventually(lambda: not state.outbox.online)
        clock.now = 3600.0  # offline the car fills up (2 kWh at 11 kW) and is unplugged
        await eventually(lambda: state.evses[0].transaction is None)
        assert len(state.outbox) == 1  # its Ended; the Available is dropped offline
        seen_before = len(c.seen.calls)
        c.refusing.clear()
        await eventually(lambda: c.seen.of("Ended"))
        after = [(a, p) for s, a, p in c.seen.calls[seen_before:] if s == "sim-1"]
        # Boot, then every EVSE's status, then what was kept.
        assert [a for a, _ in after] == [
            "StatusNotification",
            "StatusNotification",
            "TransactionEvent",
        ]
        assert [p["status"] for _, p in after[:2]] == ["Available", "Available"]
        ended = after[2][1]
        assert ended["offline"] is True
        assert ended["event_type"] == "Ended"
        assert ended["transaction_info"]["transaction_id"] == started.transaction_id
        assert measurand(ended, "Energy.Active.Import.Register") == pytest.approx(2_000, abs=0.01)
        assert stations.metered_wh(started.transaction_id) == pytest.approx(2_000, abs=0.01)
        assert len(c.seen.boots) == 2


async def test_a_password_is_sent_as_basic_auth() -> None:
    config = StationConfig(evses=1, password="s3cret")
    async with central() as c, fleet(c.url, config):
        await eventually(lambda: c.seen.boots)
        assert c.seen.authorization == [basic_auth("sim-1", "s3cret")]
        assert basic_auth("sim-1", "s3cret") == "Basic c2ltLTE6czNjcmV0"
