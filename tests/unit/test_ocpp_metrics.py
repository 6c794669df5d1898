"""The OCPP metrics (substation_worker.metrics.OcppMetrics) and what StationBays reports to them
from its book and registry, without I/O: commands counted by answer, the per-EVSE limits
(their series gone with their sessions), the granted sum, EVSEs by state, walk-ins."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from substation_worker.metrics import OCPP_EVSE_STATES, OcppMetrics
from substation_worker.ocpp.csms import StationBays
from substation_worker.ocpp.registry import Bay, ConnectorStatus, StationRegistry
from substation_worker.ocpp.sessions import Limit, Reading, Start, StationSessions, Stop

SID = "s1"
EVSE_MAX_KW = 22.0


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"substation": SID, **labels})


def limit_series(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    (family,) = [m for m in registry.collect() if m.name == "smartgrid_substation_ocpp_limit_watts"]
    return {(s.labels["station"], s.labels["evse"]): s.value for s in family.samples}


def test_every_name_has_the_ocpp_prefix() -> None:
    registry = CollectorRegistry()
    OcppMetrics(registry, SID)
    names = {m.name for m in registry.collect()}
    assert "smartgrid_substation_ocpp_profile_updates" in names
    assert sorted(n for n in names if not n.startswith("smartgrid_substation_ocpp_")) == []


def test_commands_are_counted_by_kind_and_answer() -> None:
    registry = CollectorRegistry()
    metrics = OcppMetrics(registry, SID)
    for result in ("accepted", "rejected", "unanswered"):  # at 0 from the start
        assert value(registry, "smartgrid_substation_ocpp_starts_total", result=result) == 0
    start = Start("k", "cs-1", 1, 7, 100, 11.0)
    limit = Limit("k", "cs-1", 1, "tx", 100, 5.0)
    metrics.count_command(start, True)
    metrics.count_command(limit, True)
    metrics.count_command(limit, False)
    metrics.count_command(limit, None)
    metrics.count_command(limit, None)
    metrics.count_command(Stop("k", "cs-1", "tx"), False)
    name = "smartgrid_substation_ocpp_profile_updates_total"
    assert value(registry, name, result="accepted") == 1
    assert value(registry, name, result="rejected") == 1
    assert value(registry, name, result="unanswered") == 2
    assert value(registry, "smartgrid_substation_ocpp_starts_total", result="accepted") == 1
    assert value(registry, "smartgrid_substation_ocpp_starts_total", result="rejected") == 0
    assert value(registry, "smartgrid_substation_ocpp_stops_total", result="rejected") == 1


def test_observe_sets_limits_and_removes_those_gone() -> None:
    registry = CollectorRegistry()
    metrics = OcppMetrics(registry, SID)
    metrics.observe({("cs-1", 1): 11.0, ("cs-2", 2): 4.5}, 15.5, {"charging": 2, "free": 1}, 0)
    assert limit_series(registry) == {("cs-1", "1"): 11_000.0, ("cs-2", "2"): 4_500.0}
    assert value(registry, "smartgrid_substation_ocpp_limits_granted_watts") == 15_500.0
    assert value(registry, "smartgrid_substation_ocpp_evses", state="charging") == 2
    assert value(registry, "smartgrid_substation_ocpp_evses", state="free") == 1
    assert value(registry, "smartgrid_substation_ocpp_evses", state="offline") == 0
    metrics.observe({("cs-2", 2): 6.0}, 6.0, {"charging": 1, "free": 2}, 0)
    assert limit_series(registry) == {("cs-2", "2"): 6_000.0}
    metrics.observe({}, 0.0, {"free": 3}, 0)
    assert limit_series(registry) == {}
    assert value(registry, "smartgrid_substation_ocpp_evses", state="charging") == 0


def test_walk_ins_count_what_the_book_saw_since_the_last_look() -> None:
    registry = CollectorRegistry()
    metrics = OcppMetrics(registry, SID)
    name = "smartgrid_substation_ocpp_walk_ins_total"
    assert value(registry, name) == 0
    metrics.observe({}, 0.0, {}, 2)
    metrics.observe({}, 0.0, {}, 2)
    metrics.observe({}, 0.0, {}, 3)
    assert value(registry, name) == 3


def test_an_unknown_evse_state_is_refused() -> None:
    metrics = OcppMetrics(CollectorRegistry(), SID)
    with pytest.raises(ValueError, match="parked"):
        metrics.observe({}, 0.0, {"parked": 1}, 0)
    assert set(OCPP_EVSE_STATES) == {"free", "charging", "unavailable", "offline"}


def booted(registry: StationRegistry, station_id: str, statuses: list[ConnectorStatus]) -> int:
    connection = registry.connect(station_id)
    registry.boot(station_id, connection, vendor="v", model="m")
    for evse_id, status in enumerate(statuses, start=1):
        registry.record_status(station_id, connection, evse_id, 1, status)
    return connection


def test_station_bays_report_a_walk_in_from_plug_in_to_the_end() -> None:
    metrics_registry = CollectorRegistry()
    stations = StationRegistry()
    book = StationSessions(30.0, evse_max_kw=lambda bay: EVSE_MAX_KW)
    bays = StationBays(
        book,
        stations,
        time_scale=1.0,
        charger_max_kw=EVSE_MAX_KW,
        metrics=OcppMetrics(metrics_registry, SID),
    )
    free, occupied = ConnectorStatus.AVAILABLE, ConnectorStatus.OCCUPIED
    faulted = ConnectorStatus.FAULTED
    cs1 = booted(stations, "cs-1", [free, free])
    booted(stations, "cs-2", [faulted])

    def evses() -> dict[str, float | None]:
        return {
            s: value(metrics_registry, "smartgrid_substation_ocpp_evses", state=s)
            for s in OCPP_EVSE_STATES
        }

    bays.advance(0.0)
    assert evses() == {"free": 2, "charging": 0, "unavailable": 1, "offline": 0}
    assert limit_series(metrics_registry) == {}

    # A car plugs in at cs-1's EVSE 2 by itself: a walk-in, counted at its EVSE's max.
    stations.record_status("cs-1", cs1, 2, 1, occupied)
    book.transaction_started(
        "cs-1", 2, "tx-1", 0.0, remote_start_id=None, token_type="Local", token="w-1",
        reading=Reading(energy_wh=0.0),
    )  # fmt: skip
    bays.advance(0.0)
    assert value(metrics_registry, "smartgrid_substation_ocpp_walk_ins_total") == 1
    assert limit_series(metrics_registry) == {("cs-1", "2"): EVSE_MAX_KW * 1000}
    granted = "smartgrid_substation_ocpp_limits_granted_watts"
    assert value(metrics_registry, granted) == EVSE_MAX_KW * 1000
    assert evses() == {"free": 1, "charging": 1, "unavailable": 1, "offline": 0}

    # Its station goes away: the car is still there under its limit, on an offline EVSE.
    stations.disconnect("cs-1", cs1)
    book.station_lost("cs-1")
    bays.advance(0.0)
    assert evses() == {"free": 0, "charging": 0, "unavailable": 1, "offline": 1}
    assert limit_series(metrics_registry) == {("cs-1", "2"): EVSE_MAX_KW * 1000}

    # Back, and the transaction ends: its series goes, nothing is granted, one walk-in seen.
    cs1 = booted(stations, "cs-1", [free, occupied])
    book.station_back("cs-1")
    book.transaction_ended("cs-1", "tx-1", Reading(energy_wh=1000.0), 1.0)
    stations.record_status("cs-1", cs1, 2, 1, free)
    bays.advance(0.0)
    assert limit_series(metrics_registry) == {}
    assert value(metrics_registry, granted) == 0
    assert evses() == {"free": 2, "charging": 0, "unavailable": 1, "offline": 0}
    assert value(metrics_registry, "smartgrid_substation_ocpp_walk_ins_total") == 1
    assert Bay("cs-1", 2) not in book.occupied()
