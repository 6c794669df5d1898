"""The dispatcher process: requests in, assignments out, the policy in between.

The safe relay (the Shovel pattern): a request is acked only after the broker confirmed its
assignment to the substation queue. Confirms are pipelined — up to ``prefetch`` requests are in
flight — so throughput is bounded by the broker, not by round trips. A crash between confirm and
ack redelivers the request: duplicates are possible and are made harmless downstream by
``request_id``.

Backpressure: when the policy holds, requests stay unacked here (at most ``prefetch`` of them) and
everything behind them stays ready in ``<ns>.requests``; the next heartbeat retries them, and so
does a timer set for when the load table next expects a session to end (a predicted release).

Failover: a substation whose heartbeats stopped (or that drains) gets nothing new, and what waits
in its queue is taken back: the dispatcher consumes that queue itself and dispatches each
assignment again elsewhere (``redispatched``), acking it only once the new one is confirmed.

Refusals: an assignment the broker returns (no queue is bound for its substation) or nacks
costs its request nothing: the request stays held here and is dispatched again, elsewhere; the
substation is out until a heartbeat after its queue exists (returned) or its next heartbeat
(nacked). Substations are admitted only once their queue is seen to exist, at a bounded rate
and number (``dispatcher.admission``), and no queue is ever created for one.

Duplicates: the requests of one pump are announced together (one confirmed ``DispatchIntent``
listing where each goes) before their assignments are published. A request id whose assignment
this dispatcher saw confirmed, or that is in flight here, is acked without a second dispatch; one
it only knows the intent of (announced by a dispatcher that died, say) is sent again to that same
substation, whose worker drops the copy. So neither a client's retry nor a redelivery after a
crash starts a second charging session.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from contracts import (
    Assignment,
    ChargeEvent,
    ChargeRequest,
    DispatchIntent,
    EventKind,
    Heartbeat,
)
from contracts.messages import (
    MAX_INTENT_ROUTES,
    derived_request_id,
    readable_request_id,
    utcnow,
)
from contracts.topology import BindingSpec
from contracts.validation import summary
from dispatcher.admission import HINTS, RefusalLog, expected_user, from_the_future
from dispatcher.dead_letters import announcement, reason_label
from dispatcher.deadlines import promised_kw
from dispatcher.held import HeldQueue
from dispatcher.ledger import DispatchLedger, Step, is_silent, resend_rule
from dispatcher.load_table import LoadTable, SubstationState
from dispatcher.metrics import DispatcherMetrics
from dispatcher.policies import Policy, decider, make_policy
from dispatcher.settings import DispatcherSettings
from dispatcher.spare import most_energy, shortlist
from messaging import (
    BrokerLink,
    BrokerSession,
    BrokerUnavailable,
    Connect,
    Delivery,
    PublishReturned,
    Session,
)
from messaging.publishing import (
    ack_once_confirmed,
    announce_intent,
    dead_letter,
    publish_event,
    publish_event_confirmed,
)
from messaging.ratelimit import TokenBucket
from messaging.waiting import sleep_unless

log = logging.getLogger(__name__)


DRAIN_TIMEOUT_S = 5.0
# A probe of a substation's queue gives up after this long (the id is probed again when heard).
PROBE_TIMEOUT_S = 5.0
# An id whose queue was missing is looked at again no sooner than this, s; so many are kept.
NO_QUEUE_RECHECK_S = 10.0
NO_QUEUE_REMEMBERED = 100_000
_DISPATCH_KINDS = (EventKind.DISPATCHED, EventKind.REDISPATCHED)
# One policy decision in this many is timed (smartgrid_dispatcher_decision_seconds): a sample
# gives the distribution; timing every one cost more than some decisions take.
DECISION_SAMPLE = 16


@dataclass(slots=True)
class _Held:
    delivery: Delivery
    request: ChargeRequest
    received: float
    attempt: int = 1
    # The substation whose queue it was taken back from, if it is a redispatch.
    reclaimed_from: str | None = None
    # request_id.int: the key of the sets and maps below (a UUID hashes in Python, an int in C).
    key: int = field(init=False, default=0)
    # As the load table recorded its assignment: (kW, estimated end or None).
    recorded: tuple[float, float | None] | None = None
    fingerprint: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.key = self.request.request_id.int
        self.fingerprint = self.request.fingerprint()


class Dispatcher:
    def __init__(
        self,
        settings: DispatcherSettings,
        policy: Policy,
        metrics: DispatcherMetrics,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        connect: Connect = Session.open,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self.wall_clock = wall_clock
        self.topology = settings.topology()
        # Predicted releases hold only while no substation shares power: with promises beyond
        # capacity (hold factor above 1), what is assigned later slows the sessions predicted,
        # and freeing their power on time would promise more still (bench.balance measures it).
        self.table = LoadTable(
            settings.stale_after_intervals,
            use_releases=settings.policy == "headroom" and settings.hold_factor <= 1.0,
        )
        self.held: HeldQueue[_Held] = HeldQueue()
        self.inflight = 0
        self._confirms = 0
        # Request ids held or in flight here, and where recent ones went.
        self.ledger = DispatchLedger()
        # Admission of substations the table does not hold: those whose queue is being
        # probed (with their latest heartbeat), and those whose queue was missing (until when).
        self._probing: dict[str, Heartbeat] = {}
        self._no_queue: OrderedDict[str, float] = OrderedDict()
        self._admissions = TokenBucket(
            settings.admit_per_s, max(1, round(2 * settings.admit_per_s)), clock()
        )
        self._refusals = RefusalLog()
        # Substation id -> consumer tag of its queue, for substations being taken back.
        self._reclaiming: dict[str, str] = {}
        self._idle = asyncio.Event()  # set whenever no assignment awaits its confirm
        self._pump_scheduled = False
        # Children of the decisions counter by substation (labels() costs a lookup per call).
        self._decided: dict[str, Counter] = {}
        self._decisions = 0
        self._substations_exchange = self.topology.substations_exchange
        # Holding requests: a retry when the table's next predicted release is due.
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = 0.0
        instance = uuid.uuid4().hex[:8]
        self.instance = f"smartgrid-dispatcher-{instance}"
        self._instance_hex = instance
        self._setups = 0
        self.heartbeat_queue: str
        self.events_queue: str
        self._name_private_queues()
        self._requests_consumer: str | None = None
        # True while this dispatcher's intent queue is bound (it stands by, or got no request yet).
        self._following_intents = False
        self._background: set[asyncio.Task[None]] = set()
        # While disconnected no heartbeat arrives: silence only counts from (re)connecting.
        self._connected_at: float | None = None
        self.link = BrokerLink(settings, self.instance, self._setup, self._lost, connect)
        self.metrics.broker_node.follow(lambda: self.link.node)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        link_stop = asyncio.Event()
        link_task = asyncio.create_task(self.link.run(link_stop))
        poll_task = asyncio.create_task(self._poll(link_stop))
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({link_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not link_task.done():
            await self._drain()
        link_stop.set()
        if self._wake is not None:
            self._wake.cancel()
        poll_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll_task
        await link_task  # re-raises FatalBrokerError

    async def _drain(self) -> None:
        """Stop taking requests and let in-flight assignments confirm, so that a clean stop
        does not redeliver (and so duplicate) what was already dispatched."""
        session = self.link.session
        if session is None:
            return
        if self._requests_consumer is not None:
            with contextlib.suppress(BrokerUnavailable):
                await session.cancel(self._requests_consumer)
        if self.inflight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), DRAIN_TIMEOUT_S)

    def _name_private_queues(self) -> None:
        """This connection's private queues (exclusive: gone with it), named anew at every
        (re)connect. An exclusive queue lives on the node its connection was on; once that node
        is lost, the cluster may still hold the dead queue's record for a moment, and using the
        same name then fails (404 "no queue", which is fatal): a new name never meets it. Hex
        only, as the broker users' permissions expect (``contracts.definitions``)."""
        suffix = f"{self._instance_hex}{self._setups:x}"
        self.heartbeat_queue = f"{self.topology.heartbeats_exchange}.dispatcher-{suffix}"
        self.events_queue = f"{self.topology.events_exchange}.dispatcher-{suffix}"

    async def _setup(self, session: BrokerSession) -> None:
        t = self.topology
        self._setups += 1
        self._name_private_queues()
        await session.declare_all(t.exchanges(), t.core_queues(), t.core_bindings())
        await session.declare_queue(t.heartbeat_queue_spec(self.heartbeat_queue))
        await session.bind(BindingSpec(self.heartbeat_queue, t.heartbeats_exchange))
        await session.consume(self.heartbeat_queue, self._on_heartbeat, auto_ack=True)
        # What other dispatchers (an active one, while this one stands by) are dispatching.
        await session.declare_queue(t.heartbeat_queue_spec(self.events_queue))
        for binding in self._intents_bindings():
            await session.bind(binding)
        self._following_intents = True
        await session.consume(self.events_queue, self._on_intent, auto_ack=True)
        await session.set_prefetch(self.settings.prefetch)
        await session.declare_queue(t.dead_watch_queue_spec())
        await session.bind(t.dead_watch_binding())
        await session.consume(t.dead_watch_queue, self._on_dead_letter)
        # Before the first request: silence counts from here (_may_resend_to, reclaims). After
        # a reconnect the workers are reconnecting too, each waiting out its own backoff (up to
        # the reconnect cap): silence counts only once that is over, else a healthy worker
        # that reconnects a little later than this dispatcher has its queue taken back.
        grace = self.settings.reconnect_max_s if self.link.connects else 0.0
        self._connected_at = self.clock() + grace
        self._requests_consumer = await session.consume(t.requests_queue, self._on_request)
        self.metrics.connected.set(1)

    def _lost(self) -> None:
        self._connected_at = None
        # Their delivery tags died with the channel; the broker requeued them.
        self.held.clear()
        self.ledger.connection_lost()
        self._reclaiming.clear()
        self._probing.clear()
        self.inflight = 0
        self._idle.set()
        self._requests_consumer = None
        self.metrics.connected.set(0)
        self.metrics.held.set(0)

    async def _poll(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            session = self.link.session
            if session is not None:
                with contextlib.suppress(BrokerUnavailable):
                    self.metrics.backlog.set(
                        await session.queue_depth(self.topology.requests_queue)
                    )
            now = self.clock()
            if session is not None:
                with contextlib.suppress(BrokerUnavailable, TimeoutError):
                    await self._sync_reclaims(session, now)
                    await self._forget_silent(session, now)
            for state, n in self.table.counts(now).items():
                self.metrics.substations.labels(state).set(n)
            self._refusals.tick(now)
            self._pump()
            await sleep_unless(stop, self.settings.backlog_poll_s)

    # -- consumers (run on the event loop; must not block) -----------------------------------

    def _on_heartbeat(self, delivery: Delivery) -> None:
        try:
            hb = Heartbeat.model_validate_json(delivery.body)
        except ValidationError as exc:
            self.metrics.heartbeats.labels("invalid").inc()
            log.warning("ignoring invalid heartbeat: %s", summary(exc))
            return
        except Exception as exc:  # whatever reading it raises, it is not a heartbeat
            self.metrics.heartbeats.labels("invalid").inc()
            log.warning("ignoring unreadable heartbeat: %s", type(exc).__name__)
            return
        now = self.clock()
        sid = hb.substation_id
        if from_the_future(hb, self.wall_clock(), self.settings.max_clock_skew_s):
            self._refuse("future", sid, now)
            return
        template = self.settings.heartbeat_user
        if template is not None and delivery.user_id != expected_user(template, sid):
            self._refuse("forbidden", sid, now)
            return
        if self.table.get(sid) is None:
            self._admit(hb, now)
            return
        applied = self.table.observe(hb, now)
        self.metrics.heartbeats.labels("applied" if applied else "stale").inc()
        if applied:
            self._pump()

    def _refuse(self, reason: str, substation_id: str, now: float) -> None:
        self.metrics.heartbeats.labels(reason).inc()
        self._refusals.refused(reason, substation_id, now, HINTS[reason])

    def _admit(self, hb: Heartbeat, now: float) -> None:
        """A heartbeat of a substation the table does not hold: admit it once its queue is
        seen to exist (a probe, creating nothing), within the admission rate and the table's
        bound. Until then it is not eligible: an assignment to it would only come back."""
        sid = hb.substation_id
        if sid in self._probing:
            self._probing[sid] = hb  # the probe under way applies the latest
            return
        retry_at = self._no_queue.get(sid)
        if retry_at is not None and now < retry_at:
            self._refuse("no_queue", sid, now)
            return
        if len(self.table) + len(self._probing) >= self.settings.max_substations:
            self._refuse("full", sid, now)
            return
        if self._admissions.take(now) > 0:
            self._refuse("rate", sid, now)
            return
        session = self.link.session
        if session is None:
            return
        self._probing[sid] = hb
        self._spawn(self._probe(session, sid))

    async def _queue_depth(self, session: BrokerSession, sid: str) -> int | None:
        """Ready messages in ``sid``'s queue, or None if it has none; creates nothing.
        Raises TimeoutError after PROBE_TIMEOUT_S."""
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            return await session.queue_exists(self.topology.substation_queue(sid))

    async def _probe(self, session: BrokerSession, sid: str) -> None:
        try:
            depth = await self._queue_depth(session, sid)
        except (BrokerUnavailable, TimeoutError) as exc:
            self._probing.pop(sid, None)  # probed again when next heard
            log.debug("probe of substation %s's queue failed: %s", sid, exc)
            return
        hb = self._probing.pop(sid, None)
        now = self.clock()
        if depth is None:
            self._no_queue[sid] = now + NO_QUEUE_RECHECK_S
            self._no_queue.move_to_end(sid)
            while len(self._no_queue) > NO_QUEUE_REMEMBERED:
                self._no_queue.popitem(last=False)
            self._refuse("no_queue", sid, now)
            return
        self._no_queue.pop(sid, None)
        if hb is None or session is not self.link.session or self.table.get(sid) is not None:
            return
        self.table.observe(hb, now)
        self.metrics.heartbeats.labels("applied").inc()
        log.info("substation %s admitted: %.0f kW, %d bays", sid, hb.capacity_kw, hb.bays)
        self._pump()

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_request(self, delivery: Delivery) -> None:
        session = delivery.session
        limit = self.settings.max_request_bytes
        if len(delivery.body) > limit:
            reason = f"larger than {limit} bytes (SMARTGRID_MAX_REQUEST_BYTES)"
            self._reject_request(delivery, reason, EventKind.DEAD_LETTERED)
            return
        try:
            request = ChargeRequest.model_validate_json(delivery.body)
        except ValidationError as exc:
            reason = f"invalid ChargeRequest: {summary(exc)}"
            self._reject_request(delivery, reason, EventKind.DEAD_LETTERED)
            return
        except Exception as exc:  # it would fail the same way on every redelivery
            reason = f"unreadable ChargeRequest: {type(exc).__name__}"
            self._reject_request(delivery, reason, EventKind.DEAD_LETTERED)
            return
        if "request_id" not in request.model_fields_set:
            # A client that sent no id: one that every redelivery of this message shares.
            request = request.model_copy(
                update={
                    "request_id": derived_request_id(delivery.body, delivery.properties.message_id)
                }
            )
        held = _Held(delivery, request, self.clock(), delivery.delivery_count + 1)
        seen = self.ledger.seen(held.key, held.fingerprint)
        if seen != "new":
            if seen == "conflict":
                reason = (
                    f"conflict: request_id {request.request_id} came before with another "
                    "vehicle, energy, power, departure or priority; this copy is not dispatched"
                )
                self.metrics.conflicts.inc()
                self._reject_request(delivery, reason, EventKind.REJECTED, request.request_id)
                return
            # Held or in flight here, or its assignment confirmed: a second one is not needed.
            self.metrics.duplicates.inc()
            delivery.ack()
            return
        if self._following_intents:
            self._stop_following_intents(session)
        self.ledger.hold(held.key, held.fingerprint)
        self.held.append(held)
        self._pump_soon()

    def _reject_request(
        self,
        delivery: Delivery,
        reason: str,
        kind: EventKind,
        request_id: UUID | None = None,
    ) -> None:
        """Move a request to <ns>.dead with ``reason`` (acked once that is confirmed), and tell
        its sender, if its request_id can be read, with a ``kind`` event."""
        session = delivery.session
        log.warning("dead-lettering message %s: %s", delivery.properties.message_id, reason)
        try:
            dead_letter(session, self.topology, delivery, reason, self.topology.requests_queue)
        except BrokerUnavailable:
            return  # the session is gone: the broker requeued it
        self.metrics.dead_lettered.inc()
        request_id = request_id or readable_request_id(delivery.body)
        if request_id is not None:
            event = ChargeEvent(request_id=request_id, kind=kind, reason=reason[:2000])
            publish_event(session, self.topology, event)

    def _stop_following_intents(self, session: BrokerSession) -> None:
        """Requests arrive here: this dispatcher is the active one (single active consumer) until
        its connection ends. Other dispatchers' intents only matter to a standby, and its own
        would come back to it at the broker's cost and its own, once per request: unbind them.
        What the queue already holds is still read; the next connection binds again."""
        self._following_intents = False

        async def unbind() -> None:
            with contextlib.suppress(BrokerUnavailable):
                for binding in self._intents_bindings():
                    await session.unbind(binding)
            log.info("active: no longer following other dispatchers' intents")

        self._spawn(unbind())

    def _intents_bindings(self) -> list[BindingSpec]:
        """DispatchIntents, and per-request dispatch events (SMARTGRID_DISPATCH_EVENTS): a
        standby follows both, so that it understands an active dispatcher that announces
        either way (as one does during a rolling upgrade)."""
        t = self.topology
        keys = [t.intent_routing_key, *map(t.event_routing_key, _DISPATCH_KINDS)]
        return [BindingSpec(self.events_queue, t.events_exchange, k) for k in keys]

    def _on_intent(self, delivery: Delivery) -> None:
        """Another dispatcher's intent: where it sends (or sent) a batch of requests."""
        if delivery.properties.app_id == self.instance:
            # Our own, coming back: _assign remembered its routes already (before announcing).
            return
        routes: list[tuple[UUID, str]]
        try:  # whatever reading it raises, it says nothing to follow
            if delivery.routing_key == self.topology.intent_routing_key:
                intent = DispatchIntent.model_validate_json(delivery.body)
                routes = [(r.request_id, r.substation_id) for r in intent.routes]
            else:
                event = ChargeEvent.model_validate_json(delivery.body)
                if event.substation_id is None:
                    return
                routes = [(event.request_id, event.substation_id)]
        except ValidationError as exc:
            log.warning("ignoring an invalid dispatch intent: %s", summary(exc))
            return
        except Exception as exc:
            log.warning("ignoring an unreadable dispatch intent: %s", type(exc).__name__)
            return
        for request_id, sid in routes:
            self.ledger.followed(request_id.int, sid)

    # -- taking work back from substations that are gone ---------------------------------------

    def _silent(self, s: SubstationState, now: float) -> bool:
        """``s`` said nothing for its stale window while this dispatcher could hear it."""
        return is_silent(s, now, self._connected_at, self.table.stale_after_intervals)

    def _should_reclaim(self, now: float) -> set[str]:
        if self._connected_at is None:
            return set()
        # A substation whose sessions outlive its worker (cars on OCPP stations) keeps its
        # queue: what waits there may be a car charging, which its next worker picks up again;
        # taking it back would start that car a second time elsewhere.
        return {
            s.substation_id
            for s in self.table
            if s.status != "refused"
            and not s.keeps_sessions
            and (s.status == "draining" or self._silent(s, now))
        }

    async def _sync_reclaims(self, session: BrokerSession, now: float) -> None:
        """Consume the queues of stale or draining substations; stop once they are back."""
        wanted = self._should_reclaim(now)
        for sid in sorted(wanted - set(self._reclaiming)):
            # Only a queue that exists is taken back: declaring one would create queues for
            # whatever ids heartbeats claim. One that is gone holds nothing to take back.
            if await self._queue_depth(session, sid) is None:
                self.table.forget(sid)
                log.warning("substation %s is stale or draining and has no queue: forgotten", sid)
                continue
            self._reclaiming[sid] = await session.consume(
                self.topology.substation_queue(sid), functools.partial(self._on_reclaimed, sid)
            )
            log.warning("substation %s is stale or draining: taking back its queue", sid)
        for sid in sorted(set(self._reclaiming) - wanted):
            tag = self._reclaiming.pop(sid)
            await session.cancel(tag)
            log.info("substation %s is back: no longer taking back its queue", sid)

    def _forget_after(self, s: SubstationState) -> float:
        """How long a silent substation stays in the table: never less than twice its stale
        window, so that it is taken back before it could be forgotten."""
        window = self.table.stale_after_intervals * s.interval_s
        return max(self.settings.forget_after_s, 2 * window)

    async def _forget_silent(self, session: BrokerSession, now: float) -> None:
        """Drop substations silent (while this dispatcher could hear them) for their forget
        time, but never one whose queue still holds work: that work would sit in a queue
        nobody consumes (its reclaim ends with it)."""
        connected_at = self._connected_at
        if connected_at is None:
            return
        for s in list(self.table):
            sid = s.substation_id
            if now - max(s.last_seen, connected_at) <= self._forget_after(s):
                continue
            if any(h.reclaimed_from == sid for h in self.held):
                continue
            if await self._queue_depth(session, sid):
                continue  # taken back meanwhile (or about to be)
            tag = self._reclaiming.pop(sid, None)
            if tag is not None:
                await session.cancel(tag)
            self.table.forget(sid)
            log.info("substation %s silent for %.0f s: forgotten", sid, now - s.last_seen)

    def _on_reclaimed(self, sid: str, delivery: Delivery) -> None:
        try:
            assignment = Assignment.model_validate_json(delivery.body)
        except Exception as exc:  # whatever reading it raises, it would raise again
            detail = summary(exc) if isinstance(exc, ValidationError) else type(exc).__name__
            reason = f"invalid Assignment: {detail}"
            with contextlib.suppress(BrokerUnavailable):
                dead_letter(delivery.session, self.topology, delivery, reason, sid)
                self.metrics.dead_lettered.inc()
            return
        self.metrics.reclaimed.labels(sid).inc()
        # Oldest work first: it waited at a substation that will not serve it.
        self.held.appendleft(
            _Held(
                delivery,
                assignment.request,
                self.clock(),
                attempt=assignment.attempt + 1,
                reclaimed_from=sid,
            )
        )
        self._pump()

    # -- dispatching -------------------------------------------------------------------------

    def _pump_soon(self) -> None:
        """Pump once at the end of this loop turn, for every request delivered during it."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _pump(self) -> None:
        """Dispatch held requests in arrival order until the policy holds."""
        session = self.link.session
        if session is None or not self.held:
            self.metrics.held.set(len(self.held))
            return
        now = self.clock()
        dispatched_at = utcnow()  # one clock read for the batch (it costs more than a decision)
        choose = decider(self.policy, self.table, now)
        batch: list[tuple[_Held, Assignment]] = []
        deferred: list[_Held] = []
        # Set once the policy held a request: from then on only requests with a departure
        # are decided (``dispatcher.held``), the others keep their place behind it.
        blocked = False
        while self.held:
            head = self.held[0]
            if not head.delivery.session.is_open:  # from a connection that is gone
                self.held.popleft()
                continue
            if blocked and head.request.departure is None:
                if not self.held.dated:
                    break
                deferred.append(self.held.popleft())
                continue
            route = self.ledger.route(head.key)
            # Where a copy may already be: sent there again, its worker drops one of the two.
            target = None if route is None else route[0]
            step = "choose" if target is None else self._resend_rule(target, now)
            dated = head.request.departure is not None
            kw = head.request.max_power_kw
            if dated:
                kw = promised_kw(head.request, dispatched_at, self.table.slowest_time_scale)
            if step == "resend":
                self.metrics.resent.inc()
            elif step == "defer":
                deferred.append(self.held.popleft())
                continue
            elif dated:
                target = self._choose_dated(choose, kw, now, head.request, dispatched_at)
            elif self._decisions % DECISION_SAMPLE:
                self._decisions += 1
                target = choose(kw)
            else:
                self._decisions += 1
                started = time.perf_counter()
                target = choose(kw)
                self.metrics.decision_seconds.observe(time.perf_counter() - started)
            if target is None:
                # Nothing eligible at all (a request with a departure is never held for
                # power), or none with a departure waits behind: nothing more goes now.
                if dated or not self.held.dated:
                    break
                blocked = True
                deferred.append(self.held.popleft())
                continue
            self.held.popleft()
            batch.append(self._assign(head, target, now, dispatched_at, kw))
            if len(batch) == MAX_INTENT_ROUTES:
                self._announce(session, batch)
                batch = []
        if batch:
            self._announce(session, batch)
        self.held.extendleft(reversed(deferred))
        self.metrics.held.set(len(self.held))
        if self.held:
            self._wake_at_next_release(now)

    def _choose_dated(
        self,
        choose: Callable[[float], str | None],
        kw: float,
        now: float,
        request: ChargeRequest,
        dispatched_at: datetime,
    ) -> str | None:
        """Where a car with a departure goes, promised ``kw`` (``dispatcher.deadlines``): under
        headroom, of the least promised substation of each capacity and the least promised
        counting the need in full (a smaller one cannot meet more than its capacity), those
        where that need still fits if any, the one where it can count on the most energy by
        its departure from what the plans leave spare (``dispatcher.spare.most_energy``), ties
        to the least promised; under another policy, its pick. Never held: holding it would
        only run its time out."""
        if self.policy.name != "headroom":
            target = choose(kw)
            if target is not None:
                return target
        found = self.table.least_promised(now, kw, whole=True)
        if found is None:
            return None
        assert request.departure is not None
        best = most_energy(
            shortlist(self.table.tops(now), found[0], kw),
            request.energy_kwh,
            request.max_power_kw,
            kw,
            (request.departure - dispatched_at).total_seconds(),
            now,
            self.table.slowest_time_scale,
        )
        return found[0].substation_id if best is None else best.substation_id

    def _resend_rule(self, substation_id: str, now: float) -> Step:
        """Where a copy of the request may wait (``substation_id``): send it there again,
        wait, or choose anew (``ledger.resend_rule``)."""
        s = self.table.get(substation_id)
        return resend_rule(s, s is not None and self._silent(s, now))

    def _wake_at_next_release(self, now: float) -> None:
        """Retry the held requests when the next predicted release is due, not only at the
        next heartbeat: capacity freed in between is used at once."""
        due = self.table.next_release()
        if due is None:
            return
        if self._wake is not None and now <= self._wake_at <= due:
            return  # a retry comes by then anyway
        if self._wake is not None:
            self._wake.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the event loop (a unit test): the heartbeats retry
            return
        self._wake_at = due
        # A millisecond past due: the table frees what is due by its clock's now.
        self._wake = loop.call_later(max(0.0, due - now) + 0.001, self._woken)

    def _woken(self) -> None:
        self._wake = None
        self._pump()

    def _assign(
        self, held: _Held, target: str, now: float, dispatched_at: datetime, kw: float
    ) -> tuple[_Held, Assignment]:
        """The assignment of ``held`` to ``target``, counted in the table (``kw`` promised:
        ``deadlines.promised_kw``) and remembered."""
        state = self.table.get(target)
        assert state is not None
        request = held.request
        # One validation of a dict: cheaper than building the model and its snapshot apart.
        assignment = Assignment.model_validate(
            {
                "request": request,
                "substation_id": target,
                "dispatched_at": dispatched_at,
                "snapshot": state.snapshot(now),
                "policy": self.policy.name,
                "attempt": held.attempt,
            }
        )
        kw = min(kw, state.capacity_kw)
        leaves_at = None
        if request.departure is not None:
            leaves_at = now + (request.departure - dispatched_at).total_seconds()
        end = self.table.record_assignment(
            target, kw, energy_kwh=request.energy_kwh, now=now, leaves_at=leaves_at
        )
        held.recorded = (kw, end)
        self.ledger.assigned(held.key, target, held.fingerprint)
        return held, assignment

    def _announce(self, session: BrokerSession, batch: list[tuple[_Held, Assignment]]) -> None:
        """Announce the batch's intent (confirmed), then publish each assignment (confirmed),
        then ack each request.

        The announcement comes first so that a standby taking over after a crash anywhere in
        between knows where a copy of each request may be, and sends it there again. One per
        batch: it costs the broker and this process one publish per pump, not per request.
        """
        routes = [
            {
                "request_id": a.request.request_id,
                "substation_id": a.substation_id,
                "kind": _dispatch_kind(a.attempt),
                "attempt": a.attempt,
            }
            for _, a in batch
        ]
        intent = DispatchIntent.model_validate({"dispatcher": self.instance, "routes": routes})
        try:
            announce_intent(
                session, self.topology, intent, functools.partial(self._announced, session, batch)
            )
        except BrokerUnavailable:
            return  # the session is gone; the requests are redelivered after reconnect
        # In flight until confirmed or refused (a refusal puts the request back in held).
        self.inflight += len(batch)
        self._idle.clear()

    def _announced(
        self,
        session: BrokerSession,
        batch: list[tuple[_Held, Assignment]],
        exc: BaseException | None,
    ) -> None:
        for held, assignment in batch:
            if exc is None:
                try:
                    session.publish_then(
                        functools.partial(self._confirmed, held, assignment),
                        self._substations_exchange,
                        assignment.substation_id,
                        assignment.model_dump_json().encode(),
                        message_id=str(held.request.request_id),
                    )
                    continue
                except BrokerUnavailable as gone:
                    exc = gone
                self._failed(held, assignment, exc)
            else:
                # The intent was not taken: no substation is to blame, and dispatching again
                # at once could only spin; the next heartbeat or predicted release retries.
                self._failed(held, assignment, exc, substation_refused=False)

    def _failed(
        self,
        held: _Held,
        assignment: Assignment,
        exc: BaseException,
        *,
        substation_refused: bool = True,
    ) -> None:
        """The broker did not take an assignment (or its batch's intent). The request stays
        held here and is dispatched again: a nack with requeue would cost it one of the
        delivery limit's deliveries, and after 20 the broker would dead-letter it."""
        self._settled()
        sid = assignment.substation_id
        self.metrics.republish_failures.labels(type(exc).__name__).inc()
        if held.recorded is not None:
            self.table.unrecord_assignment(sid, held.recorded)
            held.recorded = None
        if isinstance(exc, BrokerUnavailable) or not held.delivery.session.is_open:
            return  # the session is gone: the broker requeued the request (_lost cleared held)
        if not substation_refused:
            log.warning("intent not confirmed (%s); dispatching again later", exc)
            self.held.appendleft(held)
            return
        if isinstance(exc, PublishReturned):
            # No queue is bound for it, so no copy waits there: it leaves the table until a
            # heartbeat after its queue exists (admission probes it).
            self.ledger.returned(held.key, sid)
            if self.table.get(sid) is not None:
                self.table.forget(sid)
                log.warning("substation %s: assignment returned unroutable; out until its "
                            "queue exists", sid)  # fmt: skip
        else:
            state = self.table.get(sid)
            if state is not None:
                state.status = "refused"  # until its next heartbeat
            log.warning("assignment to %s not confirmed (%s); dispatching it again", sid, exc)
        self.held.appendleft(held)
        self._pump_soon()

    def _settled(self) -> None:
        self.inflight = max(0, self.inflight - 1)
        if self.inflight == 0:
            self._idle.set()

    def _confirmed(self, held: _Held, assignment: Assignment, exc: BaseException | None) -> None:
        if exc is not None:
            self._failed(held, assignment, exc)
            return
        self._settled()
        sid = assignment.substation_id
        self.ledger.confirmed(held.key, sid, held.fingerprint)
        self._confirms += 1
        if self._confirms == self.settings.fault_exit_after_confirms:
            log.error("fault injection: exiting between a confirm and its ack")
            os._exit(137)
        held.delivery.ack()
        decided = self._decided.get(sid)
        if decided is None:
            decided = self._decided[sid] = self.metrics.decisions.labels(sid, self.policy.name)
        decided.inc()
        self.metrics.dispatch_seconds.observe(self.clock() - held.received)
        if self.settings.dispatch_events:
            event = ChargeEvent(
                request_id=held.request.request_id,
                kind=EventKind(_dispatch_kind(assignment.attempt)),
                substation_id=sid,
                attempt=assignment.attempt,
            )
            publish_event(held.delivery.session, self.topology, event)

    # -- dead letters the broker made -----------------------------------------------------------

    def _on_dead_letter(self, delivery: Delivery) -> None:
        """A copy of a dead letter: announce it if the broker dead-lettered it by itself."""
        told = announcement(self.topology, delivery.headers, delivery.body)
        if told is None:
            delivery.ack()  # dead-lettered by smartgrid, which announced it then
            return
        reason, event = told
        self.metrics.broker_dead_letters.labels(reason_label(reason)).inc()
        if event is None:
            log.warning("the broker dead-lettered a message without a readable request_id (%s)",
                        reason)  # fmt: skip
            delivery.ack()
            return
        log.warning("request %s: %s", event.request_id, event.reason)
        try:
            fut = publish_event_confirmed(delivery.session, self.topology, event)
        except BrokerUnavailable:
            return  # requeued with the session; announced after the reconnect
        ack_once_confirmed(delivery, fut, "announcing a dead letter")


def _dispatch_kind(attempt: int) -> str:
    """A first dispatch, or a later one (a reclaimed assignment always has attempt > 1)."""
    return EventKind.DISPATCHED.value if attempt == 1 else EventKind.REDISPATCHED.value


def build_dispatcher(settings: DispatcherSettings, registry: CollectorRegistry) -> Dispatcher:
    rng = random.Random(settings.seed)
    metrics = DispatcherMetrics(registry)
    return Dispatcher(settings, make_policy(settings.policy, rng, settings.hold_factor), metrics)
