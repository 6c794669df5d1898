"""The report's accounting, from a hand-made run: every request lands in exactly one bucket."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from contracts import EventKind
from loadgen.report import build_report, percentile, write_json
from loadgen.run import Pacing, RunOptions, RunResult
from loadgen.state import GridState
from tests.helpers import T0, at, charge_event, heartbeat


@pytest.fixture
def result() -> RunResult:
    state = GridState(keep_history=True)
    ids = [uuid.uuid4() for _ in range(5)]
    done_once, done_twice, dead, silent, refused = ids
    for i, rid in enumerate(ids):
        state.on_sent(rid, at(i * 0.1))
    for rid in (done_once, done_twice, dead, silent):
        state.on_ingress_result(rid, "202", at(0.5))
    state.on_ingress_result(refused, "503", at(0.5))
    for rid, sid in ((done_once, "a"), (done_twice, "b")):
        state.on_event(charge_event(rid, EventKind.DISPATCHED, 1, sid=sid))
        state.on_event(charge_event(rid, EventKind.STARTED, 2, sid=sid))
        completed = charge_event(rid, EventKind.COMPLETED, 3, sid=sid, energy_kwh=10.0)
        # At least once: the same completion event (same event_id) said twice is one charge
        state.on_event(completed)
        state.on_event(completed)
    # A second charging session of the same request (another event) is a duplicate
    state.on_event(charge_event(done_twice, EventKind.COMPLETED, 4, sid="b", energy_kwh=10.0))
    state.on_event(
        charge_event(dead, EventKind.DEAD_LETTERED, 1, reason="invalid ChargeRequest: x")
    )
    state.on_heartbeat(heartbeat("a", 100, 50, t=1))
    state.on_heartbeat(heartbeat("b", 300, 30, t=1))
    pacing = Pacing(planned=5, first_s=0.0, last_s=0.4, planned_span_s=0.4)
    return RunResult(RunOptions(rate=10, requests=5), state, pacing, T0, sending_s=0.5, elapsed_s=5)


def test_every_request_is_counted_once(result: RunResult) -> None:
    r = build_report(result, ["a", "b"])
    assert (r.sent, r.accepted, r.completed, r.lost) == (5, 4, 2, 1)
    assert r.rejected == 2
    assert r.rejected_at_ingress == {"503": 1}
    assert r.rejected_downstream == {"invalid ChargeRequest: x": 1}
    assert r.sent == r.accepted + sum(r.rejected_at_ingress.values())
    assert r.accepted == r.completed + sum(r.rejected_downstream.values()) + r.lost
    assert r.duplicates == 1
    assert r.exit_code == 1


def test_pacing_throughput_latency_and_balance(result: RunResult) -> None:
    r = build_report(result, ["a", "b"])
    assert r.achieved_rate_per_s == pytest.approx(10.0)  # 5 sends over 0.4 s
    assert r.target_rate_per_s == 10
    assert r.latency["completed"].count == 2
    assert r.latency["completed"].max_s == pytest.approx(3.0)  # sent at 0.0 and 0.1
    assert r.latency["accepted"].p50_s == pytest.approx(0.3)  # of 0.5, 0.4, 0.3, 0.2
    assert [row.substation_id for row in r.substations] == ["a", "b"]
    assert [row.requests for row in r.substations] == [1, 1]
    assert r.substations[0].capacity_share == pytest.approx(0.25)
    # Utilization 0.5 and 0.1: max over mean = 0.5 / 0.3
    assert r.imbalance == pytest.approx(0.5 / 0.3)


def test_json_has_the_documented_keys_and_no_nan(result: RunResult, tmp_path: Path) -> None:
    result.state.first_at.clear()  # no events: latencies are missing, not NaN
    path = tmp_path / "r.json"
    write_json(build_report(result), path)
    doc = json.loads(path.read_text())
    for key in ("sent", "accepted", "rejected", "completed", "duplicates", "lost"):
        assert isinstance(doc[key], int), key
    assert doc["latency"]["completed"]["p99_s"] is None
    assert doc["exit_code"] == 1


def test_nothing_lost_is_exit_0() -> None:
    state = GridState()
    rid = uuid.uuid4()
    state.on_sent(rid, T0)
    state.on_ingress_result(rid, "confirmed", at(0.01))
    state.on_event(charge_event(rid, EventKind.DISPATCHED, 0.5, sid="a"))
    state.on_event(charge_event(rid, EventKind.COMPLETED, 1, sid="a", energy_kwh=5.0))
    r = build_report(RunResult(RunOptions(via="amqp", requests=1), state))
    assert (r.accepted, r.completed, r.lost, r.exit_code) == (1, 1, 0, 0)


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert [percentile(values, q) for q in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert percentile([7.0], 99) == 7.0
