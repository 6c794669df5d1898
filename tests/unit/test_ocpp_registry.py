"""The station registry: which EVSEs are free bays, and connections that replace each other."""

from __future__ import annotations

import pytest

from substation_worker.ocpp.registry import (
    MAX_CONNECTORS_PER_EVSE,
    MAX_EVSES_PER_STATION,
    Bay,
    EvseOutOfRange,
    StationRegistry,
    UnknownStation,
)


def booted(registry: StationRegistry, station_id: str = "cs1") -> int:
    token = registry.connect(station_id)
    registry.boot(station_id, token, vendor="v", model="m")
    return token


def test_available_evses_of_a_booted_station_are_free_bays() -> None:
    reg = StationRegistry()
    token = booted(reg)
    reg.record_status("cs1", token, 1, 1, "Available")
    reg.record_status("cs1", token, 2, 1, "Available")
    assert reg.free_bays() == [Bay("cs1", 1), Bay("cs1", 2)]
    assert reg.connected_count == 1


def test_no_bay_before_boot() -> None:
    reg = StationRegistry()
    token = reg.connect("cs1")
    reg.record_status("cs1", token, 1, 1, "Available")
    assert reg.free_bays() == []
    reg.boot("cs1", token, vendor="v", model="m")
    assert reg.free_bays() == [Bay("cs1", 1)]


@pytest.mark.parametrize(
    ("statuses", "free"),
    [
        (["Available", "Available"], True),
        (["Available", "Occupied"], False),  # a car on either connector holds the EVSE
        (["Available", "Reserved"], False),
        (["Available", "Faulted"], True),  # the other connector still serves
        (["Unavailable", "Faulted"], False),
        (["Occupied"], False),
    ],
)
def test_an_evse_is_free_when_a_connector_is_available_and_none_busy(
    statuses: list[str], free: bool
) -> None:
    reg = StationRegistry()
    token = booted(reg)
    for connector, status in enumerate(statuses, start=1):
        reg.record_status("cs1", token, 1, connector, status)
    assert (reg.free_bays() == [Bay("cs1", 1)]) is free


def test_the_last_status_of_a_connector_counts() -> None:
    reg = StationRegistry()
    token = booted(reg)
    reg.record_status("cs1", token, 1, 1, "Occupied")
    reg.record_status("cs1", token, 1, 1, "Available")
    assert reg.free_bays() == [Bay("cs1", 1)]


def test_free_bays_are_ordered_by_station_then_evse() -> None:
    reg = StationRegistry()
    for sid in ("b", "a"):
        token = booted(reg, sid)
        for evse in (2, 1):
            reg.record_status(sid, token, evse, 1, "Available")
    assert reg.free_bays() == [Bay("a", 1), Bay("a", 2), Bay("b", 1), Bay("b", 2)]


def test_a_reconnection_replaces_the_older_one() -> None:
    reg = StationRegistry()
    old = booted(reg)
    reg.record_status("cs1", old, 1, 1, "Available")
    new = reg.connect("cs1")
    # The station reports again after it boots; what the old connection said is gone.
    assert reg.free_bays() == []
    with pytest.raises(UnknownStation):
        reg.record_status("cs1", old, 1, 1, "Available")
    assert not reg.disconnect("cs1", old)  # the old link's end leaves the new one alone
    assert reg.connected_count == 1
    assert reg.disconnect("cs1", new)
    assert reg.connected_count == 0
    assert reg.station("cs1") is None


def test_a_report_from_an_unknown_station_is_refused() -> None:
    reg = StationRegistry()
    with pytest.raises(UnknownStation):
        reg.record_status("ghost", 1, 1, 1, "Available")
    with pytest.raises(UnknownStation):
        reg.boot("ghost", 1, vendor="v", model="m")


@pytest.mark.parametrize(
    ("evse", "connector"),
    [(0, 1), (-1, 1), (MAX_EVSES_PER_STATION + 1, 1), (1, 0), (1, MAX_CONNECTORS_PER_EVSE + 1)],
)
def test_ids_out_of_range_are_refused(evse: int, connector: int) -> None:
    reg = StationRegistry()
    token = booted(reg)
    with pytest.raises(EvseOutOfRange):
        reg.record_status("cs1", token, evse, connector, "Available")
    assert reg.free_bays() == []


def test_an_unknown_status_is_refused() -> None:
    reg = StationRegistry()
    token = booted(reg)
    with pytest.raises(ValueError, match="Plugged"):
        reg.record_status("cs1", token, 1, 1, "Plugged")
