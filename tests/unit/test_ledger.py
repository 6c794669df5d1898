"""The dispatcher's bookkeeping of what it dispatched (dispatcher.ledger), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import Heartbeat
from dispatcher.ledger import DispatchLedger, is_silent, resend_rule, silent_while_connected
from dispatcher.load_table import LoadTable, SubstationState

FP, OTHER_FP = 111, 222


def state(status: str = "up", last_seen: float = 0.0, interval_s: float = 1.0) -> SubstationState:
    table = LoadTable(stale_after_intervals=3)
    hb = Heartbeat(
        substation_id="s1", capacity_kw=100, bays=10, load_kw=0, committed_kw=0,
        active_sessions=0, queued=0, status="up", seq=1, assignments_received=0,
        interval_s=interval_s, sent_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    table.observe(hb, last_seen)
    s = table.get("s1")
    assert s is not None
    s.status = status  # type: ignore[assignment]
    return s


def test_a_request_held_or_in_flight_is_a_duplicate_or_a_conflict() -> None:
    ledger = DispatchLedger()
    assert ledger.seen(1, FP) == "new"
    ledger.hold(1, FP)
    assert ledger.seen(1, FP) == "duplicate"
    assert ledger.seen(1, OTHER_FP) == "conflict"


def test_a_confirmed_route_makes_a_later_copy_a_duplicate_and_ends_in_flight() -> None:
    ledger = DispatchLedger()
    ledger.hold(1, FP)
    ledger.assigned(1, "s1", FP)
    ledger.confirmed(1, "s1", FP)
    assert ledger.pending == {}
    assert ledger.route(1) == ("s1", True, FP)
    assert ledger.seen(1, FP) == "duplicate"
    assert ledger.seen(1, OTHER_FP) == "conflict"


def test_a_route_known_only_from_an_intent_does_not_make_a_copy_a_duplicate() -> None:
    """The other dispatcher may have died before its assignment was published: the copy is
    dispatched (sticky to the intent's substation), not dropped."""
    ledger = DispatchLedger()
    ledger.followed(1, "s1")
    assert ledger.route(1) == ("s1", False, None)
    assert ledger.seen(1, FP) == "new"


def test_an_echo_of_a_confirmed_route_changes_nothing() -> None:
    ledger = DispatchLedger()
    ledger.assigned(1, "s1", FP)
    ledger.confirmed(1, "s1", FP)
    ledger.followed(1, "s1")
    assert ledger.route(1) == ("s1", True, FP)
    ledger.followed(1, "s2")  # another dispatcher sent it elsewhere since: a copy may be there
    assert ledger.route(1) == ("s2", False, FP)


def test_a_returned_assignment_forgets_its_unconfirmed_route_only() -> None:
    ledger = DispatchLedger()
    ledger.assigned(1, "s1", FP)
    ledger.returned(1, "s2")  # not where it was routed: kept
    assert ledger.route(1) == ("s1", False, FP)
    ledger.returned(1, "s1")
    assert ledger.route(1) is None
    ledger.assigned(2, "s1", FP)
    ledger.confirmed(2, "s1", FP)
    ledger.returned(2, "s1")  # a confirmed route stays: a copy is there
    assert ledger.route(2) == ("s1", True, FP)


def test_reassigning_to_the_same_substation_keeps_the_route() -> None:
    ledger = DispatchLedger()
    ledger.followed(1, "s1")
    ledger.assigned(1, "s1", FP)  # the sticky resend
    assert ledger.route(1) == ("s1", False, None)
    ledger.assigned(1, "s2", FP)
    assert ledger.route(1) == ("s2", False, FP)


def test_routes_are_bounded_oldest_first() -> None:
    ledger = DispatchLedger(remembered=2)
    for key in (1, 2, 3):
        ledger.assigned(key, "s1", FP)
    assert len(ledger) == 2
    assert ledger.route(1) is None
    assert ledger.route(3) is not None


def test_a_lost_connection_clears_what_is_in_flight_not_the_routes() -> None:
    ledger = DispatchLedger()
    ledger.hold(1, FP)
    ledger.assigned(1, "s1", FP)
    ledger.connection_lost()
    assert ledger.pending == {}
    assert ledger.route(1) == ("s1", False, FP)
    assert ledger.seen(1, FP) == "new"


def test_silence_counts_from_the_reconnect() -> None:
    assert silent_while_connected(0.0, connected_at=0.0, now=4.0, window=3.0)
    assert not silent_while_connected(0.0, connected_at=10.0, now=12.0, window=3.0)
    s = state(last_seen=0.0)
    assert is_silent(s, 3.5, connected_at=None, stale_after_intervals=3)
    assert not is_silent(s, 3.5, connected_at=1.0, stale_after_intervals=3)
    assert is_silent(s, 4.5, connected_at=1.0, stale_after_intervals=3)


def test_the_resend_rule() -> None:
    assert resend_rule(state("up"), silent=False) == "resend"
    assert resend_rule(state("up"), silent=True) == "choose"
    assert resend_rule(state("refused"), silent=False) == "defer"
    assert resend_rule(state("draining"), silent=False) == "choose"
    assert resend_rule(None, silent=False) == "choose"
