"""Newcomer point 1: a request still in the grid is unfinished, reported where it waits; only one
the grid no longer holds is lost. Pure: hand-made events and grid counts, no broker."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from contracts import EventKind
from loadgen.report import build_report, write_json
from loadgen.state import CHARGING, HELD, QUEUED, GridState, Place
from loadgen.unfinished import Holdings, SubstationHolds, account
from messaging import exit_codes
from tests.helpers import accepted_run, charge_event

QUEUE = "smartgrid.requests"


def test_the_place_of_a_request_follows_its_latest_events() -> None:
    """Point 1: held until dispatched, queued where last dispatched, charging where started
    (unless redispatched elsewhere after that start)."""
    state = GridState()
    held, queued, charging, moved = (uuid.uuid4() for _ in range(4))
    state.on_event(charge_event(queued, EventKind.DISPATCHED, 1, "s1"))
    state.on_event(charge_event(charging, EventKind.DISPATCHED, 1, "s1"))
    state.on_event(charge_event(charging, EventKind.STARTED, 2, "s1"))
    state.on_event(charge_event(moved, EventKind.DISPATCHED, 1, "s1"))
    state.on_event(charge_event(moved, EventKind.STARTED, 2, "s1"))
    state.on_event(charge_event(moved, EventKind.REDISPATCHED, 3, "s2"))
    # An older event arriving late does not move a request back
    state.on_event(charge_event(queued, EventKind.DISPATCHED, 0.5, "s9"))
    assert state.place(held) == Place(HELD)
    assert state.place(queued) == Place(QUEUED, "s1")
    assert state.place(charging) == Place(CHARGING, "s1")
    assert state.place(moved) == Place(QUEUED, "s2")


def test_what_the_grid_holds_is_unfinished_not_lost() -> None:
    """Point 1, the README's case: 83 held in <ns>.requests and 12 charging, none lost."""
    held = {uuid.uuid4(): Place(HELD) for _ in range(83)}
    charging = {uuid.uuid4(): Place(CHARGING, "s1") for _ in range(12)}
    holdings = Holdings(83, QUEUE, substations={"s1": SubstationHolds(0, 12)})
    acc = account({**held, **charging}, holdings)
    assert acc.lost_ids == frozenset()
    assert acc.unfinished == {Place(HELD): 83, Place(CHARGING, "s1"): 12}
    doc = acc.unfinished_json(QUEUE)
    assert doc["total"] == 95
    assert doc["held"] == 83
    assert doc["charging"] == {"s1": 12}
    assert doc["where"] == {f"held in {QUEUE}": 83, "charging at s1": 12}


def test_fewer_held_than_missing_is_the_difference_lost_from_the_short_place() -> None:
    """Point 1: the grid holds 5 of the 8 missing; 3 are lost, taken where it holds fewer than
    expected (s2's queue is empty), and the rest stay unfinished where they wait."""
    at_s1 = {uuid.uuid4(): Place(QUEUED, "s1") for _ in range(5)}
    at_s2 = {uuid.uuid4(): Place(QUEUED, "s2") for _ in range(3)}
    holdings = Holdings(
        None, QUEUE, substations={"s1": SubstationHolds(5, 0), "s2": SubstationHolds(0, 0)}
    )
    acc = account({**at_s1, **at_s2}, holdings)
    assert acc.lost_ids == frozenset(at_s2)
    assert acc.unfinished == {Place(QUEUED, "s1"): 5}


def test_a_stage_seen_late_is_not_a_loss_when_the_substation_holds_them() -> None:
    """Point 1: the heartbeat still counts as queued what the events say started: the
    substation holds as many as are missing there, so none is lost."""
    ids = {uuid.uuid4(): Place(CHARGING, "s1") for _ in range(4)}
    acc = account(ids, Holdings(0, QUEUE, substations={"s1": SubstationHolds(4, 0)}))
    assert acc.lost_ids == frozenset()
    assert acc.unfinished_total == 4


def test_counts_at_other_places_do_not_cover_a_loss() -> None:
    """Point 1: a crowd of sessions at a substation none of the missing requests went to (a
    forged heartbeat, say) does not make a request held in <ns>.requests unfinished."""
    rid = uuid.uuid4()
    holdings = Holdings(0, QUEUE, substations={"fake": SubstationHolds(500, 500)})
    assert account({rid: Place(HELD)}, holdings).lost_ids == {rid}


def test_without_the_grids_counts_every_missing_request_is_lost() -> None:
    """Point 1: no counts (the run was interrupted, or not asked): nothing vouches for them."""
    ids = {uuid.uuid4(): Place(HELD) for _ in range(3)}
    acc = account(ids, None)
    assert acc.lost_ids == frozenset(ids)
    assert acc.unfinished_total == 0


def test_unfinished_none_lost_exits_4_and_the_json_says_where(tmp_path: Path) -> None:
    """Point 1: --json gains ``unfinished`` (total and by where) and ``grid_holdings``; the
    exit code is the unfinished one (4), and a loss still wins (1)."""
    result, ids = accepted_run(4)
    state = result.state
    done, held, queued, charging = ids
    state.on_event(charge_event(done, EventKind.DISPATCHED, 1, "s1"))
    state.on_event(charge_event(done, EventKind.COMPLETED, 2, "s1"))
    state.on_event(charge_event(queued, EventKind.DISPATCHED, 1, "s1"))
    state.on_event(charge_event(charging, EventKind.DISPATCHED, 1, "s2"))
    state.on_event(charge_event(charging, EventKind.STARTED, 2, "s2"))
    result.holdings = Holdings(
        1, QUEUE, substations={"s1": SubstationHolds(1, 0), "s2": SubstationHolds(0, 1)}
    )
    report = build_report(result)
    assert (report.completed, report.lost, report.unfinished_total) == (1, 0, 3)
    assert report.exit_code == exit_codes.UNFINISHED == 4
    out = tmp_path / "r.json"
    write_json(report, out)
    doc = json.loads(out.read_text())
    assert doc["exit_code"] == 4
    assert doc["unfinished"]["total"] == 3
    assert doc["unfinished"]["held"] == 1
    assert doc["unfinished"]["queued"] == {"s1": 1}
    assert doc["unfinished"]["charging"] == {"s2": 1}
    assert doc["grid_holdings"]["requests"] == 1
    assert sorted(doc["unfinished_ids"]) == sorted(str(r) for r in (held, queued, charging))
    # When the requests queue turns out empty, the one held there is lost, and 1 wins over 4
    result.holdings = Holdings(0, QUEUE, substations=result.holdings.substations)
    report = build_report(result)
    assert (report.lost, report.unfinished_total, report.exit_code) == (1, 2, 1)
    assert report.lost_ids == [str(held)]
