"""Dispatch policies and the load table, without I/O."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from contracts import Heartbeat
from dispatcher.load_table import MAX_IN_TRANSIT, LoadTable, SubstationState
from dispatcher.policies import POLICIES, Headroom, LeastLoaded, make_policy, promised_ratio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def hb(sid: str, capacity: float, *, load: float = 0.0, committed: float = 0.0, seq: int = 1,
       status: str = "up", active: int = 0, queued: int = 0, bays: int = 100,
       interval: float = 1.0, sent: datetime = T0, received: int = 0) -> Heartbeat:  # fmt: skip
    return Heartbeat(
        substation_id=sid, capacity_kw=capacity, bays=bays, load_kw=load, committed_kw=committed,
        active_sessions=active, queued=queued, status=status, seq=seq,
        assignments_received=received, interval_s=interval, sent_at=sent,
    )  # fmt: skip


def table_of(*beats: Heartbeat, now: float = 0.0) -> LoadTable:
    t = LoadTable(stale_after_intervals=3)
    for b in beats:
        assert t.observe(b, now)
    return t


def burst(table: LoadTable, policy_name: str, n: int, kw: float = 50.0) -> Counter[str]:
    """n requests arriving between two heartbeats: what each policy does with stale load."""
    policy = make_policy(policy_name, random.Random(7))
    got: Counter[str] = Counter()
    for _ in range(n):
        target = policy.choose(table.eligible(0.0), kw)
        if target is None:
            got["<held>"] += 1
            continue
        table.record_assignment(target, kw)
        got[target] += 1
    return got


GRID = (hb("s150", 150), hb("s300", 300), hb("s600", 600))


def test_naive_least_loaded_herds_a_burst_onto_one_substation() -> None:
    # Given three idle substations and loads that only the next heartbeat will update
    got = burst(table_of(*GRID), "least-loaded", 30)
    # Then every request of the burst went to the same one
    assert len(got) == 1
    assert sum(got.values()) == 30


def test_headroom_spreads_a_burst_in_proportion_to_capacity() -> None:
    got = burst(table_of(*GRID), "headroom", 30, kw=10.0)
    assert got["<held>"] == 0
    assert got["s600"] == pytest.approx(2 * got["s300"], abs=1)
    assert got["s300"] == pytest.approx(2 * got["s150"], abs=1)


def test_headroom_holds_once_every_substation_is_promised_beyond_the_factor() -> None:
    # 1050 kW of capacity, hold factor 1 (the default) → 1050 kW may be promised, 21 cars of 50 kW
    got = burst(table_of(*GRID), "headroom", 60, kw=50.0)
    assert got["<held>"] == 60 - 21
    for sid, cap in (("s150", 150), ("s300", 300), ("s600", 600)):
        assert got[sid] * 50 <= cap


def test_headroom_promises_up_to_its_hold_factor() -> None:
    # hold factor 2 → about 2100 kW may be promised, 42 cars of 50 kW
    table, policy = table_of(*GRID), Headroom(random.Random(7), hold_factor=2.0)
    got: Counter[str] = Counter()
    for _ in range(60):
        target = policy.choose(table.eligible(0.0), 50.0)
        got[target or "<held>"] += 1
        if target is not None:
            table.record_assignment(target, 50.0)
    assert got["<held>"] == 60 - 42
    for sid, cap in (("s150", 150), ("s300", 300), ("s600", 600)):
        assert got[sid] * 50 <= 2 * cap


def test_headroom_counts_reported_commitment_and_bays() -> None:
    # s600 reports its bays full with small cars: sessions bind before power does
    table = table_of(hb("s600", 600, committed=44, active=4, bays=4, queued=4), hb("s300", 300))
    policy = Headroom(random.Random(1))
    assert policy.choose(table.eligible(0.0), 11.0) == "s300"


def test_a_big_car_is_not_held_forever_at_an_idle_small_substation() -> None:
    table = table_of(hb("tiny", 20, bays=1))
    assert Headroom(random.Random(1), hold_factor=0.5).choose(table.eligible(0.0), 350.0) == "tiny"


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_skips_stale_and_draining_substations(name: str) -> None:
    table = table_of(hb("old", 600, interval=1.0), now=0.0)
    table.observe(hb("draining", 600, status="draining"), now=9.0)
    table.observe(hb("fresh", 50), now=9.0)
    policy = make_policy(name, random.Random(3))
    for _ in range(5):
        assert policy.choose(table.eligible(10.0), 7.0) in ("fresh", None)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_holds_when_nothing_is_eligible(name: str) -> None:
    assert make_policy(name, random.Random(3)).choose([], 7.0) is None


def test_unknown_policy_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("fastest", random.Random(0))


def test_round_robin_cycles_in_id_order() -> None:
    table = table_of(*GRID)
    policy = make_policy("round-robin", random.Random(0))
    picks = [policy.choose(table.eligible(0.0), 7.0) for _ in range(6)]
    assert picks == ["s150", "s300", "s600"] * 2


def test_least_loaded_follows_reported_load_only() -> None:
    table = table_of(hb("a", 100, load=90), hb("b", 1000, load=95))
    assert LeastLoaded(random.Random(0)).choose(table.eligible(0.0), 7.0) == "a"


# -- load table ---------------------------------------------------------------------------


def test_a_heartbeat_resets_what_was_assigned_since_the_last_one() -> None:
    table = table_of(hb("s", 100, seq=1))
    table.record_assignment("s", 40)
    state = table.get("s")
    assert state is not None
    assert state.pending_kw == 40
    assert state.pending_count == 1
    table.observe(hb("s", 100, seq=2, committed=40, active=1, received=1, sent=T0 + SECOND), 1.0)
    state = table.get("s")
    assert state is not None
    assert state.pending_kw == 0
    assert state.committed_kw == 40


SECOND = timedelta(seconds=1)


def pending(table: LoadTable, sid: str) -> tuple[float, int]:
    state = table.get(sid)
    assert state is not None
    return state.pending_kw, state.pending_count


def test_what_the_worker_has_not_received_stays_pending_after_a_heartbeat() -> None:
    # Three assignments sent; the heartbeat was sent when only the first had arrived
    table = table_of(hb("s", 100, seq=1, received=5))
    for kw in (10, 20, 30):
        table.record_assignment("s", kw)
    table.observe(hb("s", 100, seq=2, committed=10, active=1, received=6, sent=T0 + SECOND), 1.0)
    # Then the other two still count: the worker's committed power does not hold them yet
    assert pending(table, "s") == (50, 2)
    # And a later heartbeat that has them both clears them
    table.record_assignment("s", 5)
    table.observe(hb("s", 100, seq=3, committed=60, received=8, sent=T0 + 2 * SECOND), 2.0)
    assert pending(table, "s") == (5, 1)


def test_without_counting_what_is_in_transit_a_heartbeat_clears_it_all() -> None:
    table = LoadTable(count_in_transit=False)
    table.observe(hb("s", 100, seq=1), 0.0)
    table.record_assignment("s", 40)
    table.observe(hb("s", 100, seq=2, sent=T0 + SECOND), 1.0)
    assert pending(table, "s") == (0, 0)


def test_a_restarted_worker_counts_what_it_received_since_it_started() -> None:
    table = table_of(hb("s", 100, seq=7, received=500))
    for kw in (10, 20, 30):
        table.record_assignment("s", kw)
    # A new process: seq and the count start again; it has had one of the three
    table.observe(hb("s", 100, seq=0, received=1, sent=T0 + SECOND), 1.0)
    assert pending(table, "s") == (50, 2)


def test_an_assignment_the_broker_refused_is_not_carried_as_in_transit() -> None:
    table = table_of(hb("s", 100, seq=1))
    table.record_assignment("s", 10)
    refused = (20.0, table.record_assignment("s", 20))
    table.unrecord_assignment("s", refused)
    # Still counted until the next heartbeat, but not after it
    assert pending(table, "s") == (30, 2)
    table.observe(hb("s", 100, seq=2, sent=T0 + SECOND), 1.0)
    assert pending(table, "s") == (10, 1)


def test_what_is_in_transit_is_bounded() -> None:
    table = table_of(hb("s", 1e6, seq=1, bays=100_000))
    for _ in range(MAX_IN_TRANSIT + 10):
        table.record_assignment("s", 1)
    table.observe(hb("s", 1e6, seq=2, bays=100_000, sent=T0 + SECOND), 1.0)
    assert pending(table, "s") == (MAX_IN_TRANSIT, MAX_IN_TRANSIT)


def test_reordered_heartbeats_are_ignored_but_a_restarted_worker_is_not() -> None:
    table = table_of(hb("s", 100, seq=5, load=10, sent=T0))
    assert not table.observe(hb("s", 100, seq=4, load=99, sent=T0 - timedelta(seconds=1)), 1.0)
    assert table.get("s").load_kw == 10  # type: ignore[union-attr]
    # a restarted worker counts seq from 0 again, but it is newer
    assert table.observe(hb("s", 100, seq=0, load=0, sent=T0 + timedelta(seconds=5)), 2.0)


def test_staleness_is_counted_in_heartbeat_intervals() -> None:
    table = table_of(hb("fast", 100, interval=0.1), hb("slow", 100, interval=5.0))
    assert {s.substation_id for s in table.eligible(1.0)} == {"slow"}
    assert table.counts(1.0) == {"eligible": 1, "stale": 1, "draining": 0}


def test_promised_ratio_takes_the_dimension_that_binds() -> None:
    s = SubstationState("s", capacity_kw=100, bays=2, load_kw=0, committed_kw=50,
                        active_sessions=2, queued=0, status="up", seq=0, interval_s=1,
                        last_seen=0, sent_at_ts=0)  # fmt: skip
    assert promised_ratio(s) == pytest.approx(1.0)  # 2 of 2 bays
    assert promised_ratio(s, 150, 0) == pytest.approx(2.0)  # 200 kW of 100


def test_silence_counts_only_while_connected() -> None:
    from dispatcher.ledger import silent_while_connected

    # Last heard at t=0, window 3 s.
    assert silent_while_connected(0.0, connected_at=0.0, now=4.0, window=3.0)
    assert not silent_while_connected(0.0, connected_at=0.0, now=2.0, window=3.0)
    # Reconnected at t=10 after an outage: not stale until 3 s of silence after that.
    assert not silent_while_connected(0.0, connected_at=10.0, now=12.0, window=3.0)
    assert silent_while_connected(0.0, connected_at=10.0, now=13.5, window=3.0)
