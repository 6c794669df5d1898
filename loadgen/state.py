"""What loadgen knows about a grid, built from heartbeats, events and ingress results.

Pure: no I/O, no clock (times are passed in). Events are at-least-once, so requests are counted
by distinct ``request_id``, and a completion said again with its ``event_id`` counts once.
Anyone who can publish to the grid's exchanges can lie to loadgen, so what it believes is
guarded:

* a completion of a request loadgen never saw dispatched, or a second completion with another
  energy than the first, is *suspect*: counted apart, never as completed nor as a duplicate;
* a second completion with the same energy and its own ``event_id`` is a duplicate charge;
* a run (``own_only``) ignores events of requests it did not send, counting them as foreign;
* at most ``max_substations`` substations are tracked; heartbeats of others are counted and
  dropped, and the load history is thinned out rather than allowed to grow without bound.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from contracts import ChargeEvent, EventKind, Heartbeat

# A request that failed in one of these ways will not change any more.
FAILED = (EventKind.DEAD_LETTERED, EventKind.REJECTED)
DISPATCH_KINDS = (EventKind.DISPATCHED, EventKind.REDISPATCHED)
# Heartbeats older than this many of their intervals mark the substation stale (as the
# dispatcher does).
STALE_AFTER_INTERVALS = 3.0
# What the ingress answers when the broker took a request: the gateway's 202, or a publisher
# confirm for a request loadgen published itself.
CONFIRMED = "confirmed"
ACCEPTED_STATUSES = frozenset({"202", CONFIRMED})
# Substations a live view or the printed report shows at most, the busiest (an option).
DEFAULT_TOP = 20
# Far more substations than a grid loadgen drives; beyond it, heartbeats are counted, not kept.
MAX_SUBSTATIONS = 1000
# Load samples kept for the plot; beyond it every other one is dropped (the span stays whole).
MAX_HISTORY = 100_000
# Completed energies this close are the same charge said again, not another one.
ENERGY_TOLERANCE_KWH = 1e-6


HELD, QUEUED, CHARGING = "held", "queued", "charging"


@dataclass(frozen=True, order=True)
class Place:
    """Where in the grid a request waits: ``held`` in ``<ns>.requests`` (substation_id None),
    ``queued`` at a substation (its queue, or waiting for a bay) or ``charging`` at it."""

    stage: str
    substation_id: str | None = None

    def label(self, requests_queue: str = "<ns>.requests") -> str:
        if self.substation_id is None:
            return f"held in {requests_queue}"
        return f"{self.stage} at {self.substation_id}"


def _keep_latest(
    places: dict[UUID, tuple[datetime, str]], rid: UUID, at: datetime, substation_id: str
) -> None:
    known = places.get(rid)
    if known is None or at >= known[0]:
        places[rid] = (at, substation_id)


@dataclass
class SubstationView:
    heartbeat: Heartbeat
    peak_utilization: float = 0.0
    utilization_sum: float = 0.0
    heartbeats: int = 0

    @property
    def utilization(self) -> float:
        return self.heartbeat.load_kw / self.heartbeat.capacity_kw

    @property
    def mean_utilization(self) -> float:
        return self.utilization_sum / self.heartbeats if self.heartbeats else 0.0

    def age_s(self, now: datetime) -> float:
        return max(0.0, (now - self.heartbeat.sent_at).total_seconds())

    def status(self, now: datetime) -> str:
        if self.age_s(now) > STALE_AFTER_INTERVALS * self.heartbeat.interval_s:
            return "stale"
        return self.heartbeat.status


@dataclass(frozen=True)
class LoadSample:
    at: datetime
    substation_id: str
    load_kw: float
    capacity_kw: float


@dataclass(frozen=True)
class Demand:
    """What a completion said of the request's demand: the energy it asked for and whether it
    got all of it (None from a worker that does not say)."""

    requested_kwh: float | None
    met: bool | None


@dataclass(frozen=True)
class EnergyTotals:
    requested_kwh: float
    delivered_kwh: float
    demands: int
    demands_met: int


@dataclass(frozen=True)
class ReportRow:
    substation_id: str
    capacity_kw: float
    requests: int
    energy_kwh: float  # delivered
    energy_share: float
    capacity_share: float
    peak_utilization: float
    mean_utilization: float
    energy_requested_kwh: float = 0.0
    demands: int = 0  # completions that said whether their demand was met
    demands_met: int = 0


@dataclass
class GridState:
    """Everything a run saw. ``keep_history`` records every heartbeat's load (for plots);
    ``own_only`` keeps only the events of requests recorded with ``on_sent``."""

    keep_history: bool = False
    own_only: bool = False
    max_substations: int = MAX_SUBSTATIONS
    substations: dict[str, SubstationView] = field(default_factory=dict)
    history: list[LoadSample] = field(default_factory=list)
    sent: int = 0
    sent_at: dict[UUID, datetime] = field(default_factory=dict)
    accepted: set[UUID] = field(default_factory=set)
    accepted_at: dict[UUID, datetime] = field(default_factory=dict)
    # How the ingress answered: HTTP status as text ("202" = accepted) or an error's name.
    ingress_statuses: Counter[str] = field(default_factory=Counter)
    by_kind: dict[EventKind, set[UUID]] = field(
        default_factory=lambda: {k: set() for k in EventKind}
    )
    # The first time each request reached each kind, as the event says.
    first_at: dict[UUID, dict[EventKind, datetime]] = field(default_factory=dict)
    # request id -> (substation, energy delivered) of its first completion
    completions: dict[UUID, tuple[str | None, float]] = field(default_factory=dict)
    # request id -> what its first completion said of its demand
    demands: dict[UUID, Demand] = field(default_factory=dict)
    # request id -> event ids of its completions: one per charging session (a completion event
    # said again after a lost ack keeps its event_id and is not a second charge)
    completion_events: dict[UUID, set[UUID]] = field(default_factory=dict)
    # request id -> event ids of its suspect completions (see the module docstring)
    suspects: dict[UUID, set[UUID]] = field(default_factory=dict)
    failure_reasons: dict[UUID, str] = field(default_factory=dict)
    # request id -> (when, substation) of its latest dispatch (or redispatch) and start, as the
    # events say: where an unfinished request waits (``place``).
    routed: dict[UUID, tuple[datetime, str]] = field(default_factory=dict)
    started: dict[UUID, tuple[datetime, str]] = field(default_factory=dict)
    # Substations this run's requests were dispatched to or completed at (kept in every view).
    involved: set[str] = field(default_factory=set)
    invalid_messages: int = 0
    foreign_events: int = 0
    ignored_heartbeats: int = 0

    # -- updates ---------------------------------------------------------------------------

    @property
    def substations_full(self) -> bool:
        return len(self.substations) >= self.max_substations

    def on_heartbeat(self, hb: Heartbeat) -> None:
        view = self.substations.get(hb.substation_id)
        if view is None:
            if self.substations_full:
                self.ignored_heartbeats += 1
                return
            view = self.substations[hb.substation_id] = SubstationView(hb)
        elif hb.seq < view.heartbeat.seq and hb.sent_at <= view.heartbeat.sent_at:
            return  # an older heartbeat overtaken by a newer one
        view.heartbeat = hb
        view.peak_utilization = max(view.peak_utilization, view.utilization)
        view.utilization_sum += view.utilization
        view.heartbeats += 1
        if self.keep_history:
            if len(self.history) >= MAX_HISTORY:
                del self.history[::2]
            self.history.append(
                LoadSample(hb.sent_at, hb.substation_id, hb.load_kw, hb.capacity_kw)
            )

    def prune(self, now: datetime) -> int:
        """Forget stale substations that none of this run's requests went to, to make room
        for live ones once the table is full; returns how many were forgotten."""
        gone = [
            sid
            for sid, view in self.substations.items()
            if sid not in self.involved and view.status(now) == "stale"
        ]
        for sid in gone:
            del self.substations[sid]
        return len(gone)

    def on_event(self, ev: ChargeEvent) -> None:
        if self.own_only and ev.request_id not in self.sent_at:
            self.foreign_events += 1
            return
        if ev.kind is EventKind.COMPLETED and not self._on_completed(ev):
            return
        self.by_kind[ev.kind].add(ev.request_id)
        times = self.first_at.setdefault(ev.request_id, {})
        if ev.kind not in times or ev.at < times[ev.kind]:
            times[ev.kind] = ev.at
        if ev.kind in DISPATCH_KINDS and ev.substation_id:
            self._involve(ev.substation_id)
            _keep_latest(self.routed, ev.request_id, ev.at, ev.substation_id)
        elif ev.kind is EventKind.STARTED and ev.substation_id:
            _keep_latest(self.started, ev.request_id, ev.at, ev.substation_id)
        elif ev.kind in FAILED:
            self.failure_reasons.setdefault(ev.request_id, ev.reason or ev.kind.value)

    def _on_completed(self, ev: ChargeEvent) -> bool:
        """Record a completion; False if it is not to be believed (a repeat or a suspect)."""
        rid, energy = ev.request_id, ev.energy_kwh or 0.0
        charges = self.completion_events.get(rid)
        suspects = self.suspects.get(rid, set())
        if (charges is not None and ev.event_id in charges) or ev.event_id in suspects:
            return False  # the same event delivered again
        # A worker completes only what a dispatcher sent it, and a dispatcher announces where
        # it sends a request before the assignment exists: no dispatch seen, no charge.
        dispatched = any(rid in self.by_kind[k] for k in DISPATCH_KINDS)
        first = self.completions.get(rid)
        if not dispatched or (first is not None and abs(first[1] - energy) > ENERGY_TOLERANCE_KWH):
            self.suspects.setdefault(rid, set()).add(ev.event_id)
            return False
        if charges is None:
            self.completions[rid] = (ev.substation_id, energy)
            self.demands[rid] = Demand(ev.energy_requested_kwh, ev.demand_met)
            self.completion_events[rid] = {ev.event_id}
            if ev.substation_id:
                self._involve(ev.substation_id)
        else:
            charges.add(ev.event_id)  # the same charge again under a new id: a double charge
        return True

    def _involve(self, substation_id: str) -> None:
        if substation_id in self.involved or len(self.involved) < self.max_substations:
            self.involved.add(substation_id)

    def on_sent(self, request_id: UUID, at: datetime) -> None:
        self.sent += 1
        self.sent_at[request_id] = at

    def on_ingress_result(self, request_id: UUID, status: str, at: datetime) -> None:
        """``status``: an HTTP code as text, ``confirmed``, or a short error name."""
        self.ingress_statuses[status] += 1
        if status in ACCEPTED_STATUSES:
            self.accepted.add(request_id)
            self.accepted_at[request_id] = at

    # -- questions -------------------------------------------------------------------------

    def count(self, kind: EventKind) -> int:
        return len(self.by_kind[kind])

    @property
    def answered(self) -> int:
        return sum(self.ingress_statuses.values())

    @property
    def in_flight(self) -> int:
        """Sent and not yet answered by the gateway (or the broker's confirm)."""
        return self.sent - self.answered

    @property
    def accepted_completed(self) -> int:
        return len(self.accepted & self.by_kind[EventKind.COMPLETED])

    def accepted_failed(self) -> set[UUID]:
        """Accepted, then explicitly rejected or dead-lettered downstream (and not completed)."""
        failed: set[UUID] = set().union(*(self.by_kind[k] for k in FAILED))
        return (self.accepted & failed) - self.by_kind[EventKind.COMPLETED]

    def lost(self) -> set[UUID]:
        """Accepted, and neither completed nor explicitly rejected (so far). A suspect
        completion does not count: a request only said to be done may still wait somewhere."""
        return self.accepted - self.by_kind[EventKind.COMPLETED] - self.accepted_failed()

    def place(self, request_id: UUID) -> Place:
        """Where a request not yet finished waits, as far as its events tell: charging where it
        last started (unless dispatched elsewhere since), else queued where it was last
        dispatched, else held in ``<ns>.requests`` (never seen dispatched)."""
        routed, started = self.routed.get(request_id), self.started.get(request_id)
        if started is not None and (routed is None or started[0] >= routed[0]):
            return Place(CHARGING, started[1])
        if routed is not None:
            return Place(QUEUED, routed[1])
        return Place(HELD)

    @property
    def duplicates(self) -> int:
        """Completions beyond the first of a request: a request charged more than once."""
        own = self.own_completions()
        return sum(len(ids) - 1 for r, ids in self.completion_events.items() if r in own)

    def suspect_requests(self) -> set[UUID]:
        """This run's requests with a completion not to be believed."""
        return {r for r in self.suspects if self._own(r)}

    @property
    def suspect(self) -> int:
        """Suspect completions (distinct events) of this run's requests."""
        return sum(len(self.suspects[r]) for r in self.suspect_requests())

    def all_accepted_settled(self) -> bool:
        """Every accepted request reached a state it will not leave (completed or failed)."""
        return not self.lost()

    def _own(self, request_id: UUID) -> bool:
        return not self.sent_at or request_id in self.sent_at

    def own_completions(self) -> dict[UUID, tuple[str | None, float]]:
        """Completions of the requests this run sent (all, if it only watched): another client
        of the same grid, or a straggler of an earlier run, is not this run's work."""
        if not self.sent_at:
            return self.completions
        return {r: c for r, c in self.completions.items() if r in self.sent_at}

    def energy(self) -> EnergyTotals:
        """Energy and demands over this run's completions (``own_completions``)."""
        completions = self.own_completions()
        said = [d for r in completions if (d := self.demands.get(r)) and d.met is not None]
        return EnergyTotals(
            requested_kwh=math.fsum(d.requested_kwh or 0.0 for d in said),
            delivered_kwh=math.fsum(kwh for _, kwh in completions.values()),
            demands=len(said),
            demands_met=sum(1 for d in said if d.met),
        )

    def busiest(self, limit: int, now: datetime) -> tuple[list[str], int]:
        """The ``limit`` substations most worth showing, by id, and how many others there are:
        those this run uses first, then live ones, each by utilization."""

        def rank(sid: str) -> tuple[bool, bool, float, str]:
            view = self.substations[sid]
            return (sid in self.involved, view.status(now) != "stale", view.utilization, sid)

        shown = heapq.nlargest(max(limit, 0), self.substations, key=rank)
        return sorted(shown), len(self.substations) - len(shown)

    def report(self, order: list[str] | None = None, limit: int | None = None) -> list[ReportRow]:
        """One row per substation (``order`` first, then the others by id), completed work only.

        Beyond ``limit`` substations, only those in ``order``, sent to or completed at are
        listed: a crowd of others that did none of this run's work (such as heartbeats of
        made-up ids) is left out (``not_listed`` counts them)."""
        completions = self.own_completions()
        worked = {s for s, _ in completions.values() if s}
        seen = {*self.substations, *worked}
        if limit is not None and len(seen) > limit:
            seen &= {*(order or []), *self.involved, *worked}
        ids = list(order or [])
        ids += sorted(seen - set(ids))
        requests: Counter[str] = Counter()
        demands: Counter[str] = Counter()
        met: Counter[str] = Counter()
        energy: dict[str, float] = defaultdict(float)
        requested: dict[str, float] = defaultdict(float)
        for rid, (sid, kwh) in completions.items():
            if sid is not None:
                requests[sid] += 1
                energy[sid] += kwh
                demand = self.demands.get(rid)
                if demand is not None and demand.met is not None:
                    demands[sid] += 1
                    met[sid] += demand.met
                    requested[sid] += demand.requested_kwh or 0.0
        views = {sid: self.substations.get(sid) for sid in ids}
        capacity = {sid: (v.heartbeat.capacity_kw if v else 0.0) for sid, v in views.items()}
        total_energy = sum(energy.values())
        total_capacity = sum(capacity.values())
        return [
            ReportRow(
                substation_id=sid,
                capacity_kw=capacity[sid],
                requests=requests[sid],
                energy_kwh=energy[sid],
                energy_share=energy[sid] / total_energy if total_energy else 0.0,
                capacity_share=capacity[sid] / total_capacity if total_capacity else 0.0,
                peak_utilization=v.peak_utilization if v else 0.0,
                mean_utilization=v.mean_utilization if v else 0.0,
                energy_requested_kwh=requested[sid],
                demands=demands[sid],
                demands_met=met[sid],
            )
            for sid, v in views.items()
        ]

    def not_listed(self, rows: list[ReportRow]) -> int:
        """Tracked substations that ``rows`` leaves out."""
        return len(self.substations.keys() - {r.substation_id for r in rows})
