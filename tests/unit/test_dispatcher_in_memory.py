"""The dispatcher's delivery rules, on the in-memory broker (tests/fakes.py): the service runs
unchanged (its link, setup, consumers, confirms), only the broker is a fake. The real-broker
tests in tests/integration prove the same wiring against RabbitMQ."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import pytest
from prometheus_client import CollectorRegistry

from contracts import Assignment, ChargeRequest, Heartbeat, Topology
from dispatcher.metrics import DispatcherMetrics
from dispatcher.policies import make_policy
from dispatcher.service import Dispatcher
from dispatcher.settings import DispatcherSettings
from tests.fakes import FakeBroker, FakeSession
from tests.helpers import assignment_of, leaving_request, wait_until

NS = "mem"
TOPO = Topology(NS)
REGISTRIES: dict[int, CollectorRegistry] = {}  # each dispatcher's metrics


@dataclass
class Clock:
    """The dispatcher's monotonic clock, moved by the test."""

    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Grid:
    broker: FakeBroker
    clock: Clock
    seqs: dict[str, int] = field(default_factory=dict)
    running: list[tuple[Dispatcher, asyncio.Event, asyncio.Task[None]]] = field(
        default_factory=list
    )

    def substation(self, sid: str) -> None:
        """What a worker declares: its queue, bound to the substations exchange."""
        for exchange in TOPO.exchanges():
            self.broker.declare_exchange(exchange)
        self.broker.declare(TOPO.substation_queue_spec(sid))
        self.broker.bind(TOPO.substation_binding(sid))

    def heartbeat(
        self,
        sid: str,
        capacity_kw: float,
        committed_kw: float = 0.0,
        *,
        keeps_sessions: bool = False,
        status: Literal["up", "draining"] = "up",
        spare: list[dict[str, float]] | None = None,
    ) -> None:
        self.seqs[sid] = self.seqs.get(sid, 0) + 1
        hb = Heartbeat(
            substation_id=sid,
            capacity_kw=capacity_kw,
            bays=100,
            load_kw=committed_kw,
            committed_kw=committed_kw,
            active_sessions=0,
            queued=0,
            seq=self.seqs[sid],
            assignments_received=0,
            keeps_sessions=keeps_sessions,
            status=status,
            spare=spare,  # type: ignore[arg-type]
        )
        self.broker.put(TOPO.heartbeats_exchange, "", hb.model_dump_json().encode())

    def request(self, request: ChargeRequest | None = None, **fields: object) -> ChargeRequest:
        request = request or ChargeRequest.model_validate(
            {"vehicle_id": "ev-1", "energy_kwh": 20.0, "max_power_kw": 11.0, **fields}
        )
        body = request.model_dump_json().encode()
        self.broker.put(TOPO.requests_exchange, "", body, message_id=str(request.request_id))
        return request

    async def dispatcher(self) -> Dispatcher:
        settings = DispatcherSettings(namespace=NS, backlog_poll_s=0.02, seed=1)
        registry = CollectorRegistry()
        d = Dispatcher(
            settings,
            make_policy("headroom", random.Random(1)),
            DispatcherMetrics(registry),
            clock=self.clock,
            connect=self.broker.connect,
        )
        REGISTRIES[id(d)] = registry
        stop = asyncio.Event()
        self.running.append((d, stop, asyncio.create_task(d.run(stop))))
        await wait_until(lambda: d.link.session is not None, timeout=2)
        return d

    def assignments(self, sid: str) -> list[Assignment]:
        q = self.broker.queue(TOPO.substation_queue(sid))
        return [Assignment.model_validate_json(b) for b in q.bodies()]


@pytest.fixture
async def grid() -> AsyncIterator[Grid]:
    g = Grid(FakeBroker(), Clock())
    yield g
    for _, stop, _task in g.running:
        stop.set()
    for _, _, task in g.running:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def session_of(d: Dispatcher) -> FakeSession:
    session = d.link.session
    assert isinstance(session, FakeSession)
    return session


def counter(d: Dispatcher, name: str, **labels: str) -> float:
    value = REGISTRIES[id(d)].get_sample_value(name, labels)
    return 0.0 if value is None else value


async def admitted(d: Dispatcher, *sids: str) -> None:
    await wait_until(lambda: all(d.table.get(s) is not None for s in sids), timeout=2)


async def serving(g: Grid, capacity_kw: dict[str, float], *dispatchers: Dispatcher) -> None:
    """Substations with their queues and one heartbeat each (in that order), admitted by every
    one of ``dispatchers``."""
    for sid in capacity_kw:
        g.substation(sid)
    for sid, kw in capacity_kw.items():
        g.heartbeat(sid, kw)
    for d in dispatchers:
        await admitted(d, *capacity_kw)


def requests_left(g: Grid) -> int:
    return len(g.broker.queue(TOPO.requests_queue).ready)


async def test_a_duplicate_request_is_acked_without_a_second_assignment(grid: Grid) -> None:
    """Rule: a request id held, in flight or confirmed here is acked, not dispatched again."""
    d = await grid.dispatcher()
    await serving(grid, {"s1": 300}, d)
    first = grid.request()
    await wait_until(lambda: len(grid.assignments("s1")) == 1, timeout=2)
    grid.request(first)  # a client's retry, same body
    await wait_until(lambda: counter(d, "smartgrid_dispatcher_duplicates_total") == 1, timeout=2)
    await wait_until(lambda: requests_left(grid) == 0 and not d.inflight, timeout=2)
    assert [a.request.request_id for a in grid.assignments("s1")] == [first.request_id]
    assert len(session_of(d).acked) == 2  # both copies acked, one dispatched


async def test_a_conflicting_copy_is_rejected_not_dispatched(grid: Grid) -> None:
    """Rule: the same request id with another body is a conflict: dead-lettered, with a
    rejected event, and never dispatched."""
    d = await grid.dispatcher()
    await serving(grid, {"s1": 300}, d)
    first = grid.request()
    await wait_until(lambda: len(grid.assignments("s1")) == 1, timeout=2)
    grid.request(first.model_copy(update={"energy_kwh": 250.0}))
    await wait_until(lambda: counter(d, "smartgrid_dispatcher_conflicts_total") == 1, timeout=2)
    assert len(grid.assignments("s1")) == 1
    dead = grid.broker.published_to(TOPO.dead_exchange)
    assert len(dead) == 1
    assert b"250" in dead[0].body
    rejected = [p for p in grid.broker.published_to(TOPO.events_exchange)
                if p.routing_key == "event.rejected"]  # fmt: skip
    assert len(rejected) == 1


async def test_a_standby_follows_the_active_dispatchers_intents(grid: Grid) -> None:
    """Rule: a standby remembers where the active one's intents say each request goes, as an
    unconfirmed route (a copy may wait there), and never counts it as dispatched by itself."""
    active = await grid.dispatcher()
    standby = await grid.dispatcher()
    await serving(grid, {"s1": 300}, active, standby)
    r = grid.request()
    await wait_until(lambda: len(grid.assignments("s1")) == 1, timeout=2)
    key = r.request_id.int
    await wait_until(lambda: standby.ledger.route(key) is not None, timeout=2)
    assert standby.ledger.route(key) == ("s1", False, None)
    assert active.ledger.route(key) == ("s1", True, r.fingerprint())
    # Not held or in flight at the standby: a copy of it would be new there (and then sticky).
    assert standby.ledger.seen(key, r.fingerprint()) == "new"


async def test_redelivery_after_a_crash_between_confirm_and_ack_goes_to_the_same_substation(
    grid: Grid,
) -> None:
    """Rule: a request redelivered after its dispatcher died between the assignment's confirm
    and the request's ack is sent again to the substation its intent named (whose worker
    drops the copy), not wherever the policy would send it now: no second charging session."""
    active = await grid.dispatcher()
    standby = await grid.dispatcher()
    await serving(grid, {"s1": 150, "s2": 600}, active, standby)  # s2 least promised: first
    session_of(active).lose_acks()  # it dies before its acks reach the broker
    r = grid.request()
    await wait_until(lambda: len(grid.assignments("s2")) == 1, timeout=2)
    await wait_until(lambda: standby.ledger.route(r.request_id.int) is not None, timeout=2)
    # s2 is full now: left to the policy, the redelivered copy would go to s1.
    grid.heartbeat("s2", 600, committed_kw=600)
    grid.heartbeat("s1", 150)
    await wait_until(lambda: standby.table.get("s2").committed_kw == 600, timeout=2)  # type: ignore[union-attr]
    crashed = grid.running.pop(0)
    crashed[2].cancel()
    grid.broker.drop(session_of(active))
    await wait_until(lambda: counter(standby, "smartgrid_dispatcher_resent_total") == 1, timeout=2)
    await wait_until(lambda: len(grid.assignments("s2")) == 2, timeout=2)
    assert [a.request.request_id for a in grid.assignments("s2")] == [r.request_id] * 2
    assert grid.assignments("s1") == []
    await asyncio.gather(crashed[2], return_exceptions=True)


def _reclaimable(g: Grid, request: ChargeRequest) -> None:
    """An assignment waiting in s1's queue, as a dispatcher left it there."""
    body = assignment_of(request, "s1", capacity_kw=150).model_dump_json().encode()
    g.broker.put(TOPO.substations_exchange, "s1", body)


async def _silent_s1(g: Grid, d: Dispatcher, advance_s: float) -> None:
    """s1 says nothing for ``advance_s`` while s2 keeps heartbeating."""
    g.clock.t += advance_s
    g.heartbeat("s2", 600)
    await wait_until(lambda: d.table.get("s2").last_seen == g.clock.t, timeout=2)  # type: ignore[union-attr]


async def test_a_silent_substations_queue_is_taken_back_and_redispatched(grid: Grid) -> None:
    """Rule: the queue of a substation silent for its stale window (3 intervals) is consumed
    by the dispatcher; each assignment there goes elsewhere (attempt 2), acked once the new
    one is confirmed."""
    d = await grid.dispatcher()
    await serving(grid, {"s1": 150, "s2": 600}, d)
    request = ChargeRequest(vehicle_id="ev-9", energy_kwh=10, max_power_kw=7)
    _reclaimable(grid, request)
    await _silent_s1(grid, d, 2.5)  # within the window: nothing moves
    await asyncio.sleep(0.1)  # a few of the dispatcher's polls (every 0.02 s)
    assert len(grid.assignments("s1")) == 1
    assert grid.assignments("s2") == []
    await _silent_s1(grid, d, 1.0)  # 3.5 s > 3 intervals of 1 s
    await wait_until(lambda: len(grid.assignments("s2")) == 1, timeout=2)
    moved = grid.assignments("s2")[0]
    assert (moved.request.request_id, moved.attempt) == (request.request_id, 2)
    await wait_until(lambda: grid.assignments("s1") == [], timeout=2)
    assert counter(d, "smartgrid_dispatcher_reclaimed_total", substation="s1") == 1


@pytest.mark.parametrize("status", ["up", "draining"])
async def test_a_substation_whose_sessions_outlive_its_worker_keeps_its_queue(
    grid: Grid, status: Literal["up", "draining"]
) -> None:
    """Rule: a substation whose heartbeat says its sessions outlive the worker (cars on OCPP
    stations) gets nothing new while silent or draining, but its queue is not taken back:
    an assignment there may be a car charging, which its next worker takes up again."""
    d = await grid.dispatcher()
    await serving(grid, {"s1": 150, "s2": 600}, d)
    grid.heartbeat("s1", 150, keeps_sessions=True, status=status)
    await wait_until(lambda: d.table.get("s1").keeps_sessions, timeout=2)  # type: ignore[union-attr]
    _reclaimable(grid, ChargeRequest(vehicle_id="ev-9", energy_kwh=10, max_power_kw=7))
    await _silent_s1(grid, d, 10.0)  # far beyond its window
    await asyncio.sleep(0.1)  # a few of the dispatcher's polls (every 0.02 s)
    assert len(grid.assignments("s1")) == 1
    assert grid.assignments("s2") == []
    assert counter(d, "smartgrid_dispatcher_reclaimed_total", substation="s1") == 0
    # New requests go elsewhere.
    grid.request()
    await wait_until(lambda: len(grid.assignments("s2")) == 1, timeout=2)


async def test_each_connection_gets_private_queues_of_its_own(grid: Grid) -> None:
    """Rule: the dispatcher's exclusive queues (heartbeats, intents) are named anew at every
    reconnect: after a cluster node is lost, the dead queue of the same name may still be on
    record, and using it would fail the setup (404), so the new connection never meets it.
    The names stay within what the broker users' permissions allow."""
    d = await grid.dispatcher()
    await serving(grid, {"s1": 150}, d)
    first = (d.heartbeat_queue, d.events_queue)
    old = session_of(d)
    grid.broker.drop(old)
    await wait_until(lambda: d.link.session not in (None, old), timeout=5)
    second = (d.heartbeat_queue, d.events_queue)
    assert set(first).isdisjoint(second)
    for name in (*first, *second):
        assert re.fullmatch(rf"{NS}\.(heartbeats|events)\.dispatcher-[0-9a-f]+", name), name
    # Heartbeats reach it on the new connection's queue
    grid.heartbeat("s1", 150, committed_kw=42)
    await wait_until(lambda: d.table.get("s1").committed_kw == 42, timeout=2)  # type: ignore[union-attr]


async def test_silence_counts_only_once_the_workers_could_reconnect_too(grid: Grid) -> None:
    """Rule: after the dispatcher reconnects, every heartbeat looks old, and the workers are
    reconnecting too, each after its own backoff (up to the reconnect cap, 15 s by default); a
    substation is silent only once it said nothing for its window after that, so a healthy
    one's queue is not taken back (which would only churn, and duplicate, work)."""
    d = await grid.dispatcher()
    await serving(grid, {"s1": 150, "s2": 600}, d)
    _reclaimable(grid, ChargeRequest(vehicle_id="ev-9", energy_kwh=10, max_power_kw=7))
    old = session_of(d)
    grid.clock.t += 10.0  # s1's last heartbeat is long past ...
    grid.broker.drop(old)  # ... when the dispatcher reconnects
    await wait_until(lambda: d.link.session not in (None, old), timeout=5)
    cap = d.settings.reconnect_max_s
    await _silent_s1(grid, d, cap + 2.5)  # within the cap and then the window of 3 intervals
    await asyncio.sleep(0.1)  # a few of the dispatcher's polls (every 0.02 s), for it to act
    assert len(grid.assignments("s1")) == 1, "taken back while its worker could be reconnecting"
    await _silent_s1(grid, d, 1.0)  # cap + 3.5 s since the reconnect
    await wait_until(lambda: len(grid.assignments("s2")) == 1, timeout=2)


async def test_a_returned_assignment_keeps_its_request_held(grid: Grid) -> None:
    """Rule: an assignment the broker returns (no queue for the substation) costs its request
    no delivery: it stays held and goes elsewhere once a substation with a queue is there."""
    d = await grid.dispatcher()
    await serving(grid, {"s1": 300}, d)
    # s1's queue goes away (its worker deleted it, say): the next assignment comes back.
    grid.broker.bindings.discard((TOPO.substation_queue("s1"), TOPO.substations_exchange, "s1"))
    r = grid.request()
    returned = lambda: grid.broker.published_to(TOPO.substations_exchange, "returned")  # noqa: E731
    await wait_until(lambda: len(returned()) == 1, timeout=2)
    await wait_until(lambda: d.table.get("s1") is None, timeout=2)
    assert [h.request.request_id for h in d.held] == [r.request_id]
    grid.substation("s2")
    grid.heartbeat("s2", 300)
    await wait_until(lambda: len(grid.assignments("s2")) == 1, timeout=2)
    assert requests_left(grid) == 0
    assert session_of(d).nacked == []  # never nacked: no delivery spent


async def test_a_nacked_assignment_waits_for_its_substations_next_heartbeat(grid: Grid) -> None:
    """Rule: an assignment the broker nacks costs its request no delivery: the request stays
    held (not nacked back to <ns>.requests), the substation refuses publishes until its next
    heartbeat, and the request, whose route names that substation, waits for it there without
    holding up the requests behind it."""
    d = await grid.dispatcher()
    await serving(grid, {"s1": 600, "s2": 150}, d)
    grid.broker.nack_when(lambda ex, key, _b: ex == TOPO.substations_exchange and key == "s1")
    r = grid.request()
    nacked = lambda: grid.broker.published_to(TOPO.substations_exchange, "nacked")  # noqa: E731
    await wait_until(lambda: len(nacked()) == 1, timeout=2)
    await wait_until(lambda: d.table.get("s1").status == "refused", timeout=2)  # type: ignore[union-attr]
    behind = grid.request(vehicle_id="ev-2")
    await wait_until(lambda: len(grid.assignments("s2")) == 1, timeout=2)
    assert grid.assignments("s2")[0].request.request_id == behind.request_id
    assert [h.request.request_id for h in d.held] == [r.request_id]
    grid.broker.nack_rules.clear()
    grid.heartbeat("s1", 600)
    await wait_until(lambda: len(grid.assignments("s1")) == 1, timeout=2)
    assert grid.assignments("s1")[0].request.request_id == r.request_id
    assert session_of(d).nacked == []


async def test_a_car_with_a_departure_goes_where_it_can_still_be_met(grid: Grid) -> None:
    """Rule: a request with a departure is promised the power that fills it by then (20 kWh
    in 10 h: 2 kW), so it goes to a substation that has that much room although a car at its
    max power (11 kW) would not fit anywhere and is held."""
    d = await grid.dispatcher()
    await serving(grid, {"s1": 100, "s2": 100}, d)
    grid.heartbeat("s1", 100, committed_kw=99)  # 1 kW left
    grid.heartbeat("s2", 100, committed_kw=95)  # 5 kW left
    await wait_until(lambda: d.table.get("s2").committed_kw == 95, timeout=2)  # type: ignore[union-attr]
    undated = grid.request()
    met = grid.request(leaving_request(36_000))
    await wait_until(lambda: len(grid.assignments("s2")) == 1, timeout=2)
    assert [a.request.request_id for a in grid.assignments("s2")] == [met.request_id]
    assert grid.assignments("s1") == []
    assert [h.request.request_id for h in d.held] == [undated.request_id]
    assert d.table.get("s2").pending_kw == pytest.approx(2.0, rel=1e-3)  # type: ignore[union-attr]


async def test_a_car_no_substation_can_meet_is_sent_where_it_is_least_short(grid: Grid) -> None:
    """Rule: holding a car with a departure only runs its time out: when no substation can
    meet it, it goes to the least promised one instead of waiting in <ns>.requests."""
    d = await grid.dispatcher()
    await serving(grid, {"s1": 100, "s2": 100}, d)
    grid.heartbeat("s1", 100, committed_kw=150)
    grid.heartbeat("s2", 100, committed_kw=120)
    await wait_until(lambda: d.table.get("s2").committed_kw == 120, timeout=2)  # type: ignore[union-attr]
    short = grid.request(leaving_request(3_600))
    await wait_until(lambda: len(grid.assignments("s2")) == 1, timeout=2)
    assert grid.assignments("s2")[0].request.request_id == short.request_id
    assert not d.held


async def test_a_car_with_a_departure_goes_where_the_plans_leave_it_the_most(
    grid: Grid,
) -> None:
    """Rule: of the least promised substation of each capacity, a car with a departure goes
    where it can count on the most energy by then from what the substations' plans leave
    spare (Heartbeat.spare): not to the least promised one when its plan leaves nothing."""
    d = await grid.dispatcher()
    await serving(grid, {"big": 100, "small": 50}, d)
    grid.heartbeat("big", 100, committed_kw=50, spare=[{"until_s": 86_400, "kw": 0.0}])
    grid.heartbeat("small", 50, committed_kw=40, spare=[{"until_s": 86_400, "kw": 10.0}])
    await wait_until(lambda: d.table.get("small").spare is not None, timeout=2)  # type: ignore[union-attr]
    await wait_until(lambda: d.table.get("big").spare is not None, timeout=2)  # type: ignore[union-attr]
    met = grid.request(leaving_request(36_000))
    await wait_until(lambda: len(grid.assignments("small")) == 1, timeout=2)
    assert grid.assignments("small")[0].request.request_id == met.request_id
    assert grid.assignments("big") == []


async def test_past_a_held_request_only_cars_with_a_departure_go_on(grid: Grid) -> None:
    """Rule: behind a request the policy holds, cars without a departure keep their order (a
    small car does not jump the queue although it would fit) while a car with a departure
    goes on."""
    d = await grid.dispatcher()
    await serving(grid, {"s1": 100}, d)
    grid.heartbeat("s1", 100, committed_kw=95)  # 5 kW left
    await wait_until(lambda: d.table.get("s1").committed_kw == 95, timeout=2)  # type: ignore[union-attr]
    big = grid.request()  # 11 kW: held
    small = grid.request(vehicle_id="ev-2", max_power_kw=2.0)  # would fit, waits its turn
    met = grid.request(leaving_request(36_000))
    await wait_until(lambda: len(grid.assignments("s1")) == 1, timeout=2)
    assert grid.assignments("s1")[0].request.request_id == met.request_id
    assert [h.request.request_id for h in d.held] == [big.request_id, small.request_id]
    assert d.held.dated == 0
