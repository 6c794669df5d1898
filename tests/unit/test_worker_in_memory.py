"""The substation worker's delivery rules, on the in-memory broker (tests/fakes.py): the
service runs unchanged, only the broker is a fake. tests/integration/test_worker.py proves
the same wiring against RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from contracts import Assignment, ChargeEvent, ChargeRequest, Heartbeat, SessionOutcome, Topology
from substation_worker.service import WorkerService
from substation_worker.settings import WorkerSettings
from tests.fakes import FakeBroker, FakeSession
from tests.helpers import assignment_of, events_of, leaving_request, wait_until

NS = "mem"
TOPO = Topology(NS)


@dataclass
class Worker:
    broker: FakeBroker
    service: WorkerService
    registry: CollectorRegistry

    @property
    def session(self) -> FakeSession:
        session = self.service.link.session
        assert isinstance(session, FakeSession)
        return session

    def assign(self, request: ChargeRequest, substation_id: str = "s1") -> bytes:
        body = assignment(request, substation_id).model_dump_json().encode()
        self.broker.put(TOPO.substations_exchange, "s1", body)
        return body

    def events(self, kind: str) -> list[ChargeEvent]:
        return events_of(self.broker, TOPO, kind)

    def metric(self, name: str) -> float:
        value = self.registry.get_sample_value(name, {"substation": "s1"})
        return 0.0 if value is None else value

    def demands(self, outcome: str) -> float:
        labels = {"substation": "s1", "outcome": outcome}
        value = self.registry.get_sample_value("smartgrid_substation_demands_total", labels)
        return 0.0 if value is None else value


def assignment(request: ChargeRequest, substation_id: str = "s1") -> Assignment:
    return assignment_of(request, substation_id)


def charge_request(energy_kwh: float = 10.0) -> ChargeRequest:
    return ChargeRequest(vehicle_id="ev-1", energy_kwh=energy_kwh, max_power_kw=11.0)


@pytest.fixture
async def worker(request: pytest.FixtureRequest) -> AsyncIterator[Worker]:
    # time x3600: a 10 kWh session at 11 kW lasts ~0.9 s of wall time; x36000 for quick ones.
    scale = getattr(request, "param", 3600.0)
    broker = FakeBroker()
    registry = CollectorRegistry()
    settings = WorkerSettings(
        namespace=NS,
        substation_id="s1",
        capacity_kw=100,
        bays=4,
        time_scale=scale,
        heartbeat_interval_s=0.2,
        metrics_port=0,
    )
    service = WorkerService(settings, registry, connect=broker.connect)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await wait_until(lambda: service.link.session is not None, timeout=2)
    yield Worker(broker, service, registry)
    stop.set()
    service.settings.drain_timeout_s = 0.1
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)


async def test_a_copy_of_a_session_it_holds_is_acked_without_a_second_session(
    worker: Worker,
) -> None:
    """Rule: an assignment for a request already charging here (the dispatcher sent a copy
    after a crash) is acked at once; one session, one completion."""
    r = charge_request()
    worker.assign(r)
    await wait_until(lambda: worker.service.sim.active_count == 1, timeout=2)
    copy = worker.assign(r)
    await wait_until(lambda: copy in worker.session.acked, timeout=2)
    assert worker.service.sim.active_count == 1
    assert worker.metric("smartgrid_substation_duplicates_total") == 1
    await wait_until(lambda: len(worker.events("completed")) == 1, timeout=5)
    assert len(worker.events("started")) == 1
    assert len(worker.session.acked) == 2


@pytest.mark.parametrize("worker", [36_000.0], indirect=True)
async def test_a_copy_of_a_completed_session_says_its_completion_again(worker: Worker) -> None:
    """Rule: a redelivered assignment of a request completed here is acked and its completion
    published again with the same event_id (its first ack or event may have been lost), so
    that followers count one completion, and nothing is charged twice."""
    r = charge_request(10.0)
    worker.assign(r)
    await wait_until(lambda: len(worker.events("completed")) == 1, timeout=5)
    copy = worker.assign(r)
    await wait_until(lambda: copy in worker.session.acked, timeout=2)
    again = worker.events("completed")
    assert len(again) == 2
    assert again[0].event_id == again[1].event_id
    assert len(worker.events("started")) == 1


async def test_an_assignment_for_another_substation_is_handed_back(worker: Worker) -> None:
    """Rule: an assignment addressed to s2 found in s1's queue is not s1's to charge: its
    request goes back to <ns>.requests (confirmed), then the assignment is acked."""
    r = charge_request()
    body = worker.assign(r, substation_id="s2")
    await wait_until(lambda: body in worker.session.acked, timeout=2)
    back = worker.broker.published_to(TOPO.requests_exchange)
    assert [ChargeRequest.model_validate_json(p.body).request_id for p in back] == [r.request_id]
    assert worker.service.sim.active_count == 0
    assert worker.events("started") == []


async def test_an_unreadable_assignment_is_dead_lettered_once(worker: Worker) -> None:
    """Rule: a message that cannot be read, whatever the reason, is dead-lettered once with
    the reason (never requeued to fail again)."""
    body = b"[" * 100_000
    worker.broker.put(TOPO.substations_exchange, "s1", body)
    # Acked once its dead letter is confirmed: nothing can dead-letter it again after that.
    await wait_until(lambda: body in worker.session.acked, "the unreadable message acked")
    assert len(worker.broker.published_to(TOPO.dead_exchange)) == 1
    assert worker.session.nacked == []
    assert not worker.broker.queue(TOPO.substation_queue("s1")).ready


async def test_sessions_held_when_the_connection_drops_are_served_once_redelivered(
    worker: Worker,
) -> None:
    """Rule: on a lost connection every session held is dropped (the broker requeues its
    delivery; its old tag must never be acked on the new channel); the redelivered
    assignment is served once, on the new connection."""
    r = charge_request()
    worker.assign(r)
    await wait_until(lambda: worker.service.sim.active_count == 1, timeout=2)
    old = worker.session
    worker.broker.drop(old)
    await wait_until(lambda: worker.service.link.session not in (None, old), timeout=5)
    await wait_until(lambda: len(worker.events("completed")) == 1, timeout=5)
    assert old.acked == []
    assert len(worker.session.acked) == 1
    assert worker.events("completed")[0].request_id == r.request_id


async def test_a_car_leaves_at_its_departure_with_what_it_got(worker: Worker) -> None:
    """Rule: a session ends at the request's departure if it is not full by then; the
    completed event and the metrics say what was requested, delivered and that the demand was
    not met, and the assignment is acked then."""
    # Given a car needing 50 kWh at 11 kW (4.5 h) that leaves in 1.5 wall s (1.5 h at x3600)
    body = worker.assign(leaving_request(1.5, energy_kwh=50.0))
    # When its departure comes
    await wait_until(lambda: len(worker.events("completed")) == 1, timeout=5)
    # Then it left with about 1.5 h at 11 kW, short of its demand
    (done,) = worker.events("completed")
    assert done.outcome is SessionOutcome.DEPARTED
    assert done.demand_met is False
    assert done.energy_requested_kwh == 50.0
    assert done.energy_kwh is not None
    assert 11.0 * 1.2 < done.energy_kwh < 11.0 * 1.8
    assert body in worker.session.acked
    assert len(worker.events("started")) == 1
    assert worker.demands("departed") == 1
    assert worker.demands("full") == 0
    requested_j = worker.metric("smartgrid_substation_energy_requested_joules_total")
    delivered_j = worker.metric("smartgrid_substation_energy_delivered_joules_total")
    assert requested_j == pytest.approx(50.0 * 3.6e6)
    assert delivered_j == pytest.approx(done.energy_kwh * 3.6e6)


async def test_a_car_whose_departure_passed_upstream_leaves_unserved(worker: Worker) -> None:
    """Rule: an assignment whose departure has passed (it waited in the dispatcher) ends at
    once, unserved: acked, a completed event with nothing delivered, never started."""
    body = worker.assign(leaving_request(-1.0, energy_kwh=10.0, requested_ago_s=2.0))
    await wait_until(lambda: len(worker.events("completed")) == 1, timeout=5)
    (done,) = worker.events("completed")
    assert (done.outcome, done.energy_kwh, done.demand_met) == (SessionOutcome.UNSERVED, 0, False)
    assert body in worker.session.acked
    assert worker.events("started") == []
    assert worker.demands("unserved") == 1


async def test_a_car_full_before_its_departure_meets_its_demand(worker: Worker) -> None:
    worker.assign(leaving_request(3600.0, energy_kwh=5.0))
    await wait_until(lambda: len(worker.events("completed")) == 1, timeout=5)
    (done,) = worker.events("completed")
    assert (done.outcome, done.demand_met) == (SessionOutcome.FULL, True)
    assert done.energy_kwh == pytest.approx(5.0)
    assert worker.demands("full") == 1


async def test_heartbeats_state_what_the_plan_leaves_spare(worker: Worker) -> None:
    """Rule: under the smartgrid sharing (the default) a heartbeat states the plan's spare power
    (Heartbeat.spare): all of the capacity with nothing held; less while a car with a
    departure draws; in wall seconds after it was sent, the last piece lasting."""

    def beats() -> list[Heartbeat]:
        return [
            Heartbeat.model_validate_json(p.body)
            for p in worker.broker.published_to(TOPO.heartbeats_exchange)
        ]

    await wait_until(lambda: len(beats()) >= 1, timeout=2)
    first = beats()[-1].spare
    assert first is not None
    assert [p.kw for p in first] == [100.0]
    # A car of 11 kW needing 50 kWh, leaving in 10 wall s (10 h at x3600): the plan gives it
    # its 11 kW first (energy early), so 89 kW are spare then
    worker.assign(leaving_request(10.0, energy_kwh=50.0))
    await wait_until(lambda: worker.service.sim.active_count == 1, timeout=2)
    seen = len(beats())
    await wait_until(lambda: len(beats()) > seen, timeout=2)
    spare = beats()[-1].spare
    assert spare is not None
    assert spare[0].kw == pytest.approx(89.0)
    assert spare[-1].kw == pytest.approx(100.0)
    assert all(p.until_s > 0 for p in spare)
    assert [p.until_s for p in spare] == sorted(p.until_s for p in spare)
