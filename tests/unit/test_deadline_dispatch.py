"""Dispatch with deadlines: a car with a departure is promised the power that fills it by then,
on both sides (the worker's committed_kw, the dispatcher's pick); a car no substation can meet
is sent where it is least short rather than held until it leaves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts import ChargeRequest
from dispatcher.deadlines import promised_kw
from substation_worker.simulation import Substation

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def request(energy_kwh: float, max_kw: float, leaves_in_h: float | None) -> ChargeRequest:
    departure = None if leaves_in_h is None else NOW + timedelta(hours=leaves_in_h)
    return ChargeRequest(
        vehicle_id="ev-1",
        energy_kwh=energy_kwh,
        max_power_kw=max_kw,
        departure=departure,
        requested_at=NOW - timedelta(seconds=1),
    )


def test_a_car_without_departure_is_promised_its_max_power() -> None:
    assert promised_kw(request(30, 11, None), NOW, 1.0) == 11


def test_a_car_with_a_departure_is_promised_what_fills_it_by_then() -> None:
    # 30 kWh in 6 h: 5 kW; in 2 h it would need 15 kW, so its max, 11
    assert promised_kw(request(30, 11, 6), NOW, 1.0) == pytest.approx(5.0)
    assert promised_kw(request(30, 11, 2), NOW, 1.0) == 11
    # At time scale 60, a departure 6 wall minutes away is 6 simulated hours away
    assert promised_kw(request(30, 11, 0.1), NOW, 60.0) == pytest.approx(5.0)


def test_a_car_whose_departure_has_passed_is_promised_nothing() -> None:
    assert promised_kw(request(30, 11, 1), NOW + timedelta(hours=2), 1.0) == 0


def test_the_worker_promises_each_car_what_fills_it_by_its_departure() -> None:
    sub = Substation(100, 4)
    sub.offer("dated", 30, 11, departure_s=6 * 3600)  # 5 kW
    sub.offer("undated", 30, 11)  # 11 kW
    sub.advance(0)
    assert sub.committed_kw == pytest.approx(16.0)
    # Charged at 11 kW for an hour, it needs 19 kWh in 5 h: 3.8 kW
    sub.advance(3600)
    dated = next(s for s in sub.active if s.key == "dated")
    assert sub.promised_kw(dated) == pytest.approx(19 / 5)
