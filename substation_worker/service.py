"""The worker process: BrokerLink + the pure simulation + metrics, wired together.

Everything runs on one event loop. pika callbacks (``_on_message``) only parse, bookkeep and
hand the session to the simulation; charging time passes in the tick task, never inside a
callback (a blocked callback starves the connection, its AMQP heartbeats included).

Delivery rules (at least once, duplicates harmless):

* An assignment's delivery is acked only when its session completes, so a worker killed
  mid-session gets the broker to redeliver it. Prefetch = bays, so the queue, not this process,
  holds the backlog.
* A request already held here, or completed recently, is acked at once without a second session.
* An assignment addressed to another substation is not this one's to charge: its request goes
  back to ``<ns>.requests`` for the dispatcher to decide (it drops it if it dispatched it).
* A message that cannot be read, whatever the reason, is dead-lettered once with the reason.
* When the connection is lost, every session held is dropped: the broker requeues their
  deliveries, and their old delivery tags must never be acked on the new channel.
* SIGTERM drains: heartbeat ``draining`` (the dispatcher stops sending and takes back the
  queue), stop consuming, hand back what has not started, let active sessions finish for up to
  ``drain_timeout_s``, hand back the rest, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID, uuid4

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from contracts import Assignment, ChargeEvent, EventKind, Heartbeat, SessionOutcome
from contracts.messages import MAX_ENERGY_KWH, MIN_VEHICLE_POWER_KW, readable_request_id
from contracts.topology import CONSUMER_TIMEOUT_MS, HEARTBEAT_TTL_MS
from contracts.validation import summary
from messaging import BrokerLink, BrokerSession, Connect, Delivery, MessagingError, Session
from messaging.publishing import ack_once_confirmed, dead_letter, publish_event
from messaging.runtime import start_metrics_server
from messaging.waiting import sleep_unless
from substation_worker.bays import Bays
from substation_worker.metrics import OcppMetrics, WorkerMetrics
from substation_worker.ocpp.csms import StationBays
from substation_worker.ocpp.listener import OcppListener
from substation_worker.ocpp.registry import Bay, StationRegistry
from substation_worker.ocpp.sessions import StationSessions, WalkInDefaults
from substation_worker.settings import WorkerSettings
from substation_worker.sharing import DEFAULT_FIRST_STEP_S, sharing_named
from substation_worker.simulation import (
    ChargingSession,
    Step,
    Substation,
    heartbeat_releases,
)
from substation_worker.spare import SpareCache, spare_to_wire

log = logging.getLogger(__name__)

TICK_S = 0.1
# The sharing is re-planned at least this often in wall seconds (and at every arrival,
# departure and completion), never more often than every DEFAULT_FIRST_STEP_S simulated: at
# high time scales a plan per tick would cost a core.
REPLAN_WALL_S = 0.5
REPLAN_GAP_WALL_S = 0.05
# Request ids completed here, remembered to ack redelivered duplicates without charging twice.
RECENT_IDS = 100_000
SOURCE = "substation_worker"
# A limit a station refused is sent again after this long (wall seconds), or once the car sent
# its charging needs: a station that refuses must not be asked again on every re-plan.
REFUSED_RETRY_WALL_S = 5.0
_CANCEL_TIMEOUT_S = 2.0


@dataclass(slots=True)
class _Held:
    delivery: Delivery
    assignment: Assignment


class WorkerService:
    """One substation worker. ``await service.run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        settings: WorkerSettings,
        registry: CollectorRegistry,
        connect: Connect = Session.open,
    ) -> None:
        self.settings = settings
        self.sid = settings.substation_id
        self.topology = settings.topology()
        self.queue = self.topology.substation_queue(self.sid)
        self.metrics = WorkerMetrics(registry, self.sid)
        replan_s = max(DEFAULT_FIRST_STEP_S, REPLAN_WALL_S * settings.time_scale)
        # smartgrid's plan is a linear programme (milliseconds): a burst of arrivals is planned
        # together, at most every REPLAN_GAP_WALL_S; the other sharings cost microseconds.
        gap_s = REPLAN_GAP_WALL_S * settings.time_scale if settings.sharing == "smartgrid" else 0.0
        # Real stations over OCPP 2.0.1 (docs/ocpp.md) are the bays when the listener is on;
        # with ocpp_port 0 nothing of it exists and the bays are simulated.
        self.stations = StationRegistry()
        self.ocpp: OcppListener | None = None
        self.station_bays: StationBays | None = None
        self.sim: Bays
        if settings.ocpp_port:
            ocpp_metrics = OcppMetrics(registry, self.sid)
            self.station_bays = StationBays(
                StationSessions(
                    settings.capacity_kw,
                    sharing=sharing_named(settings.sharing, replan_s),
                    replan_s=replan_s,
                    evse_max_kw=evse_max_kw(settings),
                    walk_ins=WalkInDefaults(energy_kwh=settings.ocpp_walk_in_energy_kwh),
                    refused_retry_s=REFUSED_RETRY_WALL_S * settings.time_scale,
                ),
                self.stations,
                time_scale=settings.time_scale,
                charger_max_kw=settings.charger_max_kw,
                settle_s=settings.ocpp_settle_s,
                metrics=ocpp_metrics,
            )
            self.sim = self.station_bays
            self.ocpp = OcppListener(
                settings.ocpp_host,
                settings.ocpp_port,
                self.stations,
                ocpp_metrics,
                self.station_bays,
                stations=settings.ocpp_stations,
                ssl=settings.ocpp_ssl,
            )
        else:
            self.sim = Substation(
                settings.capacity_kw,
                settings.bays,
                settings.charger_max_kw,
                sharing=sharing_named(settings.sharing, replan_s),
                replan_s=replan_s,
                min_replan_gap_s=min(gap_s, replan_s),
            )
        self.link = BrokerLink(
            settings, f"smartgrid-worker-{self.sid}", self._setup, self._on_lost, connect
        )
        self.metrics.broker_node.follow(lambda: self.link.node)
        self.assignments_received = 0
        self._spare = SpareCache()  # what the heartbeats state of the plan's spare power
        self.seq = 0
        # This process: its heartbeats are ordered by seq; another incarnation is a restart.
        self.incarnation = uuid4()
        # Set on heartbeats, so that a dispatcher can require the substation's own user (the
        # broker refuses a user_id that is not the connection's user).
        self._user_id = settings.amqp_user()
        self.status: Literal["up", "draining"] = "up"
        self._empty = asyncio.Event()  # set while no session is held
        self._held: dict[str, _Held] = {}
        # Request id -> its completed event (JSON), for requests completed here recently.
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._session: BrokerSession | None = None
        self._consumer_tag: str | None = None
        self._last_tick = time.monotonic()
        self._last_depth = 0
        self.metrics.capacity_watts.set(settings.capacity_kw * 1_000)
        self.metrics.bays.set(settings.bays)
        self.metrics.broker_connected.set(0)
        self._update_gauges()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` (then drain); raises FatalBrokerError if the broker refuses us."""
        if self.ocpp is not None:
            await self.ocpp.start()  # a port in use fails here, before anything else starts
        try:
            await self._run(stop)
        finally:
            if self.ocpp is not None:
                await self.ocpp.stop()
            if self.station_bays is not None:
                await self.station_bays.stop()

    async def _run(self, stop: asyncio.Event) -> None:
        link_stop = asyncio.Event()
        halt = asyncio.Event()  # ends the tick and heartbeat loops, once drained
        link_task = asyncio.create_task(self.link.run(link_stop), name="broker-link")
        workers = [
            asyncio.create_task(self._tick_loop(halt), name="tick"),
            asyncio.create_task(self._heartbeat_loop(halt), name="heartbeat"),
        ]
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({link_task, stopped, *workers}, return_when=asyncio.FIRST_COMPLETED)
            if stopped.done() and not link_task.done():
                await self._drain()
        finally:
            halt.set()
            stopped.cancel()
            for t in workers:
                t.cancel()
            # Stop taking new work before closing; unacked sessions go back to the queue.
            await self._stop_consuming()
            link_stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
            try:
                await link_task
            finally:
                self._session = None
                self.metrics.broker_connected.set(0)
        for t in workers:
            exc = None if t.cancelled() else t.exception()
            if exc is not None:
                raise exc
        log.info("substation %s stopped", self.sid)

    async def _setup(self, session: BrokerSession) -> None:
        # Anything held belongs to an older connection whose deliveries the broker took back.
        self._drop_held("new connection")
        self._session = session
        topo = self.topology
        await session.declare_all(
            topo.exchanges(),
            [*topo.core_queues(), topo.substation_queue_spec(self.sid)],
            [*topo.core_bindings(), topo.substation_binding(self.sid)],
        )
        await session.set_prefetch(self.settings.bays)
        self._consumer_tag = await session.consume(self.queue, self._on_message)
        self.metrics.broker_connected.set(1)

    def _on_lost(self) -> None:
        self.metrics.broker_connected.set(0)
        self._session = None
        self._consumer_tag = None
        self._drop_held("connection lost")

    def _drop_held(self, why: str) -> None:
        dropped = self.sim.reset()
        self._held.clear()
        if dropped:
            log.warning("%s: dropped %d sessions; the broker redelivers them", why, len(dropped))
        self._update_gauges()

    async def _stop_consuming(self) -> None:
        session, tag = self._session, self._consumer_tag
        self._consumer_tag = None
        if session is None or tag is None or not session.is_open:
            return
        try:
            await asyncio.wait_for(session.cancel(tag), _CANCEL_TIMEOUT_S)
        except (MessagingError, TimeoutError) as exc:
            log.debug("consumer cancel skipped: %s", exc)

    # -- deliveries (pika callback: never block here) ----------------------------------------

    async def _drain(self) -> None:
        self.status = "draining"
        log.info("substation %s draining", self.sid)
        await self._stop_consuming()
        await self._heartbeat()  # tell the dispatcher at once, not at the next interval
        self._hand_back(self.sim.take_waiting(), "not started")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), self.settings.drain_timeout_s)
        self._hand_back(self.sim.reset(), "unfinished at the drain timeout")
        self._update_gauges()
        log.info("substation %s drained", self.sid)

    def _hand_back(self, sessions: list[ChargingSession], why: str) -> None:
        """Requeue these sessions' deliveries: the dispatcher sends them elsewhere."""
        for s in sessions:
            held = self._held.pop(s.key, None)
            if held is not None:
                held.delivery.nack(requeue=True)
        if sessions:
            log.info("handed back %d sessions (%s)", len(sessions), why)

    def _on_message(self, delivery: Delivery) -> None:
        if self.status == "draining":
            delivery.nack(requeue=True)  # arrived as we cancelled: someone else's now
            return
        try:
            assignment = Assignment.model_validate_json(delivery.body)
        except ValidationError as exc:
            self._reject(delivery, f"invalid Assignment: {summary(exc)}")
            return
        except Exception as exc:  # it would fail the same way on every redelivery
            self._reject(delivery, f"unreadable Assignment: {type(exc).__name__}")
            return
        if assignment.substation_id != self.sid:
            self._hand_back_misaddressed(delivery, assignment)
            return
        self.assignments_received += 1
        self.metrics.assignments_received.inc()
        key = str(assignment.request.request_id)
        req = assignment.request
        if key not in self._held and key not in self._recent and self.sim.holds(key):
            # A car on a station (OCPP) whose delivery went with a lost connection, or that a
            # station reported after a restart: this delivery is acked when it completes.
            self._held[key] = _Held(delivery, assignment)
            if self.station_bays is not None:
                self.station_bays.learn_demand(
                    key,
                    req.energy_kwh,
                    req.max_power_kw,
                    departure_s=self._sim_time_of(req.departure),
                    priority=req.priority,
                )
            return
        if key in self._held or key in self._recent:
            completed = self._recent.get(key)
            if completed is not None:
                self._recent.move_to_end(key)
                # Its completion may be redelivered because the ack, and perhaps the event,
                # were lost with a connection: say it again, with the same event_id, so that
                # followers count one completion.
                self._emit(ChargeEvent.model_validate_json(completed), delivery.session)
            self.metrics.duplicates.inc()
            log.debug("duplicate assignment %s acked", key)
            delivery.ack()
            return
        # Bring the simulation up to now first, so the newcomer is not credited past time.
        self._tick()
        self.sim.offer(
            key,
            req.energy_kwh,
            req.max_power_kw,
            departure_s=self._sim_time_of(req.departure),
            priority=req.priority,
        )
        self._held[key] = _Held(delivery, assignment)
        # Starts it, or ends it unserved if its departure passed while it waited upstream.
        self._apply(self.sim.advance(0.0))

    def _hand_back_misaddressed(self, delivery: Delivery, assignment: Assignment) -> None:
        """Republish the request (confirmed), then ack: the dispatcher sends it where it goes,
        or drops it as a duplicate of one it dispatched."""
        request = assignment.request
        log.warning(
            "assignment %s is for %s, not %s: handing it back for dispatch",
            request.request_id,
            assignment.substation_id,
            self.sid,
        )
        self.metrics.misaddressed.inc()
        try:
            fut = delivery.session.publish(
                self.topology.requests_exchange,
                "",
                request.model_dump_json().encode(),
                message_id=str(request.request_id),
            )
        except MessagingError:
            return  # the session is gone: the broker requeues it
        ack_once_confirmed(delivery, fut, "handing back a misaddressed assignment")

    def _reject(self, delivery: Delivery, reason: str) -> None:
        log.warning("invalid assignment dead-lettered: %s", reason)
        try:
            dead_letter(delivery.session, self.topology, delivery, reason, SOURCE)
        except MessagingError as exc:
            # BrokerSession gone: the broker requeues it and we try again on redelivery.
            log.warning("could not dead-letter: %s", exc)
            return
        self.metrics.dead_lettered.inc()
        request_id = readable_request_id(delivery.body)
        if request_id is not None:
            self._emit(
                ChargeEvent(
                    request_id=request_id,
                    kind=EventKind.DEAD_LETTERED,
                    substation_id=self.sid,
                    reason=reason[:2000],
                ),
                delivery.session,
            )

    # -- simulated time ----------------------------------------------------------------------

    async def _tick_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await sleep_unless(stop, TICK_S)
            self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        self._apply(self.sim.advance(max(0.0, elapsed) * self.settings.time_scale))

    def _apply(self, step: Step) -> None:
        wall_now = datetime.now(UTC)
        for s in step.started:
            self._on_started(s, wall_now)
        for s in step.completed:
            self._on_completed(s, wall_now)
        self._update_gauges()

    def _sim_time_of(self, wall: datetime | None) -> float | None:
        """A wall-clock instant on the simulation's clock (simulated time runs time_scale x)."""
        if wall is None:
            return None
        ahead_s = (wall - datetime.now(UTC)).total_seconds()
        return self.sim.now_s + ahead_s * self.settings.time_scale

    def _wall_time_of(self, sim_s: float, wall_now: datetime) -> datetime:
        lag_s = max(0.0, self.sim.now_s - sim_s) / self.settings.time_scale
        return wall_now - timedelta(seconds=lag_s)

    def _unheld(self, s: ChargingSession) -> bool:
        """A session on a station with no delivery held: a walk-in, or a dispatched car whose
        delivery went with a lost connection (its events still go out; it is acked when the
        broker delivers it again, from ``_recent``)."""
        return self.station_bays is not None and s.key not in self._held

    def _on_started(self, s: ChargingSession, wall_now: datetime) -> None:
        held = self._held.get(s.key)
        if held is None and not self._unheld(s):
            return
        sim_start = self.sim.now_s if s.started_at_s is None else s.started_at_s
        started_at = self._wall_time_of(sim_start, wall_now)
        if held is not None:
            wait_s = (started_at - held.assignment.request.requested_at).total_seconds()
            self.metrics.wait_seconds.observe(max(0.0, wait_s))
        self._emit(
            ChargeEvent(
                request_id=held.assignment.request.request_id if held else UUID(s.key),
                kind=EventKind.STARTED,
                substation_id=self.sid,
                attempt=held.assignment.attempt if held else None,
                at=started_at,
            )
        )

    def _on_completed(self, s: ChargingSession, wall_now: datetime) -> None:
        unheld = self._unheld(s)
        held = self._held.pop(s.key, None)
        if held is None and not unheld:
            return
        if held is not None:
            held.delivery.ack()  # the only ack of a served assignment: the work is done
        outcome = s.outcome or SessionOutcome.FULL
        ended_s = self.sim.now_s if s.completed_at_s is None else s.completed_at_s
        event = ChargeEvent(
            request_id=held.assignment.request.request_id if held else UUID(s.key),
            kind=EventKind.COMPLETED,
            substation_id=self.sid,
            attempt=held.assignment.attempt if held else None,
            at=self._wall_time_of(ended_s, wall_now),
            energy_kwh=s.delivered_kwh,
            energy_requested_kwh=s.energy_kwh,
            outcome=outcome,
            demand_met=outcome is SessionOutcome.FULL,
        )
        self._remember(s.key, event)
        self.metrics.count_session(s.energy_kwh, s.delivered_kwh, outcome)
        if s.started_at_s is not None:
            self.metrics.charge_duration_seconds.observe(s.charge_time_s)
        self._emit(event)

    def _remember(self, key: str, completed: ChargeEvent) -> None:
        self._recent[key] = completed.model_dump_json().encode()
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    def _emit(self, event: ChargeEvent, session: BrokerSession | None = None) -> None:
        session = session or self._session
        if session is not None and session.is_open:
            publish_event(session, self.topology, event)

    def _update_gauges(self) -> None:
        self.metrics.set_load(self.sim.load_kw, self.sim.capacity_kw)
        self.metrics.active_sessions.set(self.sim.active_count)
        if self.sim.active_count or self.sim.waiting_count:
            self._empty.clear()
        else:
            self._empty.set()

    # -- heartbeats --------------------------------------------------------------------------

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        interval = self.settings.heartbeat_interval_s
        next_at = time.monotonic()
        while not stop.is_set():
            next_at += interval
            await sleep_unless(stop, max(0.0, next_at - time.monotonic()))
            if stop.is_set():
                return
            next_at = max(next_at, time.monotonic() - interval)  # no burst after a stall
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        session = self._session
        if session is None or not session.is_open:
            return
        try:
            depth = await asyncio.wait_for(
                session.queue_depth(self.queue), max(1.0, self.settings.heartbeat_interval_s)
            )
            self._last_depth = depth
        except TimeoutError:
            depth = self._last_depth
        except MessagingError as exc:
            # E.g. the queue was deleted under us (404 closes the channel): the link reconnects
            # and redeclares it; this heartbeat is skipped.
            log.warning("heartbeat skipped: %s", exc)
            return
        if not session.is_open:
            return
        self._tick()
        queued = self.sim.waiting_count + depth
        self.metrics.queued_sessions.set(queued)
        self.seq += 1
        hb = Heartbeat(
            substation_id=self.sid,
            capacity_kw=self.sim.capacity_kw,
            bays=self.sim.bays,
            load_kw=self.sim.load_kw,
            committed_kw=self.sim.committed_kw,
            active_sessions=self.sim.active_count,
            queued=queued,
            status=self.status,
            seq=self.seq,
            incarnation=self.incarnation,
            assignments_received=self.assignments_received,
            interval_s=self.settings.heartbeat_interval_s,
            time_scale=self.settings.time_scale,
            charger_max_kw=self.sim.charger_max_kw,
            keeps_sessions=self.station_bays is not None,
            releases=heartbeat_releases(
                self.sim, self.settings.heartbeat_interval_s, self.settings.time_scale
            ),
            # Simulated bays only: over OCPP each station's EVSE limits what one more car
            # draws, which a substation-wide profile does not tell.
            spare=spare_to_wire(self._spare.profile(self.sim), self.settings.time_scale)
            if isinstance(self.sim, Substation)
            else None,
        )
        session.publish_and_forget(
            self.topology.heartbeats_exchange,
            "",
            hb.model_dump_json().encode(),
            message_id=uuid4().hex,
            expiration_ms=HEARTBEAT_TTL_MS,
            user_id=self._user_id,
        )
        self.metrics.heartbeats_sent.inc()


def evse_max_kw(settings: WorkerSettings) -> Callable[[Bay], float]:
    """An EVSE's most power: the stations file's figure, else the charger maximum."""
    stations = settings.ocpp_stations

    def of(bay: Bay) -> float:
        entry = stations.station(bay.station_id) if stations is not None else None
        if entry is not None and bay.evse_id in entry.evse_max_kw:
            return entry.evse_max_kw[bay.evse_id]
        return settings.charger_max_kw

    return of


async def serve(
    settings: WorkerSettings, stop: asyncio.Event, registry: CollectorRegistry | None = None
) -> None:
    """The worker's main: metrics endpoint, then the service until ``stop``."""
    registry = registry if registry is not None else CollectorRegistry()
    longest_s = MAX_ENERGY_KWH / MIN_VEHICLE_POWER_KW * 3600 / settings.time_scale
    if longest_s * 1000 > CONSUMER_TIMEOUT_MS:
        log.warning(
            "at time scale %g the longest possible session lasts %.0f wall hours, beyond the "
            "broker's consumer timeout (%.0f h): it would be redelivered before it completes",
            settings.time_scale,
            longest_s / 3600,
            CONSUMER_TIMEOUT_MS / 3_600_000,
        )
    service = WorkerService(settings, registry)
    start_metrics_server(settings.metrics_host, settings.metrics_port, registry)
    log.info(
        "substation %s: %.0f kW, %d bays, time x%g, namespace %s",
        settings.substation_id,
        settings.capacity_kw,
        settings.bays,
        settings.time_scale,
        settings.namespace,
    )
    await service.run(stop)
