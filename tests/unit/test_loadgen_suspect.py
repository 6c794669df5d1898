"""Finding 9: loadgen can be fooled. A completion it never saw dispatched, or a second one with
another energy, is suspect (not completed, not a duplicate charge); events of requests it did
not send and messages that are no contract message are counted and ignored, never a crash."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from contracts import ChargeEvent, EventKind, Topology
from loadgen.observe import GridObserver
from loadgen.report import build_report, write_json
from loadgen.state import GridState
from messaging import AmqpSettings
from tests.helpers import accepted_run, charge_event


def event(rid: uuid.UUID, kind: EventKind, t: float, **fields: Any) -> ChargeEvent:
    """Every event of these tests is s1's."""
    return charge_event(rid, kind, t, "s1", **fields)


def test_a_completion_never_seen_dispatched_is_suspect_and_the_request_still_lost() -> None:
    """Finding 9: a completion for a request loadgen never saw dispatched is suspect; the
    request is not completed by it (lost stays honest), nor is it a duplicate."""
    result, (forged, real) = accepted_run(2, "amqp")
    state = result.state
    state.on_event(event(forged, EventKind.COMPLETED, 1, energy_kwh=20.0))
    state.on_event(event(real, EventKind.DISPATCHED, 1))
    state.on_event(event(real, EventKind.COMPLETED, 2, energy_kwh=20.0))
    r = build_report(result)
    assert (r.completed, r.duplicates, r.suspect, r.lost) == (1, 0, 1, 1)
    assert r.suspect_ids == [str(forged)]
    assert r.lost_ids == [str(forged)]
    assert r.exit_code == 1


def test_a_genuine_completion_after_a_forged_one_completes_the_request() -> None:
    """Finding 9: the forged completion stays suspect; the real one, after its dispatch,
    completes the request once."""
    result, (rid,) = accepted_run(1, "amqp")
    state = result.state
    state.on_event(event(rid, EventKind.COMPLETED, 1, energy_kwh=99.0))
    state.on_event(event(rid, EventKind.DISPATCHED, 2))
    state.on_event(event(rid, EventKind.COMPLETED, 3, energy_kwh=20.0))
    r = build_report(result)
    assert (r.completed, r.duplicates, r.suspect, r.lost) == (1, 0, 1, 0)
    assert r.substations[0].energy_kwh == 20.0


def test_a_second_completion_with_another_energy_is_suspect_not_a_duplicate() -> None:
    """Finding 9: a second completion of a request with a different energy_kwh is suspect;
    the same energy under a new event id is a real double charge; the same event said again is
    one completion."""
    result, (other_energy, same_energy, repeated) = accepted_run(3, "amqp")
    state = result.state
    for rid in (other_energy, same_energy, repeated):
        state.on_event(event(rid, EventKind.DISPATCHED, 1))
    first = event(repeated, EventKind.COMPLETED, 2, energy_kwh=30.0)
    state.on_event(first)
    state.on_event(first)  # at least once: the same event id again
    state.on_event(event(other_energy, EventKind.COMPLETED, 2, energy_kwh=30.0))
    state.on_event(event(other_energy, EventKind.COMPLETED, 3, energy_kwh=300.0))
    state.on_event(event(same_energy, EventKind.COMPLETED, 2, energy_kwh=30.0))
    state.on_event(event(same_energy, EventKind.COMPLETED, 3, energy_kwh=30.0))
    r = build_report(result)
    assert (r.completed, r.duplicates, r.suspect, r.lost) == (3, 1, 1, 0)
    assert r.suspect_ids == [str(other_energy)]
    # The energy delivered is the first completion's, not the suspect one's
    assert r.substations[0].energy_kwh == 90.0


def test_a_suspect_completion_said_again_counts_once() -> None:
    """Finding 9: suspect completions are counted by event id, like the others."""
    result, (rid,) = accepted_run(1, "amqp")
    forged = event(rid, EventKind.COMPLETED, 1, energy_kwh=10.0)
    for _ in range(3):
        result.state.on_event(forged)
    assert build_report(result).suspect == 1


def test_events_of_requests_the_run_never_sent_are_foreign_and_ignored() -> None:
    """Finding 9: a completion (or any event) for a request id loadgen never sent changes
    nothing but the count of foreign events."""
    result, _ = accepted_run(1, "amqp")
    stranger = uuid.uuid4()
    result.state.on_event(event(stranger, EventKind.DISPATCHED, 1))
    result.state.on_event(event(stranger, EventKind.COMPLETED, 2, energy_kwh=10.0))
    r = build_report(result)
    assert (r.completed, r.duplicates, r.suspect, r.lost) == (0, 0, 0, 1)
    assert r.foreign_events == 2
    assert stranger not in result.state.first_at
    assert result.state.involved == set()


def test_a_follower_that_sent_nothing_still_sees_every_request() -> None:
    """Finding 9: the rules hold for a follower that only watches (tests, dashboards): every
    request id is its business, and one completed after its dispatch is completed."""
    state = GridState()
    rid = uuid.uuid4()
    state.on_event(event(rid, EventKind.DISPATCHED, 1))
    state.on_event(event(rid, EventKind.COMPLETED, 2, energy_kwh=10.0))
    assert rid in state.by_kind[EventKind.COMPLETED]
    assert (state.duplicates, state.suspect) == (0, 0)


def test_the_json_report_has_a_top_level_suspect(tmp_path: Path) -> None:
    """Finding 9: ``--json`` carries ``suspect`` beside the other counts."""
    result, (rid,) = accepted_run(1, "amqp")
    result.state.on_event(event(rid, EventKind.COMPLETED, 1, energy_kwh=10.0))
    path = tmp_path / "r.json"
    write_json(build_report(result), path)
    doc = json.loads(path.read_text())
    assert (doc["suspect"], doc["completed"], doc["duplicates"], doc["lost"]) == (1, 0, 0, 1)


def _observer(state: GridState) -> GridObserver:
    return GridObserver(AmqpSettings(), Topology("t"), state)


def _delivery(body: bytes, routing_key: str = "event.completed") -> Any:
    return SimpleNamespace(body=body, routing_key=routing_key)


def test_invalid_events_are_counted_never_a_crash() -> None:
    """Finding 9: strict parsing refuses a string for a number and an energy over 300 kWh;
    such an event (or an intent that is no intent) is counted as invalid and ignored."""
    result, (rid,) = accepted_run(1, "amqp")
    observer = _observer(result.state)
    valid = event(rid, EventKind.COMPLETED, 1, energy_kwh=10.0).model_dump(mode="json")
    for bad in ({"energy_kwh": "30"}, {"energy_kwh": 301.0}, {"attempt": "2"}):
        observer._on_event(_delivery(json.dumps({**valid, **bad}).encode()))
    observer._on_event(_delivery(b"\xff not json"))
    observer._on_event(_delivery(b'{"routes": "x"}', routing_key="intent.dispatched"))
    observer._on_heartbeat(_delivery(b'{"substation_id": "s1", "load_kw": "5"}'))
    r = build_report(result)
    assert r.invalid_messages == 6
    assert (r.completed, r.suspect, r.lost) == (0, 0, 1)
