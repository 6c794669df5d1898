"""The wire contract: what is accepted, what is refused and why, and the names."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from contracts import (
    Assignment,
    ChargeEvent,
    ChargeRequest,
    DispatchIntent,
    EventKind,
    Heartbeat,
    LoadSnapshot,
    Route,
    SessionOutcome,
    Topology,
)
from contracts.messages import MAX_INTENT_ROUTES
from contracts.schema import json_schemas

VALID = {"vehicle_id": "EV-1", "energy_kwh": 30, "max_power_kw": 11}


def test_a_minimal_request_gets_an_id_a_version_and_a_timestamp() -> None:
    req = ChargeRequest.model_validate(VALID)
    assert req.schema_version == 1
    assert isinstance(req.request_id, uuid.UUID)
    assert req.requested_at.tzinfo is not None
    assert ChargeRequest.model_validate_json(req.model_dump_json()) == req


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"energy_kwh": 0}, "energy_kwh"),
        ({"energy_kwh": -5}, "energy_kwh"),
        ({"energy_kwh": "lots"}, "energy_kwh"),
        ({"energy_kwh": 10_000}, "energy_kwh"),
        ({"max_power_kw": 10_000}, "max_power_kw"),
        ({"max_power_kw": 0.1}, "max_power_kw"),
        ({"vehicle_id": ""}, "vehicle_id"),
        ({"vehicle_id": "x" * 65}, "vehicle_id"),
        ({"vehicle_id": "bad id!"}, "vehicle_id"),
        ({"request_id": "not-a-uuid"}, "request_id"),
        ({"schema_version": 2}, "schema_version"),
        ({"priority": 10}, "priority"),
        ({"departure": "2026-01-01T10:00:00"}, "departure"),  # no UTC offset
        ({"energy_kwhh": 5}, "energy_kwhh"),  # a typo is an error, not ignored
    ],
)
def test_invalid_requests_are_refused_naming_the_field(
    patch: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        ChargeRequest.model_validate({**VALID, **patch})
    assert field in {str(e["loc"][0]) for e in err.value.errors()}


@pytest.mark.parametrize("missing", ["vehicle_id", "energy_kwh", "max_power_kw"])
def test_required_fields(missing: str) -> None:
    body = {k: v for k, v in VALID.items() if k != missing}
    with pytest.raises(ValidationError, match=missing):
        ChargeRequest.model_validate(body)


def test_departure_must_follow_the_request() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValidationError, match="departure must be later"):
        ChargeRequest.model_validate({**VALID, "requested_at": now, "departure": now})
    ok = ChargeRequest.model_validate({**VALID, "departure": now + timedelta(hours=2)})
    assert ok.departure is not None


def test_messages_are_frozen() -> None:
    req = ChargeRequest.model_validate(VALID)
    with pytest.raises(ValidationError):
        req.energy_kwh = 5  # type: ignore[misc]


def test_assignment_and_event_round_trip() -> None:
    req = ChargeRequest.model_validate(VALID)
    snap = LoadSnapshot(load_kw=1, capacity_kw=2, committed_kw=3, pending_kw=4, heartbeat_seq=5,
                        heartbeat_age_s=0.5)  # fmt: skip
    a = Assignment(request=req, substation_id="s1", snapshot=snap, policy="headroom")
    assert Assignment.model_validate_json(a.model_dump_json()) == a
    ev = ChargeEvent(request_id=req.request_id, kind=EventKind.COMPLETED, energy_kwh=30)
    assert json.loads(ev.model_dump_json())["kind"] == "completed"


def test_heartbeat_refuses_ids_that_cannot_be_queue_names() -> None:
    base = dict(capacity_kw=100, bays=2, load_kw=0, active_sessions=0, queued=0, seq=0,
                assignments_received=0)  # fmt: skip
    assert Heartbeat(substation_id="north-1", **base).status == "up"
    with pytest.raises(ValidationError):
        Heartbeat(substation_id="North 1", **base)


def test_topology_names_are_the_documented_ones() -> None:
    t = Topology("ns")
    assert t.requests_exchange == "ns.requests"
    assert t.requests_queue == "ns.requests"
    assert t.heartbeats_exchange == "ns.heartbeats"
    assert t.substations_exchange == "ns.substations"
    assert t.substation_queue("s1") == "ns.substation.s1"
    assert t.events_exchange == "ns.events"
    assert t.event_routing_key("started") == "event.started"
    assert t.dead_exchange == "ns.dead"
    assert t.dead_queue == "ns.dead"
    args = t.requests_queue_spec().arguments
    assert args["x-queue-type"] == "quorum"
    assert args["x-single-active-consumer"] is True
    assert args["x-dead-letter-exchange"] == "ns.dead"
    assert args["x-dead-letter-strategy"] == "at-least-once"
    assert args["x-overflow"] == "reject-publish"


@pytest.mark.parametrize("bad", ["", "a b", "ns/x", ".hidden"])
def test_bad_namespaces_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        Topology(bad)


def test_every_message_exports_a_json_schema_with_its_fields() -> None:
    schemas = json_schemas()
    assert set(schemas) == {
        "ChargeRequest",
        "Heartbeat",
        "Assignment",
        "ChargeEvent",
        "DispatchIntent",
    }
    req = schemas["ChargeRequest"]
    assert set(req["required"]) == {"vehicle_id", "energy_kwh", "max_power_kw"}
    assert req["properties"]["energy_kwh"]["exclusiveMinimum"] == 0
    assert req["additionalProperties"] is False
    assert "load_kw" in schemas["Heartbeat"]["properties"]


def test_heartbeat_releases_are_optional_and_bounded() -> None:
    base = dict(substation_id="s1", capacity_kw=100, bays=2, load_kw=0, active_sessions=0,
                queued=0, seq=0, assignments_received=0)  # fmt: skip
    # An older worker's heartbeat (no releases, no time scale) still validates
    old = Heartbeat.model_validate_json(json.dumps(base))
    assert old.releases == ()
    assert old.time_scale is None
    assert old.charger_max_kw is None
    hb = Heartbeat(**base, releases=[{"in_s": 0.5, "kw": 50}], time_scale=3600)
    assert hb.releases[0].sessions == 1
    assert Heartbeat.model_validate_json(hb.model_dump_json()) == hb
    for bad in ({"in_s": -1, "kw": 5}, {"in_s": 1, "kw": -5}, {"in_s": 1e6, "kw": 5},
                {"in_s": 1, "kw": 5, "sessions": 0}, {"in_s": 1, "kw": 5, "x": 1}):  # fmt: skip
        with pytest.raises(ValidationError):
            Heartbeat(**base, releases=[bad])
    with pytest.raises(ValidationError, match="releases"):
        Heartbeat(**base, releases=[{"in_s": 1, "kw": 1}] * 65)
    schema = json_schemas()["Heartbeat"]
    assert schema["properties"]["releases"]["maxItems"] == 64
    assert "releases" not in schema["required"]
    assert set(schema["$defs"]["Release"]["required"]) == {"in_s", "kw"}


def test_a_request_without_id_gets_one_its_redeliveries_share() -> None:
    from contracts.messages import derived_request_id

    body = b'{"vehicle_id": "EV-1", "energy_kwh": 20, "max_power_kw": 11}'
    assert derived_request_id(body, None) == derived_request_id(body, None)
    assert derived_request_id(body, None) != derived_request_id(body + b" ", None)
    # The publisher's message_id wins over the body: two bodies, one message.
    assert derived_request_id(body, "m-1") == derived_request_id(body + b" ", "m-1")
    assert derived_request_id(body, "m-1") != derived_request_id(body, "m-2")


def test_a_dispatch_intent_stands_for_one_event_per_route() -> None:
    first, again = uuid.uuid4(), uuid.uuid4()
    intent = DispatchIntent(
        dispatcher="smartgrid-dispatcher-1",
        routes=[
            Route(request_id=first, substation_id="s1"),
            Route(request_id=again, substation_id="s2", kind="redispatched", attempt=3),
        ],
    )
    wire = DispatchIntent.model_validate_json(intent.model_dump_json())
    assert wire == intent
    events = wire.events()
    assert [(e.request_id, e.kind, e.substation_id, e.attempt) for e in events] == [
        (first, EventKind.DISPATCHED, "s1", 1),
        (again, EventKind.REDISPATCHED, "s2", 3),
    ]
    assert {e.at for e in events} == {intent.at}
    # The same intent delivered twice stands for the same events, not new ones
    assert [e.event_id for e in events] == [e.event_id for e in intent.events()]
    assert len({e.event_id for e in events}) == 2


@pytest.mark.parametrize(
    "routes",
    [
        [],  # an intent is about something
        [{"request_id": str(uuid.uuid4()), "substation_id": "s1", "kind": "completed"}],
        [{"request_id": str(uuid.uuid4()), "substation_id": "S 1"}],
        [{"request_id": str(uuid.uuid4()), "substation_id": "s1", "attempt": 0}],
        [{"request_id": str(uuid.uuid4()), "substation_id": "s1"}] * (MAX_INTENT_ROUTES + 1),
    ],
)
def test_a_dispatch_intent_refuses_what_it_cannot_mean(routes: list[dict[str, object]]) -> None:
    body = json.dumps({"dispatcher": "d", "routes": routes})
    with pytest.raises(ValidationError):
        DispatchIntent.model_validate_json(body)


# -- finding 6 of the hardening issue: the wire is as strict as the published schema ----------


@pytest.mark.parametrize(
    ("raw", "field", "error_type"),
    [
        (b'{"vehicle_id":"EV-1","energy_kwh":"30","max_power_kw":11}', "energy_kwh",
         "float_type"),
        (b'{"vehicle_id":"EV-1","energy_kwh":30,"max_power_kw":"11"}', "max_power_kw",
         "float_type"),
        (b'{"vehicle_id":"EV-1","energy_kwh":NaN,"max_power_kw":11}', "energy_kwh",
         "finite_number"),
        (b'{"vehicle_id":"EV-1","energy_kwh":30,"max_power_kw":Infinity}', "max_power_kw",
         "finite_number"),
        (b'{"vehicle_id":"EV-1","energy_kwh":30,"max_power_kw":11,"priority":"5"}', "priority",
         "int_type"),
        (b'{"vehicle_id":"EV-1","energy_kwh":30,"max_power_kw":11,"priority":true}', "priority",
         "int_type"),
        (b'{"vehicle_id":"EV-1","energy_kwh":30,"max_power_kw":11,"requested_at":1700000000}',
         "requested_at", "datetime_type"),
        (b'{"vehicle_id":"EV-1","energy_kwh":30,"max_power_kw":11,"schema_version":"1"}',
         "schema_version", "literal_error"),
    ],
)  # fmt: skip
def test_off_the_wire_a_request_is_what_its_json_schema_says_and_the_error_says_why(
    raw: bytes, field: str, error_type: str
) -> None:
    """Finding 6: a string for a number passed over AMQP (the schema says number), and a bare
    NaN was refused as "less than or equal to 300". Each now fails for the true reason."""
    with pytest.raises(ValidationError) as caught:
        ChargeRequest.model_validate_json(raw)
    errors = caught.value.errors()
    assert [(e["loc"][0], e["type"]) for e in errors] == [(field, error_type)], errors
    schema = ChargeRequest.model_json_schema()["properties"][field]
    assert "string" not in json.dumps(schema) or field == "requested_at"


def test_integers_are_numbers_and_iso_strings_are_dates_on_the_wire() -> None:
    raw = json.dumps(
        {**VALID, "request_id": str(uuid.uuid4()), "departure": "2099-01-01T08:00:00+01:00"}
    )
    req = ChargeRequest.model_validate_json(raw)
    assert req.energy_kwh == 30.0
    assert req.departure is not None
    assert req.departure.utcoffset() == timedelta(hours=1)


def test_an_event_cannot_claim_more_energy_than_a_request_may_ask_for() -> None:
    """Finding 6: a fake completion of 1e6 kWh went into loadgen's total."""
    rid = str(uuid.uuid4())
    ok = {"request_id": rid, "kind": "completed", "energy_kwh": 300}
    assert ChargeEvent.model_validate_json(json.dumps(ok)).energy_kwh == 300
    with pytest.raises(ValidationError, match="less than or equal to 300"):
        ChargeEvent.model_validate_json(json.dumps({**ok, "energy_kwh": 1e6}))


def test_a_fingerprint_is_what_a_retry_must_repeat() -> None:
    """Finding 7: a retry with the same request_id and another body is a conflict, told by this
    fingerprint; when the request was made (set by a gateway if absent) is not part of it."""
    rid = uuid.uuid4()
    first = ChargeRequest(request_id=rid, vehicle_id="EV-1", energy_kwh=10, max_power_kw=11)
    again = ChargeRequest.model_validate_json(
        json.dumps({"request_id": str(rid), "vehicle_id": "EV-1", "energy_kwh": 10.0,
                    "max_power_kw": 11, "priority": 0,
                    "requested_at": (first.requested_at + timedelta(seconds=5)).isoformat()})
    )  # fmt: skip
    assert again.fingerprint() == first.fingerprint()
    for patch in ({"energy_kwh": 250}, {"vehicle_id": "EV-2"}, {"priority": 1},
                  {"departure": datetime.now(UTC) + timedelta(hours=2)}):  # fmt: skip
        other = first.model_copy(update=patch)
        assert other.fingerprint() != first.fingerprint(), patch


def test_event_ids_stay_unique_across_a_fork() -> None:
    """A forked process (loadgen's local grid forks its workers) draws other event ids than
    its parent: the generator is reseeded in the child."""
    import os

    from contracts.messages import _event_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out without running the parent's cleanup
        os.write(write, _event_id().bytes)
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != _event_id().bytes


def test_a_completed_event_says_its_outcome_consistently() -> None:
    rid = uuid.uuid4()
    done = ChargeEvent(
        request_id=rid,
        kind=EventKind.COMPLETED,
        energy_kwh=4.0,
        energy_requested_kwh=10.0,
        outcome=SessionOutcome.DEPARTED,
        demand_met=False,
    )
    assert ChargeEvent.model_validate_json(done.model_dump_json()) == done
    with pytest.raises(ValidationError, match="demand_met"):
        ChargeEvent(request_id=rid, kind=EventKind.COMPLETED, outcome="full", demand_met=False)
    with pytest.raises(ValidationError, match="unserved"):
        ChargeEvent(request_id=rid, kind=EventKind.COMPLETED, outcome="unserved", energy_kwh=1.0)
