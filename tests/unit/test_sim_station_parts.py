"""The simulated station's pure parts, no I/O: the meter, the EVSE state machine, the station
state (profiles, limit log, outbox) on a fake clock, walk-in cars."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import ocpp.v201
import pytest
from ocpp.v201 import call
from ocpp.v201.enums import ReasonEnumType, TriggerReasonEnumType

from loadgen.stations.evse import ENDED_KEPT, Car, Evse, EvseBusy, EvseStatus, Transaction
from loadgen.stations.limits import STATION, LimitLog, limit_totals, station_bound_w
from loadgen.stations.meter import Meter, energy_wh
from loadgen.stations.state import Outbox, StationConfig, StationState, StoredProfile
from loadgen.stations.station import SimClock, profile_limit_w
from loadgen.stations.walkins import (
    WalkInCar,
    charging_needs,
    next_arrival_wall_s,
    sample_walk_in,
)


def test_energy_of_a_power_schedule() -> None:
    schedule = [(0.0, 3600.0), (10.0, 7200.0), (20.0, 0.0)]
    assert energy_wh(schedule, 30.0) == pytest.approx(10 + 20)
    assert energy_wh(schedule, 15.0) == pytest.approx(10 + 10)
    assert energy_wh([], 5.0) == 0.0


def test_meter_integrates_power_changes_and_keeps_its_schedule() -> None:
    meter = Meter(at_s=100.0)
    meter.set_power(3600.0, 100.0)
    meter.advance(110.0)
    meter.set_power(7200.0, 120.0)
    meter.advance(130.0)
    assert meter.energy_wh == pytest.approx(20 + 20)
    assert meter.schedule == [(100.0, 0.0), (100.0, 3600.0), (120.0, 7200.0)]
    assert meter.energy_wh == pytest.approx(energy_wh(meter.schedule, 130.0))
    meter.advance(120.0)  # time never runs back
    assert meter.energy_wh == pytest.approx(40)


def test_a_capped_meter_stops_at_the_cap_and_says_when() -> None:
    meter = Meter(at_s=0.0, cap_wh=10.0)
    meter.set_power(3600.0, 0.0)
    assert meter.advance(5.0) is None
    assert meter.advance(100.0) == pytest.approx(10.0)
    assert meter.full
    assert meter.energy_wh == 10.0
    assert meter.power_w == 0.0
    meter.set_power(3600.0, 200.0)  # a full car draws nothing
    assert meter.power_w == 0.0
    assert energy_wh(meter.schedule, 200.0) == pytest.approx(10.0)


def test_evse_draws_the_least_of_limit_evse_and_car() -> None:
    evse = Evse(1, max_w=11_000.0)
    assert evse.status is EvseStatus.AVAILABLE
    tx = evse.start("t1", Car(need_wh=1e6, max_w=7_400.0), at_s=0.0, remote_start_id=5)
    assert evse.status is EvseStatus.OCCUPIED
    assert tx.remote_start_id == 5
    assert evse.power_w == 7_400.0  # the car's max
    evse.set_limit(5_000.0, 10.0)
    assert evse.power_w == 5_000.0
    evse.set_limit(50_000.0, 20.0)
    assert evse.power_w == 7_400.0
    evse.set_limit(None, 30.0)
    assert evse.power_w == 7_400.0
    with pytest.raises(EvseBusy):
        evse.start("t2", Car(1.0, 1.0), at_s=30.0)
    done = evse.stop(3600.0)
    assert done is tx
    assert evse.status is EvseStatus.AVAILABLE
    expected = (7_400 * 10 + 5_000 * 10 + 7_400 * (3600 - 20)) / 3600
    assert tx.meter.energy_wh == pytest.approx(expected)
    assert evse.sessions_ended == 1
    assert evse.energy_ended_wh == pytest.approx(expected)
    assert evse.stop(4000.0) is None
    assert not evse.set_limit(1.0, 4000.0)


def test_evse_reports_a_full_car_and_sequence_numbers_count_up() -> None:
    evse = Evse(2, max_w=3_600.0)
    tx = evse.start("t", Car(need_wh=1.0, max_w=22_000.0), at_s=0.0)
    assert [tx.next_seq_no() for _ in range(3)] == [0, 1, 2]
    assert not evse.advance(0.5)
    assert evse.advance(2.0)
    assert tx.meter.energy_wh == 1.0


def test_profile_limit_in_w_or_a() -> None:
    def profile(unit: str, limit: float, **period: int) -> dict[str, object]:
        return {
            "charging_schedule": [
                {
                    "charging_rate_unit": unit,
                    "charging_schedule_period": [{"start_period": 0, "limit": limit, **period}],
                }
            ]
        }

    assert profile_limit_w(profile("W", 7_000)) == 7_000
    assert profile_limit_w(profile("A", 16)) == pytest.approx(16 * 230 * 3)
    assert profile_limit_w(profile("A", 16, number_phases=1)) == pytest.approx(16 * 230)
    assert profile_limit_w({"charging_schedule": []}) is None


def test_sim_clock_scales_wall_time() -> None:
    wall = iter([10.0, 12.5])
    clock = SimClock(60.0, wall=lambda: next(wall))
    assert clock() == pytest.approx(150.0)


# -- station state: profiles, limits, outbox, walk-ins ----------------------------------------


class FakeClock:
    time_scale = 60.0

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _state(evses: int = 2, evse_max_w: float = 11_000.0) -> tuple[StationState, FakeClock]:
    clock = FakeClock()
    config = StationConfig(evses=evses, evse_max_w=evse_max_w)
    return StationState("s-1", config, clock=clock), clock


def _start(state: StationState, evse_index: int, max_w: float = 22_000.0) -> Transaction:
    tx, _started = state.start(
        state.evses[evse_index],
        Car(need_wh=1e9, max_w=max_w),
        TriggerReasonEnumType.remote_start,
        {"id_token": "x", "type": "Central"},
        remote_start_id=1,
    )
    return tx


def test_station_max_gives_every_car_the_same_share() -> None:
    state, clock = _state(evses=3)
    _start(state, 0, max_w=11_000.0)
    _start(state, 1, max_w=5_000.0)
    assert [e.power_w for e in state.evses] == [11_000.0, 5_000.0, 0.0]
    state.set_station_max(StoredProfile(1, 0, 8_000.0))
    # They want 16 kW; the station has 8: each draws half of what it wants.
    assert [e.power_w for e in state.evses] == pytest.approx([5_500.0, 2_500.0, 0.0])
    clock.now = 3600.0
    state.end(state.evses[1], ReasonEnumType.remote, TriggerReasonEnumType.remote_stop, 3600.0)
    assert state.evses[0].power_w == pytest.approx(8_000.0)  # the one left takes what it can
    state.set_station_max(None)
    assert state.evses[0].power_w == 11_000.0


def test_tx_default_caps_a_transaction_without_its_own_profile() -> None:
    state, _clock = _state(evses=2)
    state.set_tx_default(0, StoredProfile(5, 0, 4_000.0))
    state.set_tx_default(2, StoredProfile(6, 0, 2_000.0))  # EVSE 2's own beats the station's
    tx1 = _start(state, 0)
    _start(state, 1)
    assert [e.power_w for e in state.evses] == [4_000.0, 2_000.0]
    state.set_tx_limit(state.evses[0], 9_000.0)  # a TxProfile beats the default
    assert state.evses[0].power_w == 9_000.0
    assert tx1.limit_w == 9_000.0
    assert state.clear_profiles(6, None, None, None)
    assert state.evses[1].power_w == 4_000.0
    assert not state.clear_profiles(6, None, None, None)
    assert state.clear_profiles(None, None, "TxDefaultProfile", None)
    assert state.evses[1].power_w == 11_000.0


def test_limit_log_records_each_change_once() -> None:
    state, _clock = _state(evses=2)
    state.set_tx_default(0, StoredProfile(1, 0, 4_000.0))
    state.set_tx_default(0, StoredProfile(1, 0, 4_000.0))  # the same again: no change
    _start(state, 0)
    state.set_tx_limit(state.evses[0], 7_000.0)
    state.set_station_max(StoredProfile(2, 0, 10_000.0))
    state.end(state.evses[0], ReasonEnumType.remote, TriggerReasonEnumType.remote_stop, 0.0)
    got = [(c.evse_id, c.limit_w) for c in state.limits.changes()]
    assert got == [(1, 4_000.0), (2, 4_000.0), (1, 7_000.0), (0, 10_000.0), (1, 4_000.0)]
    times = [c.at_monotonic for c in state.limits.changes()]
    assert times == sorted(times)


def test_limit_totals_sum_station_bounds_exactly() -> None:
    a = LimitLog("a", {1: 10_000.0, 2: 10_000.0}, at=0.0)
    b = LimitLog("b", {1: 5_000.0}, at=0.0)
    # No limits: every EVSE's max.
    assert limit_totals([a, b]) == [(0.0, 25_000.0)]
    a.record(1, 3_000.0, at=1.0)
    a.record(2, 50_000.0, at=2.0)  # above the EVSE's max: its max
    b.record(1, 1_000.0, at=2.0)  # at the same instant: one step
    a.record(STATION, 6_000.0, at=3.0)  # a's station max caps a's 13 kW
    a.record(STATION, None, at=4.0)
    assert limit_totals([a, b]) == [
        (0.0, 25_000.0),
        (1.0, 18_000.0),
        (2.0, 14_000.0),
        (3.0, 7_000.0),
        (4.0, 14_000.0),
    ]
    assert station_bound_w({1: None, 2: 0.0, STATION: None}, {1: 1.0, 2: 2.0}) == 1.0


def test_a_full_limit_log_folds_the_oldest_into_its_base() -> None:
    log = LimitLog("a", {1: 10_000.0}, maxlen=2, at=0.0)
    for i in range(1, 5):
        log.record(1, float(i), at=float(i))
    assert [c.limit_w for c in log.changes()] == [3.0, 4.0]
    assert log.base == {STATION: None, 1: 2.0}
    assert log.base_at == 2.0
    assert limit_totals([log]) == [(2.0, 2.0), (3.0, 3.0), (4.0, 4.0)]


def test_metered_energy_by_transaction_id_is_kept_bounded() -> None:
    state, clock = _state(evses=1)
    tx = _start(state, 0, max_w=3_600.0)
    clock.now = 3600.0
    state.end(state.evses[0], ReasonEnumType.remote, TriggerReasonEnumType.remote_stop, 3600.0)
    assert state.metered_wh(tx.transaction_id) == pytest.approx(3_600.0)
    assert state.metered_wh("nope") is None
    evse = Evse(9, 1_000.0)
    for n in range(ENDED_KEPT + 5):
        evse.start(f"t{n}", Car(1.0, 1.0), at_s=0.0)
        evse.stop(1.0)
    assert len(evse.ended) == ENDED_KEPT
    assert "t0" not in evse.ended
    assert f"t{ENDED_KEPT + 4}" in evse.ended


def _tx_event(n: int, trigger: TriggerReasonEnumType) -> call.TransactionEvent:
    return call.TransactionEvent(
        event_type="Updated",
        timestamp="2026-01-01T00:00:00Z",
        trigger_reason=trigger,
        seq_no=n,
        transaction_info={"transaction_id": "t"},
    )


def test_outbox_keeps_only_transaction_events_offline_in_order_and_bounded() -> None:
    box = Outbox(offline_max=3)
    box.go_online([])
    box.put(call.Heartbeat())
    box.put(_tx_event(0, TriggerReasonEnumType.remote_start))
    box.go_offline()
    box.put(call.Heartbeat())  # offline: dropped
    box.put(_tx_event(1, TriggerReasonEnumType.meter_value_periodic))
    box.put(_tx_event(2, TriggerReasonEnumType.meter_value_periodic))
    box.put(_tx_event(3, TriggerReasonEnumType.remote_stop))  # full: the oldest sample goes
    kept = box.items()
    assert [m.seq_no for m in kept] == [0, 2, 3]
    assert all(m.offline for m in kept)
    assert box.dropped == 3
    status = call.StatusNotification(
        timestamp="2026-01-01T00:00:00Z", connector_status="Available", evse_id=1, connector_id=1
    )
    box.go_online([status])
    assert box.items()[0] is status
    box.sent(status)
    box.sent(status)  # only the head goes, once
    assert [m.seq_no for m in box.items()] == [0, 2, 3]


def test_walk_ins_are_seeded_and_their_needs_follow_the_schema() -> None:
    cars = [sample_walk_in(random.Random(7), n, 22_000.0) for n in range(1, 4)]
    again = [sample_walk_in(random.Random(7), n, 22_000.0) for n in range(1, 4)]
    assert cars == again
    rng = random.Random(3)
    many = [sample_walk_in(rng, n, 22_000.0) for n in range(200)]
    assert all(10_000 <= c.need_wh <= 60_000 for c in many)
    assert all(c.parking_s >= 15 * 60 for c in many)
    assert {c.dc for c in many} == {True, False}
    schema = json.loads(
        (Path(ocpp.v201.__file__).parent / "schemas/NotifyEVChargingNeedsRequest.json").read_text()
    )
    for car in (next(c for c in many if c.dc), next(c for c in many if not c.dc)):
        needs = charging_needs(car, "2026-01-01T01:00:00.000Z")
        payload = {"evseId": 1, "chargingNeeds": _camel(needs)}
        jsonschema.validate(payload, schema)
        params = needs["dc_charging_parameters" if car.dc else "ac_charging_parameters"]
        assert params["energy_amount"] == round(car.need_wh)
    # Arrivals: per station per simulated hour, in wall seconds.
    gaps = [next_arrival_wall_s(random.Random(n), 6.0, 10, 3600.0) for n in range(2000)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 60, rel=0.1)


def _camel(data: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        head, *rest = key.split("_")
        name = head + "".join(p.capitalize() for p in rest)
        out[name] = _camel(value) if isinstance(value, dict) else value  # type: ignore[arg-type]
    return out


def test_walk_in_sends_occupied_started_and_its_needs() -> None:
    state, clock = _state(evses=2)
    state.outbox.go_online([])
    clock.now = 100.0
    car = WalkInCar(number=4, need_wh=2_000.0, max_w=7_000.0, parking_s=600.0, dc=False)
    tx = state.walk_in(state.evses[1], car)
    status, started, needs = state.outbox.items()
    assert (status.evse_id, status.connector_status) == (2, "Occupied")
    assert started.trigger_reason == "CablePluggedIn"
    assert started.id_token == {"id_token": "walkin-4", "type": "Local"}
    assert "remote_start_id" not in started.transaction_info
    assert needs.evse_id == 2
    assert needs.charging_needs["ac_charging_parameters"]["energy_amount"] == 2_000
    assert tx.departure_s == 700.0
    # At its departure the driver leaves, metered up to then: 7 kW for 600 s, under its 2 kWh.
    clock.now = 800.0
    state.tick()
    ended = state.outbox.items()[3]
    assert ended.trigger_reason == "EVDeparted"
    assert ended.transaction_info["stopped_reason"] == "EVDisconnected"
    assert state.metered_wh(tx.transaction_id) == pytest.approx(7_000 * 600 / 3600)


def test_a_walk_in_full_before_its_departure_ends_as_full() -> None:
    state, clock = _state(evses=1)
    state.outbox.go_online([])
    car = WalkInCar(number=1, need_wh=500.0, max_w=3_600.0, parking_s=3600.0, dc=False)
    tx = state.walk_in(state.evses[0], car)
    clock.now = 7200.0  # past both: full after 500 s, departure at 3600 s
    state.tick()
    ended = state.outbox.items()[3]
    assert ended.trigger_reason == "EVCommunicationLost"
    assert ended.transaction_info["stopped_reason"] == "EVDisconnected"
    assert state.metered_wh(tx.transaction_id) == 500.0
    assert state.evses[0].status is EvseStatus.AVAILABLE
