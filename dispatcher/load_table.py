"""The dispatcher's picture of every substation, built from heartbeats. Pure: time is passed in.

Heartbeats are stale by up to one interval. To keep a burst from herding onto the substation that
looked emptiest at its last heartbeat, the table also counts what this dispatcher assigned to each
substation since that heartbeat (``pending_*``). A new heartbeat supersedes those counts for what
it says the worker has received (``Heartbeat.assignments_received``, oldest first: one queue
delivers in order); the rest is still on its way (in the broker, or queued behind busy bays), not
in the heartbeat's ``committed_kw``, and stays pending.

Between heartbeats the table also learns when capacity frees up: a heartbeat may carry the
worker's predicted releases (``Heartbeat.releases``: sessions that will have ended by a time
after it was sent, and their committed power). From that time on (counted from when the
heartbeat arrived, so late rather than early) the table takes their power and sessions off
the substation's ``committed_kw`` and ``active_sessions``, so that a policy holding at 1 x
capacity need not wait for the next heartbeat to use what freed up. Pending assignments still
count in full. ``release_due(now)`` applies what is due (``eligible`` and ``least_promised`` do
it themselves); ``next_release()`` is when the picture changes next, for a dispatcher holding
requests to retry then.

``least_promised`` answers headroom's question from an index (``dispatcher.promise_index``)
in O(log n) instead of a scan of every substation.
"""

from __future__ import annotations

import contextlib
import heapq
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

from contracts import Heartbeat
from dispatcher.promise_index import PromiseIndex

# Assignments remembered as in transit per substation, at most.
MAX_IN_TRANSIT = 100_000


# up and draining as its heartbeat says; refused: it refused an assignment (nacked), until its
# next heartbeat.
SubstationStatus = Literal["up", "draining", "refused"]


@dataclass(slots=True)
class SubstationState:
    substation_id: str
    capacity_kw: float
    bays: int
    load_kw: float
    committed_kw: float
    active_sessions: int
    queued: int
    status: SubstationStatus
    seq: int
    interval_s: float
    last_seen: float
    sent_at_ts: float
    pending_kw: float = 0.0
    pending_count: int = 0
    # From the heartbeat, to estimate when an assignment ends (None: no estimate).
    time_scale: float | None = None
    charger_max_kw: float | None = None
    # Its predicted releases still waiting in the table's queue.
    releases_queued: int = 0
    # From the heartbeat: assignments the worker process has received since it started.
    assignments_received: int = 0
    # From the heartbeat: the worker process (None: an older worker that does not say).
    incarnation: UUID | None = None
    # From the heartbeat: its sessions outlive the worker (OCPP stations): never taken back.
    keeps_sessions: bool = False
    # From the heartbeat: its plan's spare power, (wall s after it was sent, kW) pieces in
    # time order, the last lasting (None: not stated; ``dispatcher.spare``).
    spare: tuple[tuple[float, float], ...] | None = None
    # Our assignments not yet known to have reached the worker, oldest first: (kW, estimated
    # end or None), and their kW summed. At most MAX_IN_TRANSIT: beyond, the oldest count as
    # received.
    in_transit: deque[tuple[float, float | None]] = field(default_factory=deque)
    in_transit_kw: float = 0.0

    def sent(self, kw: float, end: float | None) -> None:
        if len(self.in_transit) >= MAX_IN_TRANSIT:
            self.arrived(1)
        self.in_transit.append((kw, end))
        self.in_transit_kw += kw

    def arrived(self, count: int) -> None:
        """The oldest ``count`` of what is in transit reached the worker."""
        for _ in range(min(count, len(self.in_transit))):
            self.in_transit_kw -= self.in_transit.popleft()[0]
        if not self.in_transit:
            self.in_transit_kw = 0.0  # no float crumbs

    def withdrawn(self, entry: tuple[float, float | None]) -> None:
        """One ``sent`` that will never arrive (the broker refused it)."""
        with contextlib.suppress(ValueError):
            self.in_transit.remove(entry)
            self.in_transit_kw = max(0.0, self.in_transit_kw - entry[0])
        if not self.in_transit:
            self.in_transit_kw = 0.0

    def snapshot(self, now: float) -> dict[str, float]:
        """The fields of a ``LoadSnapshot``: validated with the Assignment that carries them,
        in one call (a model of its own each time costs more than the decision)."""
        return {
            "load_kw": self.load_kw,
            "capacity_kw": self.capacity_kw,
            "committed_kw": self.committed_kw,
            "pending_kw": self.pending_kw,
            "heartbeat_seq": self.seq,
            "heartbeat_age_s": max(0.0, now - self.last_seen),
        }


def promised_ratio(s: SubstationState, extra_kw: float = 0.0, extra_sessions: int = 0) -> float:
    """Share of the substation already promised: power against capacity or sessions against
    bays, whichever binds. What waits in its queue counts as sessions; its power is unknown to
    the worker, so only the power of sessions it holds and of our pending assignments counts."""
    kw = s.committed_kw + s.pending_kw + extra_kw
    sessions = s.active_sessions + s.queued + s.pending_count + extra_sessions
    return max(kw / s.capacity_kw, sessions / s.bays)


# An estimated end of an assignment is put this many wall seconds late: the assignment has to
# reach the worker (an announcement confirmed, then the assignment through the broker) before
# its car starts. Were it later still, the next heartbeat states the true end.
ASSIGNMENT_END_MARGIN_S = 0.05


def assignment_end(
    s: SubstationState, kw: float, energy_kwh: float, now: float, leaves_at: float | None = None
) -> float | None:
    """When an assignment just recorded on ``s`` (``kw``: its car's max power capped at the
    capacity) will have ended, or None if that cannot be told safely.

    A car that leaves at ``leaves_at`` (its departure, on the ``now`` clock) has ended by then
    whatever it gets: that, put late by the margin.

    Its car charges at min(car, charger, capacity) from the moment it arrives only if it gets
    a bay at once and nothing shares power with it: the substation holds at most its bays and
    at most its capacity is promised to it, counting this one. Then it ends ``energy_kwh`` /
    that power later, in wall time at the worker's ``time_scale``; put late by a margin for the
    assignment's way to the worker. Otherwise (or without the worker's time scale): None."""
    if leaves_at is not None:
        return max(now, leaves_at) + ASSIGNMENT_END_MARGIN_S
    if s.time_scale is None or s.charger_max_kw is None:
        return None
    sessions = s.active_sessions + s.queued + s.pending_count
    if sessions > s.bays or s.committed_kw + s.pending_kw > s.capacity_kw * (1 + 1e-9):
        return None
    power_kw = min(kw, s.charger_max_kw)
    duration_s = energy_kwh / power_kw * 3600.0 / s.time_scale
    return now + duration_s + ASSIGNMENT_END_MARGIN_S


def _restarted(s: SubstationState, hb: Heartbeat) -> bool:
    """``hb`` comes from another worker process than ``s`` did."""
    if hb.incarnation is not None or s.incarnation is not None:
        return hb.incarnation != s.incarnation
    # An older worker, without incarnation: its seq and count start from 0 again.
    return hb.assignments_received < s.assignments_received or hb.seq < s.seq


def _received_since(s: SubstationState, hb: Heartbeat) -> int:
    """Assignments the worker received between ``s``'s heartbeat and ``hb``."""
    if _restarted(s, hb):
        # A restarted worker counts from 0 again (and what its predecessor held was requeued
        # to it): take its count as what arrived since our last heartbeat.
        return hb.assignments_received
    return hb.assignments_received - s.assignments_received


def supersedes(hb: Heartbeat, s: SubstationState) -> bool:
    """Whether ``hb`` is newer than the heartbeat ``s`` was built from.

    One worker process's heartbeats reach a dispatcher's queue in the order they were sent, so
    within one incarnation a seq not above the last is a duplicate (or a forgery) and is
    refused. A heartbeat of another incarnation is a restart: it is taken, and the latest to
    arrive wins. So a heartbeat forged with a huge seq for a real substation cannot lock the
    real one out: its next heartbeat, of its own incarnation, supersedes the forgery. Without
    incarnations on both sides (an older worker), a restart is told by a newer ``sent_at``
    (which the dispatcher bounds: a heartbeat from the future is refused before it gets here).
    """
    if hb.incarnation is not None and hb.incarnation == s.incarnation:
        return hb.seq > s.seq
    if hb.incarnation is not None or s.incarnation is not None:
        return True
    return hb.seq > s.seq or hb.sent_at.timestamp() > s.sent_at_ts


# The release queue is compacted when it holds more than this many entries beyond twice the
# live ones.
_RELEASES_SLACK = 1024


class LoadTable:
    """Substations by id; ``eligible(now)`` are those fresh and up.

    ``now`` must not go backwards between calls (the dispatcher's monotonic clock): the index
    drops a stale substation when it meets one, until its next heartbeat.
    """

    def __init__(
        self,
        stale_after_intervals: float = 3.0,
        rng: random.Random | None = None,
        *,
        use_releases: bool = True,
        count_in_transit: bool = True,
    ) -> None:
        self.stale_after_intervals = stale_after_intervals
        # False: heartbeats' predicted releases are ignored (freed capacity is learnt from the
        # next heartbeat only), for comparison.
        self.use_releases = use_releases
        # False: a heartbeat clears every pending assignment, even those the worker has not
        # received yet (what the table did before), for comparison.
        self.count_in_transit = count_in_transit
        self._by_id: dict[str, SubstationState] = {}
        # The slowest simulated clock any substation reported (None: none did yet).
        self._slowest_time_scale: float | None = None
        # Predicted releases by due time: (due, number, state, kW, sessions, whether one of
        # our pending assignments). An entry whose state a later heartbeat replaced is dropped
        # when it surfaces.
        self._releases: list[tuple[float, int, SubstationState, float, int, bool]] = []
        self._numbered = 0
        self._live_releases = 0  # entries in _releases whose state is current
        # Ties between equally promised substations are broken at random, so that dispatchers
        # (or a restart) do not all start with the same one.
        self._index: PromiseIndex = PromiseIndex(rng if rng is not None else random.Random())

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[SubstationState]:
        return iter(self._by_id.values())

    @property
    def slowest_time_scale(self) -> float:
        """The slowest simulated clock any substation reported (1, real time, until one does):
        a departure is that much wall time away in the substations' time, the most
        conservative reading."""
        return 1.0 if self._slowest_time_scale is None else self._slowest_time_scale

    def get(self, substation_id: str) -> SubstationState | None:
        return self._by_id.get(substation_id)

    def observe(self, hb: Heartbeat, now: float) -> bool:
        """Apply a heartbeat; False if it is older than what the table already has."""
        sent_at = hb.sent_at.timestamp()
        s = self._by_id.get(hb.substation_id)
        if s is not None and not supersedes(hb, s):
            return False
        if s is not None:
            self._live_releases -= s.releases_queued  # superseded: dead from now on
            if self.count_in_transit:
                s.arrived(_received_since(s, hb))
        state = self._by_id[hb.substation_id] = SubstationState(
            substation_id=hb.substation_id,
            capacity_kw=hb.capacity_kw,
            bays=hb.bays,
            load_kw=hb.load_kw,
            committed_kw=hb.committed_kw,
            active_sessions=hb.active_sessions,
            queued=hb.queued,
            status=hb.status,
            seq=hb.seq,
            interval_s=hb.interval_s,
            last_seen=now,
            sent_at_ts=sent_at,
            time_scale=hb.time_scale,
            charger_max_kw=hb.charger_max_kw,
            assignments_received=hb.assignments_received,
            incarnation=hb.incarnation,
            keeps_sessions=hb.keeps_sessions,
            spare=None if hb.spare is None else tuple((p.until_s, p.kw) for p in hb.spare),
        )
        if s is not None and self.count_in_transit and s.in_transit:
            # What has not arrived stays pending: the heartbeat's committed_kw lacks it.
            state.in_transit, state.in_transit_kw = s.in_transit, s.in_transit_kw
            state.pending_kw, state.pending_count = s.in_transit_kw, len(s.in_transit)
        self._index.put(state)
        if hb.time_scale is not None:
            slowest = self._slowest_time_scale
            self._slowest_time_scale = (
                hb.time_scale if slowest is None else min(slowest, hb.time_scale)
            )
        if self.use_releases:
            for r in hb.releases:
                self._queue_release(now + r.in_s, state, r.kw, r.sessions, pending=False)
            for kw, end in state.in_transit:
                if end is not None:  # still ours to free when it ends (at once if overdue)
                    self._queue_release(end, state, kw, 1, pending=True)
            self.release_due(now)
        return True

    def _queue_release(
        self, due: float, s: SubstationState, kw: float, sessions: int, *, pending: bool
    ) -> None:
        self._numbered += 1
        heapq.heappush(self._releases, (due, self._numbered, s, kw, sessions, pending))
        s.releases_queued += 1
        self._live_releases += 1
        if len(self._releases) > 2 * self._live_releases + _RELEASES_SLACK:
            # Superseded entries (a heartbeat may state them up to an hour ahead) outnumber
            # the live ones: drop them now rather than when they fall due.
            self._releases = [
                e for e in self._releases if self._by_id.get(e[2].substation_id) is e[2]
            ]
            heapq.heapify(self._releases)

    def release_due(self, now: float) -> None:
        """Take the predicted releases due by ``now`` off their substations' promises."""
        heap = self._releases
        while heap and heap[0][0] <= now:
            _, _, s, kw, sessions, pending = heapq.heappop(heap)
            if self._by_id.get(s.substation_id) is not s:
                continue  # superseded by a later heartbeat, or forgotten
            s.releases_queued -= 1
            self._live_releases -= 1
            if pending:  # one of ours, estimated when it was assigned
                s.pending_count = max(0, s.pending_count - sessions)
                s.pending_kw = 0.0 if s.pending_count == 0 else max(0.0, s.pending_kw - kw)
                self._index.put(s)
                continue
            from_active = min(sessions, s.active_sessions)
            s.active_sessions -= from_active
            s.queued = max(0, s.queued - (sessions - from_active))
            s.committed_kw = max(0.0, s.committed_kw - kw)
            if s.active_sessions == 0 and s.queued == 0:
                s.committed_kw = 0.0  # no float crumbs on an empty substation
            self._index.put(s)

    def next_release(self) -> float | None:
        """When the next predicted release is due (the ``now`` clock), or None."""
        heap = self._releases
        while heap and self._by_id.get(heap[0][2].substation_id) is not heap[0][2]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def record_assignment(
        self,
        substation_id: str,
        kw: float,
        *,
        energy_kwh: float | None = None,
        now: float | None = None,
        leaves_at: float | None = None,
    ) -> float | None:
        """Count an assignment of ``kw`` (the power promised to its car, capped at the
        capacity) as pending until the next heartbeat. Given its energy and ``now`` (and when
        the car leaves, if it does), also when it will end (``assignment_end``), so that its
        power is free from then on, as a release is; returns that estimate (None: none)."""
        s = self._by_id[substation_id]
        s.pending_kw += kw
        s.pending_count += 1
        self._index.put(s)
        end = None
        if energy_kwh is not None and now is not None and self.use_releases:
            end = assignment_end(s, kw, energy_kwh, now, leaves_at)
            if end is not None:
                self._queue_release(end, s, kw, 1, pending=True)
        s.sent(kw, end)
        return end

    def unrecord_assignment(self, substation_id: str, recorded: tuple[float, float | None]) -> None:
        """An assignment recorded as ``(kW, estimated end)`` that the broker did not take: it
        will never reach the worker, so no heartbeat will say it arrived. Its pending power
        stays counted until the next heartbeat, as any assignment's does."""
        s = self._by_id.get(substation_id)
        if s is not None:
            s.withdrawn(recorded)

    def is_fresh(self, s: SubstationState, now: float) -> bool:
        return now - s.last_seen <= self.stale_after_intervals * s.interval_s

    def eligible(self, now: float) -> list[SubstationState]:
        self.release_due(now)
        return [s for s in self._by_id.values() if s.status == "up" and self.is_fresh(s, now)]

    def counts(self, now: float) -> dict[str, int]:
        """How many substations are eligible, stale or draining (for metrics)."""
        out = {"eligible": 0, "stale": 0, "draining": 0}
        for s in self._by_id.values():
            if not self.is_fresh(s, now):
                out["stale"] += 1
            elif s.status != "up":
                out["draining"] += 1
            else:
                out["eligible"] += 1
        return out

    def forget(self, substation_id: str) -> None:
        """Drop one substation (until a heartbeat of it is observed again)."""
        s = self._by_id.pop(substation_id, None)
        if s is not None:
            self._live_releases -= s.releases_queued
            self._index.forget(substation_id)

    @property
    def index(self) -> PromiseIndex:
        """Substations by what is promised to them (what ``least_promised`` reads)."""
        return self._index

    def tops(self, now: float) -> list[SubstationState]:
        """The least promised eligible substation of each capacity (``PromiseIndex.tops``)."""
        self.release_due(now)
        return self._index.tops(now, self.stale_after_intervals)

    def least_promised(
        self, now: float, request_kw: float, whole: bool = False
    ) -> tuple[SubstationState, float] | None:
        """The eligible substation least promised once it takes ``request_kw`` (capped at its
        capacity unless ``whole``) and one more session — ``promised_ratio(s, min(request_kw,
        capacity), 1)``, the smallest there is, ties broken at random — and that score; None if
        none is eligible. The same answer as scanning ``eligible(now)``, in O(k + log n) (see
        PromiseIndex)."""
        self.release_due(now)
        return self._index.least_promised(request_kw, now, self.stale_after_intervals, whole)
