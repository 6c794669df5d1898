"""The simulated station's pure parts: the meter and the EVSE state machine, no I/O."""

from __future__ import annotations

import pytest

from loadgen.stations.evse import Car, Evse, EvseBusy, EvseStatus
from loadgen.stations.meter import Meter, energy_wh
from loadgen.stations.station import SimClock, profile_limit_w


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
