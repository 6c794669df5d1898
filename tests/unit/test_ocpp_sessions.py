"""The sessions on OCPP stations and the limits they are given (substation_worker/ocpp/
sessions.py), without I/O: the capacity rule under any order of answers, starts, stops, walk-ins,
disconnections and a restart's leftovers."""

from __future__ import annotations

import random
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import SessionOutcome
from substation_worker.ocpp.registry import Bay
from substation_worker.ocpp.sessions import (
    MAX_REMOTE_START_ID,
    Limit,
    Phase,
    Reading,
    Start,
    StationSessions,
    Stop,
    remote_start_id_of,
    walk_in_key,
)

CAPACITY = 30.0
EVSE_MAX = 22.0
BAYS = [Bay("a", 1), Bay("a", 2), Bay("b", 1), Bay("b", 2)]


def book() -> StationSessions:
    return StationSessions(CAPACITY, evse_max_kw=lambda _bay: EVSE_MAX)


def free(b: StationSessions) -> list[Bay]:
    return [bay for bay in BAYS if bay not in b.occupied()]


def start_all(b: StationSessions, now: float = 0.0) -> list[Start]:
    """Answer every start Accepted and report it Started (transaction id = key)."""
    starts = [c for c in b.commands(now, free(b)) if isinstance(c, Start)]
    for c in starts:
        b.answered(c, True)
        b.transaction_started(
            c.station_id,
            c.evse_id,
            c.key,
            now,
            remote_start_id=c.remote_start_id,
            token_type="Central",
            token=c.key,
            reading=Reading(energy_wh=0.0, power_w=0.0),
        )
    return starts


def test_cars_share_the_capacity_and_start_within_it() -> None:
    b = book()
    keys = [str(uuid4()) for _ in range(3)]
    for k in keys:
        b.offer(k, 20.0, 11.0, 0.0)
    starts = start_all(b)
    assert len(starts) == 3
    # Fair: 10 kW each, all of the capacity.
    assert sum(c.limit_kw for c in starts) == pytest.approx(CAPACITY)
    assert b.granted_kw <= CAPACITY
    assert all(b.session(k).phase is Phase.CHARGING for k in keys)  # type: ignore[union-attr]


def test_a_newcomer_starts_only_within_what_the_lowers_free_once_accepted() -> None:
    b = book()
    first = [str(uuid4()) for _ in range(2)]
    for k in first:
        b.offer(k, 20.0, 11.0, 0.0)
    start_all(b)
    assert b.granted_kw == pytest.approx(22.0)  # two cars at their 11 kW
    late = str(uuid4())
    b.offer(late, 20.0, 11.0, 1.0)
    commands = b.commands(1.0, free(b))
    lowers = [c for c in commands if isinstance(c, Limit)]
    (start,) = [c for c in commands if isinstance(c, Start)]
    # Fair gives 10 kW each; the others still hold 11 until they accept their lower.
    assert [c.limit_kw for c in lowers] == [10.0, 10.0]
    assert start.limit_kw == pytest.approx(8.0)  # 30 - 22: the room there is now
    assert b.granted_kw <= CAPACITY + 1e-9
    for c in lowers:
        b.answered(c, True)
    b.answered(start, True)
    b.transaction_started(
        start.station_id, start.evse_id, "tx-late", 1.0,
        remote_start_id=start.remote_start_id, token_type="Central", token=late,
        reading=Reading(energy_wh=0.0),
    )  # fmt: skip
    (raise_,) = [c for c in b.commands(1.0, free(b)) if isinstance(c, Limit)]
    assert (raise_.key, raise_.limit_kw) == (late, 10.0)
    assert b.granted_kw == pytest.approx(CAPACITY)


def test_a_refused_lower_keeps_the_old_limit_counted_and_blocks_the_raise() -> None:
    b = book()
    first = [str(uuid4()) for _ in range(2)]
    for k in first:
        b.offer(k, 20.0, 11.0, 0.0)
    start_all(b)
    b.offer(str(uuid4()), 20.0, 11.0, 1.0)
    commands = b.commands(1.0, free(b))
    for c in commands:
        b.answered(c, not isinstance(c, Limit))
    assert b.granted_kw <= CAPACITY + 1e-9
    assert sorted(b.session(k).granted_kw for k in first) == [11.0, 11.0]  # type: ignore[union-attr, misc]


def test_a_refused_limit_is_asked_again_later_or_once_the_cars_needs_come() -> None:
    b = StationSessions(CAPACITY, evse_max_kw=lambda _bay: EVSE_MAX, refused_retry_s=60.0)
    walk_in = b.transaction_started(
        "a", 1, "tx-1", 0.0, remote_start_id=None, token_type="Local", token="w",
        reading=Reading(energy_wh=0.0), limit_kw=0.0,
    )  # fmt: skip
    assert walk_in is not None
    (first,) = b.commands(0.0, [])
    b.answered(first, False, 0.0)  # e.g. before its NotifyEVChargingNeeds (K15.FR.17)
    assert b.commands(30.0, []) == []
    assert [type(c) for c in b.commands(61.0, [])] == [Limit]
    assert b.commands(62.0, []) == []  # that one is in flight: nothing new
    b2 = StationSessions(CAPACITY, evse_max_kw=lambda _bay: EVSE_MAX, refused_retry_s=60.0)
    b2.transaction_started(
        "a", 1, "tx-1", 0.0, remote_start_id=None, token_type="Local", token="w",
        reading=Reading(energy_wh=0.0), limit_kw=0.0,
    )  # fmt: skip
    (first,) = b2.commands(0.0, [])
    b2.answered(first, False, 0.0)
    b2.charging_needs("a", 1, 1.0, energy_kwh=10.0, max_kw=11.0, departure_s=None)
    assert [type(c) for c in b2.commands(1.0, [])] == [Limit]


def test_a_refused_start_waits_again_first_in_line() -> None:
    b = book()
    keys = [str(uuid4()) for _ in range(5)]
    for k in keys:
        b.offer(k, 20.0, 11.0, 0.0)
    starts = [c for c in b.commands(0.0, BAYS) if isinstance(c, Start)]
    assert [c.key for c in starts] == keys[:4]
    b.answered(starts[0], False)
    assert b.session(keys[0]).phase is Phase.WAITING  # type: ignore[union-attr]
    assert b.session(keys[0]).granted_kw == 0  # type: ignore[union-attr]
    # The next free EVSE goes to it, not to the fifth.
    again = [c for c in b.commands(0.0, [Bay("c", 1)]) if isinstance(c, Start)]
    assert [c.key for c in again] == [keys[0]]


def test_a_car_is_stopped_at_its_energy_and_completes_with_what_was_metered() -> None:
    b = book()
    key = str(uuid4())
    b.offer(key, 5.0, 11.0, 0.0)
    start_all(b)
    b.meter("a", key, None, Reading(energy_wh=2_000.0, power_w=11_000.0), 900.0)
    assert not [c for c in b.commands(900.0, free(b)) if isinstance(c, Stop)]
    # 2 kWh + 11 kW x 1000 s = 5.06 kWh: estimated full, so stopped.
    (stop,) = [c for c in b.commands(1_900.0, free(b)) if isinstance(c, Stop)]
    assert stop.transaction_id == key
    b.answered(stop, True)
    ended = b.transaction_ended("a", key, Reading(energy_wh=5_050.0), 1_910.0)
    assert ended is not None
    assert ended.outcome is SessionOutcome.FULL
    assert ended.delivered_kwh == pytest.approx(5.05)
    assert b.take_events().completed == [ended]
    assert not b.holds(key)
    assert b.granted_kw == 0


def test_a_car_is_stopped_at_its_departure_with_part_of_its_energy() -> None:
    b = book()
    key = str(uuid4())
    b.offer(key, 50.0, 11.0, 0.0, departure_s=600.0)
    start_all(b)
    b.meter("a", key, None, Reading(energy_wh=1_000.0, power_w=11_000.0), 300.0)
    assert not [c for c in b.commands(599.0, free(b)) if isinstance(c, Stop)]
    (stop,) = [c for c in b.commands(600.0, free(b)) if isinstance(c, Stop)]
    ended = b.transaction_ended("a", stop.transaction_id, Reading(energy_wh=1_800.0), 601.0)
    assert ended is not None
    assert ended.outcome is SessionOutcome.DEPARTED


def test_a_car_whose_departure_passes_while_it_waits_leaves_unserved() -> None:
    b = book()
    key = str(uuid4())
    b.offer(key, 10.0, 11.0, 0.0, departure_s=100.0)
    b.commands(50.0, [])
    assert b.holds(key)
    b.commands(100.0, [])
    (gone,) = b.take_events().completed
    assert (gone.key, gone.outcome, gone.delivered_kwh) == (key, SessionOutcome.UNSERVED, 0.0)


def test_a_walk_in_is_one_session_whatever_the_station_repeats_and_takes_its_needs() -> None:
    b = book()
    for _ in range(2):  # a retried Started
        s = b.transaction_started(
            "a", 1, "tx-9", 0.0, remote_start_id=None, token_type="Local", token="walkin-1",
            reading=Reading(energy_wh=0.0), limit_kw=0.0,
        )  # fmt: skip
    assert s is not None
    assert s.key == walk_in_key("a", "tx-9")
    assert s.walk_in
    assert len(b.sessions()) == 1
    assert s.granted_kw == 0.0  # plugged in under the 0 W default
    b.charging_needs("a", 1, 0.0, energy_kwh=12.0, max_kw=7.0, departure_s=3_600.0)
    assert (s.energy_kwh, s.max_power_kw, s.departure_s) == (12.0, 7.0, 3_600.0)
    (raise_,) = [c for c in b.commands(0.0, free(b)) if isinstance(c, Limit)]
    assert raise_.limit_kw == 7.0
    assert b.take_events().started == [s]


def test_a_transaction_found_running_counts_its_evse_max_until_limited() -> None:
    b = book()
    key = str(uuid4())
    s = b.transaction_started(
        "a", 2, "tx-1", 0.0, remote_start_id=None, token_type="Central", token=key,
        reading=Reading(energy_wh=3_000.0), begins=False,
    )  # fmt: skip
    assert s is not None
    assert s.key == key
    assert not s.demand_known
    assert s.granted_kw == EVSE_MAX
    assert s.metered_kwh == 3.0  # its register counts from 0: its start value is gone
    # Never stopped before its request tells what it needs.
    b.meter("a", "tx-1", None, Reading(energy_wh=30_000.0), 10.0)
    (lower,) = b.commands(10.0, [])  # charged as the plan says meanwhile
    assert isinstance(lower, Limit)
    b.answered(lower, True)
    b.learn_demand(key, 20.0, 11.0, departure_s=None)
    assert [type(c) for c in b.commands(10.0, [])] == [Stop]


def test_a_running_transaction_first_seen_without_its_token_is_its_request_once_told() -> None:
    """After a restart a station may send an Updated without its id token before the one the
    worker's TriggerMessage asked for: taken for a walk-in first, it must become its request,
    never leave that request to be started a second time."""
    b = book()
    key = str(uuid4())
    b.offer(key, 10.0, 11.0, 0.0)  # the redelivered assignment, waiting for an EVSE
    first = b.transaction_started(
        "a", 1, "tx-7", 1.0, remote_start_id=None, token_type=None, token=None,
        reading=Reading(energy_wh=2_000.0), begins=False,
    )  # fmt: skip
    assert first is not None
    assert first.walk_in
    again = b.transaction_started(
        "a", 1, "tx-7", 2.0, remote_start_id=None, token_type="Central", token=key,
        reading=Reading(energy_wh=2_500.0), begins=False,
    )  # fmt: skip
    assert again is first
    assert (again.key, again.walk_in, again.energy_kwh) == (key, False, 10.0)
    assert [s.key for s in b.sessions()] == [key]
    assert b.waiting_count == 0
    assert not [c for c in b.commands(2.0, BAYS) if isinstance(c, Start)]


def test_an_event_of_a_transaction_after_its_end_makes_no_session() -> None:
    """Out of order: a station's Updated of a transaction that has ended (sent after its Ended)
    must not come back as a walk-in holding power forever."""
    b = book()
    s = b.transaction_started(
        "a", 1, "tx-1", 0.0, remote_start_id=None, token_type="Local", token="w",
        reading=Reading(energy_wh=0.0), limit_kw=0.0,
    )  # fmt: skip
    assert s is not None
    assert not b.has_ended("a", "tx-1")
    b.transaction_ended("a", "tx-1", Reading(energy_wh=5_000.0), 10.0)
    assert b.has_ended("a", "tx-1")
    assert not b.has_ended("b", "tx-1")  # another station's id space


def test_a_transaction_that_ended_unseen_completes_its_request_when_offered() -> None:
    b = book()
    key = str(uuid4())
    remote = remote_start_id_of(key)
    ended = b.transaction_ended("a", "old", Reading(energy_wh=4_000.0), 0.0, remote_start_id=remote)
    assert ended is None  # not known: kept for its request
    b.offer(key, 4.0, 11.0, 5.0)
    (done,) = b.take_events().completed
    assert (done.key, done.outcome, done.delivered_kwh) == (key, SessionOutcome.FULL, 4.0)
    assert not b.holds(key)


def test_remote_start_ids_are_stable_and_in_ocpp_range() -> None:
    key = str(uuid4())
    assert remote_start_id_of(key) == remote_start_id_of(key)
    assert all(1 <= remote_start_id_of(str(uuid4())) <= MAX_REMOTE_START_ID for _ in range(100))


def test_a_disconnected_station_keeps_its_limits_and_the_others_share_the_rest() -> None:
    b = book()
    keys = [str(uuid4()) for _ in range(4)]
    for k in keys:
        b.offer(k, 20.0, 11.0, 0.0)
    starts = start_all(b)
    on_a = [c.key for c in starts if c.station_id == "a"]
    b.station_lost("a")
    b.offer(str(uuid4()), 20.0, 11.0, 1.0)
    commands = b.commands(1.0, free(b))
    assert all(c.station_id != "a" for c in commands)
    held_by_a = sum(s.granted_kw for s in b.sessions() if s.key in on_a)
    assert held_by_a == pytest.approx(15.0)  # still counted as drawn
    assert b.granted_kw <= CAPACITY + 1e-9


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_the_limits_never_sum_above_the_capacity_whatever_the_answers(seed: int) -> None:
    """Random arrivals, walk-ins, answers (accepted, refused, none), meter values, ends and
    disconnections: at every step the sum counted stays within the capacity, and each session
    counts at least every limit its station may be following (the last it accepted, and any
    sent since that it has not refused)."""
    rng = random.Random(seed)
    b = book()
    possible: dict[str, set[float]] = {}  # key -> the limits its station may follow now
    pending: list[Start | Limit | Stop] = []
    now = 0.0
    tx = 0

    def answer(c: Start | Limit | Stop, accepted: bool | None) -> None:
        limits = possible.setdefault(c.key, {0.0})
        if isinstance(c, Limit) and accepted:
            limits.clear()
            limits.add(c.limit_kw)
        elif isinstance(c, Limit) and accepted is False and len(limits) > 1:
            limits.discard(c.limit_kw)
        b.answered(c, accepted)

    for _ in range(60):
        now += rng.uniform(0, 120)
        action = rng.random()
        if action < 0.25:
            b.offer(str(uuid4()), rng.uniform(1, 30), rng.choice([7.0, 11.0, 22.0]), now)
        elif action < 0.35:
            bay = rng.choice(BAYS)
            if bay not in b.occupied():
                tx += 1
                s = b.transaction_started(
                    bay.station_id, bay.evse_id, f"w{tx}", now, remote_start_id=None,
                    token_type="Local", token="w", reading=Reading(energy_wh=0.0),
                    limit_kw=0.0,
                )  # fmt: skip
                assert s is not None
                possible[s.key] = {0.0}  # the TxDefaultProfile
        elif action < 0.6 and pending:
            c = pending.pop(rng.randrange(len(pending)))
            accepted = rng.choice([True, True, True, False, None])
            s = b.session(c.key)
            answer(c, accepted)
            if isinstance(c, Start) and accepted is not False and s is not None:
                b.transaction_started(
                    c.station_id, c.evse_id, c.key, now, remote_start_id=c.remote_start_id,
                    token_type="Central", token=c.key, reading=Reading(energy_wh=0.0),
                )  # fmt: skip
            if isinstance(c, Start) and accepted is False:
                possible.pop(c.key, None)
            if isinstance(c, Stop) and accepted and s is not None:
                b.transaction_ended(c.station_id, c.transaction_id, Reading(), now)
                possible.pop(c.key, None)
        elif action < 0.7:
            charging = [s for s in b.sessions() if s.transaction_id is not None]
            if charging:
                s = rng.choice(charging)
                wh = (s.metered_kwh + rng.uniform(0, 5)) * 1000
                b.meter(s.station_id or "", s.transaction_id, None, Reading(energy_wh=wh), now)
        elif action < 0.75:
            station = rng.choice(["a", "b"])
            b.station_lost(station)
            # Its calls in flight fail with the connection (ConnectionClosed: no answer).
            for c in [c for c in pending if c.station_id == station]:
                pending.remove(c)
                answer(c, None)
        elif action < 0.8:
            for station in list(b.offline):
                b.station_back(station)
        for c in b.commands(now, free(b)):
            if isinstance(c, Start):
                possible[c.key] = {c.limit_kw}  # the station may apply it at once
            elif isinstance(c, Limit):
                possible.setdefault(c.key, {0.0}).add(c.limit_kw)
            pending.append(c)
        assert b.granted_kw <= CAPACITY + 1e-6
        for s in b.sessions():
            assert max(possible.get(s.key, {0.0})) <= s.granted_kw + 1e-9, s
