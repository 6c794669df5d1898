"""The demo's OCPP substation report (loadgen.demo_stations.summarize): what the stations
metered against the completed events and the worker's counters, without I/O."""

from __future__ import annotations

from uuid import UUID, uuid4

from loadgen.demo_stations import (
    KW_PER_EVSE,
    FleetSnapshot,
    StationsOptions,
    TxRecord,
    WorkerCounts,
    summarize,
    summary_lines,
)

OPTS = StationsOptions(count=2, evses=2, walk_ins=2)
SID = OPTS.substation_id
R1, R2 = uuid4(), uuid4()


def snapshot(
    ended_wh: dict[str, float] | None = None, peak_limits_w: float = 20_000.0
) -> FleetSnapshot:
    transactions = {
        "t1": TxRecord("cs1", "t1", str(R1), walk_in=False, limits_w=[11_000.0, 7_000.0]),
        "t2": TxRecord("cs2", "t2", str(R2), walk_in=False, limits_w=[7_400.0]),
        "w1": TxRecord("cs1", "w1", "walkin-1", walk_in=True, limits_w=[5_000.0, 9_000.0]),
        "w2": TxRecord("cs2", "w2", "walkin-2", walk_in=True, limits_w=[3_000.0]),
    }
    return FleetSnapshot(
        booted=2,
        defaults_given=2,
        charging=1,
        walk_ins=2,
        turned_away=1,
        ended_wh={"t1": 20_000.0, "t2": 30_000.0, "w1": 12_500.0} if ended_wh is None else ended_wh,
        transactions=transactions,
        peak_limits_w=peak_limits_w,
        peak_draw_w=19_000.0,
    )


COMPLETIONS: dict[UUID, tuple[str | None, float]] = {
    R1: (SID, 20.0),
    R2: (SID, 30.0),
    uuid4(): ("s150", 44.0),  # another substation's: not compared
}
AGREEING = WorkerCounts(stations_connected=2, sessions_completed=3, energy_delivered_kwh=62.5)


def test_the_options_limit_the_cars() -> None:
    # 4 EVSEs of 22 kW could draw 88 kW; the substation has 7.5 kW per EVSE
    assert OPTS.capacity_kw == 4 * KW_PER_EVSE == 30.0
    assert OPTS.capacity_kw < 4 * 22.0
    assert SID == "s30-ocpp"
    assert OPTS.spec().bays == 4
    env = OPTS.worker_env(9123)
    assert env["SMARTGRID_OCPP_PORT"] == "9123"
    assert env["SMARTGRID_OCPP_SETTLE_S"] == "0"
    # 2 walk-ins over 2 stations within WALK_IN_SPREAD_H hours
    assert OPTS.walk_in_config().per_hour == 2 / (2 * 4.0)
    assert StationsOptions(count=2, walk_ins=0).walk_in_config().per_hour == 0.0


def test_everything_adding_up_is_no_problem() -> None:
    s = summarize(OPTS, snapshot(), COMPLETIONS, AGREEING)
    assert s.problems == []
    assert (s.requests, s.requests_kwh, s.requests_metered_kwh) == (2, 50.0, 50.0)
    assert (s.walk_ins, s.walk_ins_ended, s.walk_ins_served, s.walk_ins_charging) == (2, 1, 1, 1)
    assert s.walk_ins_kwh == 12.5
    assert (s.ended_transactions, s.metered_kwh, s.worker_sessions) == (3, 62.5, 3)
    # t1 and w1 were given a second limit while they ran
    assert (s.cars_limits_moved, s.limit_updates) == (2, 2)
    assert s.stations_connected == 2
    text = "\n".join(summary_lines(s))
    assert "stations connected 2/2" in text
    assert "(0 differ)" in text


def test_an_event_that_is_not_what_the_station_metered_is_a_problem() -> None:
    completions = dict(COMPLETIONS)
    completions[R2] = (SID, 30.01)  # 10 Wh more than metered
    s = summarize(OPTS, snapshot(), completions, AGREEING)
    assert s.mismatched == [str(R2)]
    assert any("not what a station metered" in p for p in s.problems)


def test_a_completed_request_without_an_ended_transaction_is_a_problem() -> None:
    ended = {"t1": 20_000.0, "w1": 12_500.0}
    worker = WorkerCounts(2, 2, 32.5)
    s = summarize(OPTS, snapshot(ended), COMPLETIONS, worker)
    assert s.mismatched == [str(R2)]


def test_the_worker_counting_other_sessions_or_energy_is_a_problem() -> None:
    fewer = summarize(OPTS, snapshot(), COMPLETIONS, WorkerCounts(2, 2, 62.5))
    assert any("counted 2 completed sessions" in p for p in fewer.problems)
    less = summarize(OPTS, snapshot(), COMPLETIONS, WorkerCounts(2, 3, 62.4))
    assert any("metered 62.500 kWh" in p for p in less.problems)
    unread = summarize(OPTS, snapshot(), COMPLETIONS, WorkerCounts(None, None, None))
    assert len(unread.problems) == 3  # sessions, energy, stations


def test_limits_above_the_capacity_and_a_lost_station_are_problems() -> None:
    over = summarize(OPTS, snapshot(peak_limits_w=30_002.0), COMPLETIONS, AGREEING)
    assert any("above the capacity of 30 kW" in p for p in over.problems)
    at = summarize(OPTS, snapshot(peak_limits_w=30_000.0), COMPLETIONS, AGREEING)
    assert at.problems == []
    lost = summarize(OPTS, snapshot(), COMPLETIONS, WorkerCounts(1, 3, 62.5))
    assert lost.problems == ["1 of 2 stations connected at the end"]


def test_problems_given_are_kept_first() -> None:
    s = summarize(OPTS, snapshot(), COMPLETIONS, AGREEING, ["stuck"])
    assert s.problems == ["stuck"]
