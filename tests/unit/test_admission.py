"""Which heartbeats the dispatcher believes, without I/O: the hardening issue's findings 2 and 4
at the level of the load table and the admission rules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from contracts import Heartbeat
from dispatcher.admission import expected_user, from_the_future
from dispatcher.load_table import LoadTable
from messaging.ratelimit import TokenBucket

T0 = datetime(2026, 12, 1, tzinfo=UTC)
REAL = uuid.uuid4()


def beat(seq: int, *, incarnation: uuid.UUID | None = REAL, load: float = 0.0,
         sent: datetime = T0, received: int = 0) -> Heartbeat:  # fmt: skip
    return Heartbeat(
        substation_id="s1", capacity_kw=100, bays=4, load_kw=load, active_sessions=0, queued=0,
        seq=seq, incarnation=incarnation, assignments_received=received, sent_at=sent,
    )  # fmt: skip


def test_a_heartbeat_from_the_future_is_refused_within_the_skew_it_is_not() -> None:
    """Finding 4: a forged heartbeat with sent_at in 9999 outranked the real one for minutes."""
    now = T0.timestamp()
    far = beat(1, sent=datetime(9999, 1, 1, tzinfo=UTC))
    assert from_the_future(far, now, skew_s=5.0)
    assert from_the_future(beat(1, sent=T0 + timedelta(seconds=6)), now, skew_s=5.0)
    assert not from_the_future(beat(1, sent=T0 + timedelta(seconds=4)), now, skew_s=5.0)
    assert not from_the_future(beat(1, sent=T0 - timedelta(hours=1)), now, skew_s=5.0)


def test_a_forged_huge_seq_does_not_lock_the_real_substation_out() -> None:
    """Finding 4: one heartbeat for a real id with a huge seq made every real heartbeat after it
    "stale". A forgery under another incarnation is taken for a restart, and the real worker's
    next heartbeat (its own incarnation) supersedes it at once."""
    table = LoadTable(stale_after_intervals=3)
    assert table.observe(beat(7, load=10), 0.0)
    forged = beat(10**9, incarnation=uuid.uuid4(), load=99, sent=T0 + timedelta(seconds=1))
    assert table.observe(forged, 0.5)
    assert table.observe(beat(8, load=11, sent=T0 + timedelta(seconds=1)), 1.0)
    s = table.get("s1")
    assert s is not None
    assert (s.load_kw, s.seq) == (11, 8)
    assert [x.substation_id for x in table.eligible(1.0)] == ["s1"]


def test_within_one_incarnation_a_repeated_or_older_seq_is_refused() -> None:
    table = LoadTable()
    assert table.observe(beat(5, load=10), 0.0)
    assert not table.observe(beat(5, load=50), 0.1)
    assert not table.observe(beat(4, load=50, sent=T0 + timedelta(seconds=9)), 0.2)
    assert table.get("s1").load_kw == 10  # type: ignore[union-attr]


def test_a_new_incarnation_is_a_restart_and_counts_what_it_received_from_zero() -> None:
    table = LoadTable()
    table.observe(beat(3, received=2), 0.0)
    table.record_assignment("s1", 10)
    table.record_assignment("s1", 20)
    # The same counters a restarted older worker might show, but another process: it has had
    # one of the two (the other went back to the queue with its predecessor)
    assert table.observe(beat(4, incarnation=uuid.uuid4(), received=3), 1.0)
    s = table.get("s1")
    assert s is not None
    assert (s.pending_kw, s.pending_count) == (0.0, 0)


def test_an_older_worker_without_incarnation_is_ordered_by_seq_and_sent_at() -> None:
    table = LoadTable()
    assert table.observe(beat(5, incarnation=None, load=10), 0.0)
    assert not table.observe(beat(4, incarnation=None, sent=T0 - timedelta(seconds=1)), 0.1)
    assert table.observe(beat(0, incarnation=None, sent=T0 + timedelta(seconds=2)), 0.2)


def test_admission_is_bounded_in_rate_with_a_burst() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)  # 0.0: admitted, else the wait
    assert sum(bucket.take(0.0) == 0 for _ in range(100)) == 20
    assert sum(bucket.take(1.0) == 0 for _ in range(100)) == 10
    assert bucket.take(1.0) > 0
    assert sum(bucket.take(100.0) == 0 for _ in range(100)) == 20  # never more than the burst


@pytest.mark.parametrize(
    ("template", "sid", "user"),
    [("{substation_id}", "s1", "s1"), ("substation-{substation_id}", "north", "substation-north")],
)
def test_the_user_a_heartbeat_must_come_from(template: str, sid: str, user: str) -> None:
    assert expected_user(template, sid) == user
