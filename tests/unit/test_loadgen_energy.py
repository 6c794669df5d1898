"""loadgen's energy accounting: energy requested and delivered and demands met, per substation
and in total, from the completed events' fields (``energy_requested_kwh``, ``demand_met``)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from contracts import ChargeEvent, EventKind, SessionOutcome
from loadgen.report import build_report, energy_line, write_json
from tests.helpers import accepted_run, charge_event


def completed(rid: uuid.UUID, sid: str, got: float, asked: float, **more: Any) -> ChargeEvent:
    outcome = SessionOutcome.FULL if got >= asked else SessionOutcome.DEPARTED
    if got == 0:
        outcome = SessionOutcome.UNSERVED
    return charge_event(
        rid,
        EventKind.COMPLETED,
        5,
        sid,
        energy_kwh=got,
        energy_requested_kwh=asked,
        outcome=outcome,
        demand_met=outcome is SessionOutcome.FULL,
        **more,
    )


def test_energy_and_demands_are_counted_per_substation_and_in_total(tmp_path: Path) -> None:
    # Given four requests: two full at s1, one left short and one unserved at s2
    result, (a, b, c, d) = accepted_run(4, "amqp")
    state = result.state
    for rid, sid in ((a, "s1"), (b, "s1"), (c, "s2"), (d, "s2")):
        state.on_event(charge_event(rid, EventKind.DISPATCHED, 1, sid))
    state.on_event(completed(a, "s1", 10.0, 10.0))
    state.on_event(completed(b, "s1", 20.0, 20.0))
    state.on_event(completed(c, "s2", 5.0, 30.0))
    state.on_event(completed(d, "s2", 0.0, 8.0))
    # When the report is built
    r = build_report(result, order=["s1", "s2"])
    # Then totals and rows say what was requested, delivered and met
    assert (r.energy_requested_kwh, r.energy_delivered_kwh) == (68.0, 35.0)
    assert (r.demands, r.demands_met, r.completed, r.lost) == (4, 2, 4, 0)
    s1, s2 = r.substations
    assert (s1.energy_requested_kwh, s1.energy_kwh, s1.demands, s1.demands_met) == (30, 30, 2, 2)
    assert (s2.energy_requested_kwh, s2.energy_kwh, s2.demands, s2.demands_met) == (38, 5, 2, 0)
    assert energy_line(r) == (
        "energy: 35.0 of 68.0 kWh requested delivered (51.5%); demands met 2/4"
    )
    # And the JSON carries the keys at its top level
    path = tmp_path / "report.json"
    write_json(r, path)
    doc = json.loads(path.read_text())
    assert {k: doc[k] for k in ("energy_requested_kwh", "energy_delivered_kwh")} == {
        "energy_requested_kwh": 68.0,
        "energy_delivered_kwh": 35.0,
    }
    assert (doc["demands"], doc["demands_met"]) == (4, 2)
    assert doc["substations"][1]["demands_met"] == 0


def test_a_completion_that_says_nothing_of_its_demand_counts_energy_but_no_demand() -> None:
    result, (rid,) = accepted_run(1, "amqp")
    state = result.state
    state.on_event(charge_event(rid, EventKind.DISPATCHED, 1, "s1"))
    state.on_event(charge_event(rid, EventKind.COMPLETED, 2, "s1", energy_kwh=12.0))
    r = build_report(result)
    assert (r.energy_delivered_kwh, r.energy_requested_kwh, r.demands) == (12.0, 0.0, 0)


def test_a_completion_said_again_counts_its_demand_once() -> None:
    result, (rid,) = accepted_run(1, "amqp")
    state = result.state
    state.on_event(charge_event(rid, EventKind.DISPATCHED, 1, "s1"))
    event = completed(rid, "s1", 10.0, 10.0)
    state.on_event(event)
    state.on_event(event)
    r = build_report(result)
    assert (r.demands, r.demands_met, r.energy_requested_kwh) == (1, 1, 10.0)
