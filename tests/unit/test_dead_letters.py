"""Dead letters the broker made by itself are told as events; smartgrid's own are not told twice
(the hardening issue, finding 1: requests dead-lettered by the delivery limit, silently)."""

from __future__ import annotations

import json
import uuid

from contracts import Assignment, ChargeRequest, EventKind, LoadSnapshot, Topology
from contracts.messages import readable_request_id
from dispatcher.dead_letters import announcement, broker_death, reason_label

TOPO = Topology("ns")


def death(reason: str, queue: str) -> dict[str, object]:
    """Headers as RabbitMQ sets them on a message it dead-letters (pika decodes them so)."""
    return {
        "x-death": [{"count": 1, "reason": reason, "queue": queue, "exchange": "",
                     "routing-keys": [queue]}],
        "x-first-death-reason": reason,
        "x-first-death-queue": queue,
        "x-first-death-exchange": "",
    }  # fmt: skip


def request() -> ChargeRequest:
    return ChargeRequest(vehicle_id="EV-1", energy_kwh=10, max_power_kw=11)


def test_a_request_the_delivery_limit_dead_lettered_is_announced_with_the_reason() -> None:
    r = request()
    told = announcement(TOPO, death("delivery_limit", "ns.requests"), r.model_dump_json().encode())
    assert told is not None
    reason, event = told
    assert reason == "delivery_limit"
    assert event is not None
    assert (event.request_id, event.kind, event.substation_id) == (
        r.request_id,
        EventKind.DEAD_LETTERED,
        None,
    )
    assert event.reason is not None
    assert "delivery_limit" in event.reason
    assert "ns.requests" in event.reason


def test_an_assignment_dead_lettered_from_a_substation_queue_names_the_substation() -> None:
    r = request()
    snap = LoadSnapshot(load_kw=0, capacity_kw=1, committed_kw=0, pending_kw=0, heartbeat_seq=0,
                        heartbeat_age_s=0)  # fmt: skip
    a = Assignment(request=r, substation_id="s2", snapshot=snap, policy="headroom")
    told = announcement(TOPO, death("rejected", "ns.substation.s2"), a.model_dump_json().encode())
    assert told is not None
    assert told[1] is not None
    assert (told[1].request_id, told[1].substation_id) == (r.request_id, "s2")


def test_smartgrid_s_own_dead_letters_are_not_announced_again() -> None:
    headers = {"x-smartgrid-reason": "invalid ChargeRequest: ...", "x-delivery-count": 3}
    assert announcement(TOPO, headers, request().model_dump_json().encode()) is None


def test_a_dead_letter_without_a_readable_id_is_counted_not_announced() -> None:
    told = announcement(TOPO, death("delivery_limit", "ns.requests"), b"[" * 100_000)
    assert told == ("delivery_limit", None)


def test_older_brokers_first_death_headers_are_enough() -> None:
    headers = {"x-first-death-reason": b"expired", "x-first-death-queue": b"ns.requests"}
    assert broker_death(headers) == ("expired", "ns.requests")
    assert reason_label("something new") == "other"


def test_a_request_id_is_read_from_anything_without_failing() -> None:
    """Finding 5: the fallback reader raised RecursionError on 100,000 nested brackets."""
    rid = uuid.uuid4()
    assert readable_request_id(b"[" * 100_000 + b"]" * 100_000) is None
    assert readable_request_id(b"\x00\xff" * 1000) is None
    assert readable_request_id(json.dumps({"request_id": str(rid), "x": [1]}).encode()) == rid
    assert readable_request_id(b'{"request_id": "not-a-uuid-at-all-but-long-enough-x"}') is None
