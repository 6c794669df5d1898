"""The dispatcher against the real broker, with heartbeats published by the test itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from contracts import (
    Assignment,
    ChargeEvent,
    ChargeRequest,
    DispatchIntent,
    EventKind,
    Heartbeat,
    Route,
    Topology,
)
from contracts.messages import derived_request_id
from contracts.topology import BindingSpec
from dispatcher.service import Dispatcher, build_dispatcher
from dispatcher.settings import DispatcherSettings
from messaging import AmqpSettings, Session
from messaging.publishing import REASON_HEADER
from tests.helpers import collect, register_substations, wait_until


@contextlib.asynccontextmanager
async def running_dispatcher(
    amqp_settings: AmqpSettings, topology: Topology, **overrides: Any
) -> AsyncIterator[Dispatcher]:
    settings = DispatcherSettings(
        amqp_url=amqp_settings.amqp_url, namespace=topology.namespace, metrics_port=0, **overrides
    )
    dispatcher = build_dispatcher(settings, CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await dispatcher.link.wait_ready(10)
        yield dispatcher
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def declare_substations(session: Session, topology: Topology, ids: list[str]) -> None:
    register_substations(topology, ids)
    await session.declare_all(
        topology.exchanges(), topology.core_queues(), topology.core_bindings()
    )
    for sid in ids:
        await session.declare_queue(topology.substation_queue_spec(sid))
        await session.bind(topology.substation_binding(sid))


async def heartbeat(
    session: Session, topology: Topology, sid: str, capacity: float, seq: int, **fields: Any
) -> None:
    beat = Heartbeat(
        **{"substation_id": sid, "capacity_kw": capacity, "bays": 1000, "load_kw": 0,
           "active_sessions": 0, "queued": 0, "seq": seq, "assignments_received": 0, **fields},
    )  # fmt: skip
    await session.publish(topology.heartbeats_exchange, "", beat.model_dump_json().encode())


def request(i: int) -> ChargeRequest:
    return ChargeRequest(vehicle_id=f"EV-{i}", energy_kwh=20, max_power_kw=11)


async def test_poison_is_dead_lettered_with_a_reason_and_valid_requests_behind_it_flow(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    # Given one live substation and a dispatcher
    await declare_substations(session, topology, ["s1"])
    async with running_dispatcher(amqp_settings, topology) as dispatcher:
        await heartbeat(session, topology, "s1", 1000, seq=1)
        await wait_until(lambda: dispatcher.table.get("s1") is not None, "s1 admitted")
        # When garbage and then valid requests are published straight to <ns>.requests
        poison = [b"not json", b'{"vehicle_id": "EV-x", "energy_kwh": -5, "max_power_kw": 11}']
        for body in poison:
            await session.publish(topology.requests_exchange, "", body)
        valid = [request(i) for i in range(20)]
        await asyncio.gather(
            *(
                session.publish(topology.requests_exchange, "", r.model_dump_json().encode())
                for r in valid
            )
        )
        # Then the valid ones reach the substation queue as Assignments
        got = await collect(session, topology.substation_queue("s1"), len(valid))
        assigned = {Assignment.model_validate_json(d.body).request.request_id for d in got}
        assert assigned == {r.request_id for r in valid}
        # And the garbage sits in <ns>.dead with the reason, and the dispatcher still runs
        dead = await collect(session, topology.dead_queue, len(poison))
        assert sorted(d.body for d in dead) == sorted(poison)
        reasons = [str(d.headers[REASON_HEADER]) for d in dead]
        assert any("energy_kwh" in r for r in reasons), reasons
        assert all(r.startswith("invalid ChargeRequest") for r in reasons)
        assert dispatcher.link.session is not None


async def test_requests_stay_in_the_queue_while_no_substation_has_room(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    await declare_substations(session, topology, ["tiny"])
    async with running_dispatcher(amqp_settings, topology, prefetch=5) as dispatcher:
        # No heartbeat yet: nothing is eligible, so nothing may be dispatched
        reqs = [request(i) for i in range(30)]
        for r in reqs:
            await session.publish(topology.requests_exchange, "", r.model_dump_json().encode())
        await wait_until(lambda: len(dispatcher.held) == 5, "5 requests held")
        assert await session.queue_depth(topology.substation_queue("tiny")) == 0
        assert await session.queue_depth(topology.requests_queue) == 25
        # A 22 kW substation, held at 1 x capacity: room for 2 cars of 11 kW, then it holds again
        await heartbeat(session, topology, "tiny", 22, seq=1)
        await wait_until(lambda: dispatcher.table.get("tiny") is not None, "tiny admitted")
        await wait_until(lambda: len(dispatcher.held) == 5, "5 requests held")
        got = await collect(session, topology.substation_queue("tiny"), 2, timeout=3)
        assert len(got) == 2
        assert await session.queue_depth(topology.substation_queue("tiny")) == 0
        # Its next heartbeat: both received and charging, one predicted to end 0.3 s later.
        # No heartbeat follows, yet one more car is sent once that power is free, and only one
        ending = [{"in_s": 0.3, "kw": 11.0}]
        await heartbeat(session, topology, "tiny", 22, seq=2, committed_kw=22.0,
                        active_sessions=2, assignments_received=2, releases=ending)  # fmt: skip
        got = await collect(session, topology.substation_queue("tiny"), 2, timeout=3)
        assert len(got) == 1


async def test_a_ghost_substation_is_never_routed_to_nor_given_a_queue(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    """Finding 1: a heartbeat for a substation whose queue does not exist made the dispatcher
    route to it; every request came back unroutable, was requeued, and the delivery limit
    dead-lettered it. A substation is admitted only once its queue is seen to exist."""
    # Given a real substation and a ghost heartbeating beside it (no queue of its own)
    await declare_substations(session, topology, ["s1"])
    async with running_dispatcher(amqp_settings, topology) as dispatcher:
        for seq in range(1, 4):
            await heartbeat(session, topology, "ghost", 100_000, seq=seq)
        await heartbeat(session, topology, "s1", 1000, seq=1)
        await wait_until(lambda: dispatcher.table.get("s1") is not None, "s1 admitted")
        await wait_until(
            lambda: dispatcher.metrics.heartbeats.labels("no_queue")._value.get() >= 1,
            "the ghost refused for want of a queue",
        )
        # When requests arrive (the ghost, far bigger, would be the policy's choice)
        reqs = [request(i) for i in range(10)]
        for r in reqs:
            await session.publish(topology.requests_exchange, "", r.model_dump_json().encode())
        got = await collect(session, topology.substation_queue("s1"), len(reqs))
        # Then all went to s1, none came back, and the ghost got neither a place nor a queue
        assert {Assignment.model_validate_json(d.body).request.request_id for d in got} == {
            r.request_id for r in reqs
        }
        assert dispatcher.table.get("ghost") is None
        assert dispatcher.metrics.republish_failures.labels("PublishReturned")._value.get() == 0
    assert await session.queue_exists(topology.substation_queue("ghost")) is None
    assert await session.queue_depth(topology.requests_queue) == 0


async def test_a_returned_assignment_costs_its_request_no_delivery(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    """Finding 1: a returned assignment must not nack its request with requeue (each would cost
    one of the delivery limit's 20 deliveries): the request stays held and goes elsewhere, and
    the substation is out until a heartbeat after its queue exists again."""
    # Given two admitted substations, of which the policy prefers "big"
    await declare_substations(session, topology, ["big", "small"])
    async with running_dispatcher(amqp_settings, topology) as dispatcher:
        await heartbeat(session, topology, "big", 10_000, seq=1)
        await heartbeat(session, topology, "small", 100, seq=1)
        await wait_until(lambda: len(dispatcher.table) == 2, "both substations admitted")
        # When big's queue disappears (an operator deleted it) and a request comes
        await session.delete_queue(topology.substation_queue("big"))
        r = request(1)
        await session.publish(topology.requests_exchange, "", r.model_dump_json().encode())
        got = await collect(session, topology.substation_queue("small"), 1)
        # Then it went to small, acked once: nothing back in the requests queue, no redelivery
        assigned = [Assignment.model_validate_json(d.body) for d in got]
        assert [(a.request.request_id, a.attempt) for a in assigned] == [(r.request_id, 1)]
        assert dispatcher.metrics.republish_failures.labels("PublishReturned")._value.get() == 1
        assert await session.queue_depth(topology.requests_queue) == 0
        assert dispatcher.table.get("big") is None
        # And big comes back once its queue exists and it heartbeats again
        no_queue = dispatcher.metrics.heartbeats.labels("no_queue")
        refused = no_queue._value.get()
        await heartbeat(session, topology, "big", 10_000, seq=2)
        await wait_until(
            lambda: no_queue._value.get() > refused, "big's heartbeat refused: it has no queue"
        )
        assert dispatcher.table.get("big") is None
        await session.declare_queue(topology.substation_queue_spec("big"))
        await session.bind(topology.substation_binding("big"))
        dispatcher._no_queue.clear()  # (rather than wait out the re-check interval)
        await heartbeat(session, topology, "big", 10_000, seq=3)
        await wait_until(lambda: dispatcher.table.get("big") is not None, "big admitted again")


async def test_a_retry_with_another_body_is_a_conflict_rejected_with_the_reason(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    """Finding 7: the same request_id with 10 kWh, then 250 kWh, was acked as a duplicate over
    AMQP, silently. The second is a conflict: dead-lettered, with a `rejected` event saying so;
    a retry with the same body is still a harmless duplicate."""
    await declare_substations(session, topology, ["s1"])
    events = await _follow_events(session, topology, "event.rejected")
    first = ChargeRequest(vehicle_id="EV-9", energy_kwh=10, max_power_kw=11)
    conflicting = first.model_copy(update={"energy_kwh": 250.0})
    async with running_dispatcher(amqp_settings, topology) as dispatcher:
        await heartbeat(session, topology, "s1", 1000, seq=1)
        await wait_until(lambda: dispatcher.table.get("s1") is not None, "s1 admitted")
        for r in (first, first, conflicting):
            await session.publish(topology.requests_exchange, "", r.model_dump_json().encode())
        got = await collect(session, topology.substation_queue("s1"), 2, timeout=3)
        rejected = await collect(session, events, 1)
        dead = await collect(session, topology.dead_queue, 1)
        assert dispatcher.metrics.duplicates._value.get() == 1
        assert dispatcher.metrics.conflicts._value.get() == 1
    assert [Assignment.model_validate_json(d.body).request for d in got] == [first]
    (event,) = [ChargeEvent.model_validate_json(d.body) for d in rejected]
    assert (event.request_id, event.kind) == (first.request_id, EventKind.REJECTED)
    assert event.reason is not None
    assert event.reason.startswith("conflict")
    assert [ChargeRequest.model_validate_json(d.body) for d in dead] == [conflicting]
    assert str(dead[0].headers[REASON_HEADER]).startswith("conflict")


async def test_a_request_without_id_keeps_one_id_across_copies(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    # Given a live substation, and a client (not the gateway) that sends no request_id
    await declare_substations(session, topology, ["s1"])
    body = b'{"vehicle_id": "EV-raw", "energy_kwh": 20, "max_power_kw": 11}'
    async with running_dispatcher(amqp_settings, topology) as dispatcher:
        await heartbeat(session, topology, "s1", 1000, seq=1)
        await wait_until(lambda: dispatcher.table.get("s1") is not None, "s1 admitted")
        # When the same message arrives twice (a redelivery looks just like this)
        for _ in range(2):
            await session.publish(topology.requests_exchange, "", body)
        await wait_until(
            lambda: dispatcher.metrics.duplicates._value.get() == 1,
            "the copy counted as a duplicate",
        )
        # Then one assignment reaches the substation, under an id derived from the message
        got = await collect(session, topology.substation_queue("s1"), 2, timeout=3)
        assert len(got) == 1
        assigned = Assignment.model_validate_json(got[0].body)
        assert assigned.request.request_id == derived_request_id(body, None)


async def _follow_events(session: Session, topology: Topology, *keys: str) -> str:
    """An exclusive queue (gone with the session) bound to the events exchange with ``keys``."""
    queue = f"{topology.namespace}.t-intents"
    await session.declare_queue(topology.heartbeat_queue_spec(queue))
    for key in keys:
        await session.bind(BindingSpec(queue, topology.events_exchange, key))
    return queue


async def test_one_intent_announces_a_whole_batch_before_its_assignments(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    # Given a dispatcher holding 200 requests (no substation heard from yet), and a follower
    # of intents as a standby dispatcher would be
    await declare_substations(session, topology, ["s1"])
    intents = await _follow_events(session, topology, topology.intent_routing_key)
    reqs = [request(i) for i in range(200)]
    async with running_dispatcher(amqp_settings, topology) as dispatcher:
        for r in reqs:
            await session.publish(topology.requests_exchange, "", r.model_dump_json().encode())
        await wait_until(lambda: len(dispatcher.held) == len(reqs), "every request held")
        # When a substation with room for all of them heartbeats
        await heartbeat(session, topology, "s1", 10_000, seq=1)
        got = await collect(session, topology.substation_queue("s1"), len(reqs))
        announced = await collect(session, intents, 2, timeout=2)
    # Then all 200 went out in one pump, announced by one intent listing each of them
    assert {Assignment.model_validate_json(d.body).request.request_id for d in got} == {
        r.request_id for r in reqs
    }
    assert len(announced) == 1
    intent = DispatchIntent.model_validate_json(announced[0].body)
    assert intent.dispatcher == dispatcher.instance == announced[0].properties.app_id
    assert [r.request_id for r in intent.routes] == [r.request_id for r in reqs]
    assert {(r.substation_id, r.kind, r.attempt) for r in intent.routes} == {
        ("s1", "dispatched", 1)
    }


async def test_per_request_dispatched_events_when_asked_for(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    await declare_substations(session, topology, ["s1"])
    events = await _follow_events(session, topology, "event.#")
    reqs = [request(i) for i in range(5)]
    async with running_dispatcher(amqp_settings, topology, dispatch_events=True) as dispatcher:
        await heartbeat(session, topology, "s1", 1000, seq=1)
        await wait_until(lambda: dispatcher.table.get("s1") is not None, "s1 admitted")
        for r in reqs:
            await session.publish(topology.requests_exchange, "", r.model_dump_json().encode())
        await collect(session, topology.substation_queue("s1"), len(reqs))
        seen = [ChargeEvent.model_validate_json(d.body) for d in await collect(session, events, 5)]
    assert {(e.request_id, e.kind, e.substation_id) for e in seen} == {
        (r.request_id, EventKind.DISPATCHED, "s1") for r in reqs
    }


@pytest.mark.parametrize("form", ["DispatchIntent", "ChargeEvent of an older dispatcher"])
async def test_a_request_another_dispatcher_announced_goes_where_it_said(
    amqp_settings: AmqpSettings, topology: Topology, session: Session, form: str
) -> None:
    # Given a standing-by dispatcher, and two substations of which the policy prefers s2
    await declare_substations(session, topology, ["s1", "s2"])
    r = request(1)
    async with running_dispatcher(amqp_settings, topology) as dispatcher:
        await heartbeat(session, topology, "s1", 100, seq=1)
        await heartbeat(session, topology, "s2", 10_000, seq=1)
        await wait_until(lambda: len(dispatcher.table) == 2, "both substations admitted")
        # When another dispatcher (since gone) had announced that r goes to s1
        said: DispatchIntent | ChargeEvent
        if form == "DispatchIntent":
            routes = [Route(request_id=r.request_id, substation_id="s1")]
            said = DispatchIntent(dispatcher="smartgrid-dispatcher-gone", routes=routes)
            key = topology.intent_routing_key
        else:
            said = ChargeEvent(request_id=r.request_id, kind=EventKind.DISPATCHED,
                               substation_id="s1", attempt=1)  # fmt: skip
            key = topology.event_routing_key(EventKind.DISPATCHED)
        await session.publish(topology.events_exchange, key, said.model_dump_json().encode())
        await wait_until(
            lambda: (dispatcher.ledger.route(r.request_id.int) or ())[:2] == ("s1", False),
            "the gone dispatcher's intent for r heard",
        )
        # and r comes to this one (a redelivery after the other's crash looks just like it)
        await session.publish(topology.requests_exchange, "", r.model_dump_json().encode())
        got = await collect(session, topology.substation_queue("s1"), 1)
    # Then it went to s1, where a copy may already be (whose worker drops it), not to s2
    assert [Assignment.model_validate_json(d.body).request.request_id for d in got] == [
        r.request_id
    ]
    assert dispatcher.metrics.resent._value.get() == 1
    assert await session.queue_depth(topology.substation_queue("s2")) == 0


@pytest.mark.timeout(60)
async def test_after_a_reconnect_a_request_goes_back_where_a_copy_may_be(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    # Given a dispatcher that knows r may already wait at s1 (its assignment was published, and
    # the connection dropped before the confirm: here, another dispatcher's intent says so)
    await declare_substations(session, topology, ["s1", "s2"])
    r = request(1)
    async with running_dispatcher(amqp_settings, topology) as dispatcher:
        for sid in ("s1", "s2"):
            await heartbeat(session, topology, sid, 1000, seq=1)
        await wait_until(lambda: len(dispatcher.table) == 2, "both substations admitted")
        intent = DispatchIntent(
            dispatcher="smartgrid-dispatcher-gone",
            routes=[Route(request_id=r.request_id, substation_id="s1")],
        )
        await session.publish(
            topology.events_exchange, topology.intent_routing_key, intent.model_dump_json().encode()
        )
        await wait_until(
            lambda: (dispatcher.ledger.route(r.request_id.int) or ())[:2] == ("s1", False),
            "the gone dispatcher's intent for r heard",
        )
        # When its connection is gone for longer than a substation's stale window (3 intervals)
        await wait_until(
            lambda: (
                not any(dispatcher.table.is_fresh(s, dispatcher.clock()) for s in dispatcher.table)
            ),
            "s1 and s2 stale for the dispatcher (silent for 3 intervals)",
        )
        assert dispatcher.link.session is not None
        connects = dispatcher.link.connects
        await dispatcher.link.session.close()
        await wait_until(lambda: dispatcher.link.connects > connects, "the dispatcher reconnected")
        # and, once back, it hears s2 first, and r is redelivered to it
        s2 = dispatcher.table.get("s2")
        await heartbeat(session, topology, "s2", 1000, seq=2)
        await wait_until(
            lambda: s2 is not dispatcher.table.get("s2"), "s2 heard after the reconnect"
        )
        await session.publish(topology.requests_exchange, "", r.model_dump_json().encode())
        got = await collect(session, topology.substation_queue("s1"), 1, timeout=5)
    # Then r went to s1 again, where the copy may be (s1's worker drops one), not to s2
    assert [Assignment.model_validate_json(d.body).request.request_id for d in got] == [
        r.request_id
    ]
    assert await session.queue_depth(topology.substation_queue("s2")) == 0
