"""The substation worker against the real RabbitMQ: sessions complete, heartbeats flow,
duplicates are harmless, poison goes to the dead queue, a lost connection loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import pytest
from prometheus_client import CollectorRegistry

from contracts import Assignment, ChargeEvent, ChargeRequest, EventKind, Heartbeat, LoadSnapshot
from contracts.topology import BindingSpec, QueueSpec, Topology
from messaging import AmqpSettings, Delivery, Session
from messaging.publishing import REASON_HEADER
from substation_worker.service import WorkerService
from substation_worker.settings import WorkerSettings
from tests.helpers import register_substations, wait_until

SID = "s1"
CAPACITY_KW = 100.0
BAYS = 2


class Inbox:
    """A test queue bound to an exchange, collecting what arrives."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    def on_message(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)

    def events(self, kind: EventKind, request_id: UUID | None = None) -> list[ChargeEvent]:
        parsed = [ChargeEvent.model_validate_json(d.body) for d in self.deliveries]
        return [
            e
            for e in parsed
            if e.kind == kind and (request_id is None or e.request_id == request_id)
        ]

    def heartbeats(self) -> list[Heartbeat]:
        return [Heartbeat.model_validate_json(d.body) for d in self.deliveries]


async def listen(session: Session, queue: str, exchange: str, routing_key: str = "") -> Inbox:
    inbox = Inbox()
    await session.declare_queue(QueueSpec(queue, durable=False, exclusive=True, auto_delete=True))
    await session.bind(BindingSpec(queue, exchange, routing_key))
    await session.consume(queue, inbox.on_message, auto_ack=True)
    return inbox


async def listen_to_events(session: Session, topology: Topology) -> Inbox:
    """Every charge event of the namespace, from the moment this returns."""
    return await listen(
        session, f"{topology.namespace}.t-events", topology.events_exchange, "event.#"
    )


async def listen_to_heartbeats(session: Session, topology: Topology) -> Inbox:
    """Every heartbeat of the namespace, from the moment this returns."""
    return await listen(session, f"{topology.namespace}.t-hb", topology.heartbeats_exchange)


def make_assignment(energy_kwh: float = 100.0, max_power_kw: float = 150.0) -> Assignment:
    return Assignment(
        request=ChargeRequest(
            vehicle_id="EV-0042", energy_kwh=energy_kwh, max_power_kw=max_power_kw
        ),
        substation_id=SID,
        snapshot=LoadSnapshot(
            load_kw=0,
            capacity_kw=CAPACITY_KW,
            committed_kw=0,
            pending_kw=0,
            heartbeat_seq=0,
            heartbeat_age_s=0,
        ),
        policy="test",
    )


async def publish(session: Session, topology: Topology, *bodies: bytes) -> None:
    await asyncio.gather(
        *(
            session.publish(topology.substations_exchange, SID, b, message_id=uuid.uuid4().hex)
            for b in bodies
        )
    )


@asynccontextmanager
async def running_worker(
    amqp_settings: AmqpSettings, topology: Topology, **overrides: Any
) -> AsyncIterator[tuple[WorkerService, CollectorRegistry]]:
    register_substations(topology, [SID])
    fields: dict[str, Any] = {
        "amqp_url": amqp_settings.amqp_url,
        "namespace": topology.namespace,
        "substation_id": SID,
        "capacity_kw": CAPACITY_KW,
        "bays": BAYS,
        "time_scale": 36_000,
        "heartbeat_interval_s": 0.1,
        "metrics_port": 0,
    }
    settings = WorkerSettings(**(fields | overrides))
    registry = CollectorRegistry()
    service = WorkerService(settings, registry)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(service.link.ready.wait(), 15)
        yield service, registry
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def metric(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name, {"substation": SID}) or 0.0


async def test_assignments_complete_within_capacity(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    async with running_worker(amqp_settings, topology) as (_service, registry):
        # Given a worker of 100 kW / 2 bays, and listeners on events and heartbeats
        events = await listen_to_events(session, topology)
        beats = await listen_to_heartbeats(session, topology)
        # When six 100 kWh sessions arrive (three rounds of two bays, 0.2 s wall each)
        sent = [make_assignment(energy_kwh=100, max_power_kw=150) for _ in range(6)]
        await publish(session, topology, *(a.model_dump_json().encode() for a in sent))

        # Then each starts and completes once, with the energy it asked for
        await wait_until(lambda: len(events.events(EventKind.COMPLETED)) == 6, "6 completed")
        for a in sent:
            rid = a.request.request_id
            (done,) = events.events(EventKind.COMPLETED, rid)
            assert done.energy_kwh == pytest.approx(100)
            assert done.substation_id == SID
            assert len(events.events(EventKind.STARTED, rid)) == 1
        # ... the heartbeats showed load, never above capacity nor more sessions than bays
        await wait_until(lambda: len(beats.deliveries) >= 3, "heartbeats")
        hbs = beats.heartbeats()
        assert all(h.substation_id == SID and h.capacity_kw == CAPACITY_KW for h in hbs)
        assert all(h.load_kw <= h.capacity_kw for h in hbs)
        assert all(h.active_sessions <= BAYS for h in hbs)
        assert any(h.load_kw > 0 for h in hbs), "no heartbeat caught the sessions charging"
        # ... told when their sessions would end (within two intervals), and how to read that
        assert all(h.time_scale == 36_000 and h.charger_max_kw == 350 for h in hbs)
        assert any(h.releases for h in hbs), "no heartbeat predicted a session's end"
        assert all(0 <= r.in_s <= 2 * 0.1 + 1e-3 for h in hbs for r in h.releases)
        assert all(sum(r.sessions for r in h.releases) <= h.active_sessions + h.queued
                   for h in hbs)  # fmt: skip
        assert [h.seq for h in hbs] == sorted({h.seq for h in hbs})
        assert hbs[-1].assignments_received == 6
        assert beats.deliveries[0].properties.expiration is not None
        # ... and the metrics agree
        assert metric(registry, "smartgrid_substation_sessions_completed_total") == 6
        assert metric(
            registry, "smartgrid_substation_energy_delivered_joules_total"
        ) == pytest.approx(600 * 3.6e6)
        assert metric(registry, "smartgrid_substation_broker_connected") == 1
        assert metric(registry, "smartgrid_substation_load_watts") <= CAPACITY_KW * 1000


async def test_duplicate_assignment_completes_once(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    async with running_worker(amqp_settings, topology) as (_service, registry):
        events = await listen_to_events(session, topology)
        # Given an assignment delivered twice while held, plus another one
        twice = make_assignment().model_dump_json().encode()
        other = make_assignment()
        await publish(session, topology, twice, twice, other.model_dump_json().encode())
        rid = Assignment.model_validate_json(twice).request.request_id

        def completions(request_id: uuid.UUID | None = None) -> int:
            return len({e.event_id for e in events.events(EventKind.COMPLETED, request_id)})

        # Then the copy is acked as a duplicate and the request charges once
        await wait_until(
            lambda: metric(registry, "smartgrid_substation_duplicates_total") == 1, "a duplicate"
        )
        # (A copy that arrives after the first completed gets the same completed event again,
        # same event_id, for a follower that missed it: followers count distinct event ids.)
        await wait_until(lambda: completions() == 2, "2 completed")
        assert completions(rid) == 1
        assert len(events.events(EventKind.STARTED, rid)) == 1

        # When it is delivered once more after completing
        await publish(session, topology, twice)

        # Then it is remembered as completed and acked without a second session
        await wait_until(
            lambda: metric(registry, "smartgrid_substation_duplicates_total") == 2, "2 duplicates"
        )
        assert len(events.events(EventKind.STARTED, rid)) == 1
        assert completions(rid) == 1
        assert metric(registry, "smartgrid_substation_sessions_completed_total") == 2
        assert metric(registry, "smartgrid_substation_assignments_received_total") == 4


async def test_invalid_assignment_is_dead_lettered_and_work_goes_on(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    async with running_worker(amqp_settings, topology) as (_service, registry):
        events = await listen_to_events(session, topology)
        dead = Inbox()
        await session.consume(topology.dead_queue, dead.on_message, auto_ack=True)
        # Given a body that is not JSON, and one with a readable request id but no energy bound
        bad_rid = uuid.uuid4()
        doc = make_assignment().model_dump(mode="json")
        doc["request"] |= {"request_id": str(bad_rid), "energy_kwh": -5}
        valid = make_assignment()
        await publish(
            session,
            topology,
            b"not json at all",
            json.dumps(doc).encode(),
            valid.model_dump_json().encode(),
        )

        # Then both land in the dead queue with the reason
        await wait_until(lambda: len(dead.deliveries) == 2, "2 dead-lettered messages")
        reasons = {d.body: str(d.headers[REASON_HEADER]) for d in dead.deliveries}
        assert "json" in reasons[b"not json at all"].lower()
        assert "energy_kwh" in reasons[json.dumps(doc).encode()]
        # ... the readable one is reported as a dead_lettered event
        await wait_until(
            lambda: len(events.events(EventKind.DEAD_LETTERED, bad_rid)) == 1, "dead_lettered"
        )
        # ... and the worker keeps serving
        await wait_until(
            lambda: len(events.events(EventKind.COMPLETED, valid.request.request_id)) == 1,
            "the valid assignment completed",
        )
        assert metric(registry, "smartgrid_substation_dead_lettered_total") == 2


async def test_an_assignment_for_another_substation_is_handed_back_not_served(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    """Finding 10: an assignment addressed to s1 but put in s2's queue was served by s2
    ("serving it here"). It is not s2's to charge: its request goes back to <ns>.requests,
    where the dispatcher sends it where it belongs (or drops it as a duplicate)."""
    async with running_worker(amqp_settings, topology) as (_service, registry):
        events = await listen_to_events(session, topology)
        # Given an assignment for "elsewhere" in this worker's queue, and one for it
        stray = make_assignment().model_copy(update={"substation_id": "elsewhere"})
        own = make_assignment()
        await publish(session, topology, stray.model_dump_json().encode(),
                      own.model_dump_json().encode())  # fmt: skip
        # Then its own completes, and the stray's request waits in <ns>.requests, unserved
        await wait_until(
            lambda: len(events.events(EventKind.COMPLETED, own.request.request_id)) == 1,
            "its own assignment completed",
        )
        await wait_until(
            lambda: metric(registry, "smartgrid_substation_misaddressed_total") == 1,
            "the stray handed back",
        )
        assert events.events(EventKind.STARTED, stray.request.request_id) == []
        handed_back = await _collect_one(session, topology.requests_queue)
        assert ChargeRequest.model_validate_json(handed_back) == stray.request
        assert metric(registry, "smartgrid_substation_assignments_received_total") == 1


async def _collect_one(session: Session, queue: str) -> bytes:
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on(d: Delivery) -> None:
        d.ack()
        if not got.done():
            got.set_result(d.body)

    tag = await session.consume(queue, on)
    try:
        return await asyncio.wait_for(got, 10)
    finally:
        await session.cancel(tag)


async def test_connection_loss_redelivers_and_completes_each_once(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    # Sessions of 1 s wall (10 kWh at 50 kW = 720 s simulated, time x720)
    async with running_worker(amqp_settings, topology, time_scale=720) as (service, registry):
        events = await listen_to_events(session, topology)
        sent = [make_assignment(energy_kwh=10, max_power_kw=50) for _ in range(BAYS)]
        await publish(session, topology, *(a.model_dump_json().encode() for a in sent))
        await wait_until(lambda: len(events.events(EventKind.STARTED)) == BAYS, "both started")

        # When the worker's connection drops mid-session
        assert service.link.session is not None
        await service.link.session.close()

        # Then it reconnects, the broker redelivers, and each request completes exactly once
        await wait_until(lambda: service.link.connects == 2, "a reconnect")
        await wait_until(lambda: len(events.events(EventKind.COMPLETED)) == BAYS, "completed")
        for a in sent:
            rid = a.request.request_id
            assert len(events.events(EventKind.STARTED, rid)) == 2
            assert len(events.events(EventKind.COMPLETED, rid)) == 1
        assert metric(registry, "smartgrid_substation_sessions_completed_total") == BAYS
        assert metric(registry, "smartgrid_substation_duplicates_total") == 0


async def test_cli_process_heartbeats_and_exits_0_on_sigterm(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    register_substations(topology, ["cli-1"])
    env = os.environ | {
        "SMARTGRID_NAMESPACE": topology.namespace,
        "SMARTGRID_AMQP_URL": amqp_settings.amqp_url.get_secret_value(),
    }
    # Given a heartbeat listener (the exchange must exist before the worker publishes to it)
    for ex in topology.exchanges():
        await session.declare_exchange(ex)
    beats = await listen_to_heartbeats(session, topology)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "substation_worker",
        "--substation-id=cli-1",
        "--capacity-kw=300",
        "--bays=4",
        "--heartbeat-interval-s=0.2",
        "--metrics-port=0",
        env=env,
    )
    try:
        # When it runs, it heartbeats
        await wait_until(lambda: len(beats.deliveries) > 0, "a heartbeat from the CLI worker")
        (hb, *_) = beats.heartbeats()
        assert (hb.substation_id, hb.capacity_kw, hb.bays, hb.status) == ("cli-1", 300, 4, "up")
        # Then SIGTERM stops it cleanly
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
