"""The dispatcher's picture of every substation, built from heartbeats. Pure: time is passed in.

Heartbeats are stale by up to one interval. To keep a burst from herding onto the substation that
looked emptiest at its last heartbeat, the table also counts what this dispatcher assigned to each
substation since that heartbeat (``pending_*``); a new heartbeat supersedes those counts.

An index keeps the dispatch decision O(log n) in the number of substations (``least_promised``):
one heap per capacity, ordered by promised power. Within one capacity a request adds the same
share to every substation, so heap order is score order (unless sessions bind, see there); across
capacities it does not, so each capacity's best is compared: O(k + log n) for k distinct
capacities, which real grids draw from a short list of transformer ratings. Entries are never
updated in place: a change pushes a new entry and the old one is skipped when it surfaces (lazy
invalidation); the heaps are rebuilt once dead entries outnumber live ones.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass

from contracts import Heartbeat, LoadSnapshot


@dataclass(slots=True)
class SubstationState:
    substation_id: str
    capacity_kw: float
    bays: int
    load_kw: float
    committed_kw: float
    active_sessions: int
    queued: int
    status: str
    seq: int
    interval_s: float
    last_seen: float
    sent_at_ts: float
    pending_kw: float = 0.0
    pending_count: int = 0

    def snapshot(self, now: float) -> LoadSnapshot:
        return LoadSnapshot(
            load_kw=self.load_kw,
            capacity_kw=self.capacity_kw,
            committed_kw=self.committed_kw,
            pending_kw=self.pending_kw,
            heartbeat_seq=self.seq,
            heartbeat_age_s=max(0.0, now - self.last_seen),
        )


def promised_ratio(s: SubstationState, extra_kw: float = 0.0, extra_sessions: int = 0) -> float:
    """Share of the substation already promised: power against capacity or sessions against
    bays, whichever binds. What waits in its queue counts as sessions; its power is unknown to
    the worker, so only the power of sessions it holds and of our pending assignments counts."""
    kw = s.committed_kw + s.pending_kw + extra_kw
    sessions = s.active_sessions + s.queued + s.pending_count + extra_sessions
    return max(kw / s.capacity_kw, sessions / s.bays)


# (promised kW, random tie-break, entry number, state): the entry number is unique, so tuples
# never compare states, and it tells whether the entry is still the substation's current one.
_Entry = tuple[float, float, int, SubstationState]
# Rebuild the heaps when they hold more than this many entries beyond twice the live ones.
_SLACK = 1024


class LoadTable:
    """Substations by id; ``eligible(now)`` are those fresh and up.

    ``now`` must not go backwards between calls (the dispatcher's monotonic clock): the index
    drops a stale substation when it meets one, until its next heartbeat.
    """

    def __init__(
        self, stale_after_intervals: float = 3.0, rng: random.Random | None = None
    ) -> None:
        self.stale_after_intervals = stale_after_intervals
        self._by_id: dict[str, SubstationState] = {}
        # Ties between equally promised substations are broken at random, so that dispatchers
        # (or a restart) do not all start with the same one.
        self._rng = rng if rng is not None else random.Random()
        self._heaps: dict[float, list[_Entry]] = {}  # by capacity_kw
        self._current: dict[str, int] = {}  # substation id -> its live entry's number
        self._entries = 0  # in all heaps, live or dead
        self._numbered = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[SubstationState]:
        return iter(self._by_id.values())

    def get(self, substation_id: str) -> SubstationState | None:
        return self._by_id.get(substation_id)

    def observe(self, hb: Heartbeat, now: float) -> bool:
        """Apply a heartbeat; False if it is older than what the table already has."""
        sent_at = hb.sent_at.timestamp()
        s = self._by_id.get(hb.substation_id)
        if s is not None and hb.seq <= s.seq and sent_at <= s.sent_at_ts:
            # Reordered or duplicated. (A restarted worker starts seq at 0 again, but its
            # sent_at is newer, so it is accepted.)
            return False
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
        )
        self._index(state)
        return True

    def record_assignment(self, substation_id: str, kw: float) -> None:
        s = self._by_id[substation_id]
        s.pending_kw += kw
        s.pending_count += 1
        self._index(s)

    def is_fresh(self, s: SubstationState, now: float) -> bool:
        return now - s.last_seen <= self.stale_after_intervals * s.interval_s

    def is_eligible(self, substation_id: str, now: float) -> bool:
        s = self._by_id.get(substation_id)
        return s is not None and s.status == "up" and self.is_fresh(s, now)

    def eligible(self, now: float) -> list[SubstationState]:
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

    def forget_older_than(self, now: float, seconds: float) -> list[str]:
        """Drop substations silent for ``seconds``; returns their ids."""
        gone = [sid for sid, s in self._by_id.items() if now - s.last_seen > seconds]
        for sid in gone:
            del self._by_id[sid]
            self._current.pop(sid, None)
        return gone

    # -- the index ---------------------------------------------------------------------------

    def _index(self, s: SubstationState) -> None:
        if s.status != "up":
            self._current.pop(s.substation_id, None)
            return
        self._numbered += 1
        self._current[s.substation_id] = self._numbered
        entry = (s.committed_kw + s.pending_kw, self._rng.random(), self._numbered, s)
        heapq.heappush(self._heaps.setdefault(s.capacity_kw, []), entry)
        self._entries += 1
        if self._entries > 2 * len(self._current) + _SLACK:
            self._rebuild()

    def _rebuild(self) -> None:
        heaps: dict[float, list[_Entry]] = {}
        for heap in self._heaps.values():
            for entry in heap:
                if self._current.get(entry[3].substation_id) == entry[2]:
                    heaps.setdefault(entry[3].capacity_kw, []).append(entry)
        for heap in heaps.values():
            heapq.heapify(heap)
        self._heaps = heaps
        self._entries = sum(len(h) for h in heaps.values())

    def least_promised(self, now: float, request_kw: float) -> tuple[SubstationState, float] | None:
        """The eligible substation least promised once it takes ``request_kw`` (capped at its
        capacity) and one more session — ``promised_ratio(s, min(request_kw, capacity), 1)``,
        the smallest there is, ties broken at random — and that score; None if none is eligible.
        The same answer as scanning ``eligible(now)``, in O(k + log n)."""
        while self._heaps:
            # A heap's top has the least promised power of its capacity, live or dead: a
            # bound on every live entry's score. So the least bound is the answer when its
            # entry is live and power binds there (the usual case); a dead top is popped.
            least = float("inf")
            capacity, heap = 0.0, []
            for cap, entries in self._heaps.items():  # a plain loop: the hot path
                bound = (entries[0][0] + (request_kw if request_kw < cap else cap)) / cap
                if bound < least:
                    least, capacity, heap = bound, cap, entries
            if not heap:  # every bound infinite (a heartbeat reporting inf kW committed)
                return self._least_promised_exhaustive(now, request_kw)
            kw, _, number, s = heap[0]
            if not self._live(heap, number, s, now):
                continue
            extra = min(request_kw, capacity)
            power = (kw + extra) / capacity
            if (s.active_sessions + s.queued + s.pending_count + 1) / s.bays <= power:
                return s, power
            return self._least_promised_exhaustive(now, request_kw)
        return None

    def _live(self, heap: list[_Entry], number: int, s: SubstationState, now: float) -> bool:
        """Whether ``heap``'s top (``number``, ``s``) is live; if not, pop it."""
        if (
            self._current.get(s.substation_id) == number
            and s.status == "up"
            and self.is_fresh(s, now)
        ):
            return True
        heapq.heappop(heap)
        self._entries -= 1
        if self._current.get(s.substation_id) == number:
            # Stale or no longer up: out until its next heartbeat re-indexes it.
            del self._current[s.substation_id]
        if not heap:
            del self._heaps[s.capacity_kw]
        return False

    def _least_promised_exhaustive(
        self, now: float, request_kw: float
    ) -> tuple[SubstationState, float] | None:
        """``least_promised`` where sessions bind (a substation with few bays for its power):
        each heap is walked in power order until its power share alone exceeds the best."""
        best: SubstationState | None = None
        best_score = best_salt = float("inf")
        for capacity, heap in list(self._heaps.items()):
            extra = min(request_kw, capacity)
            # Entries of this capacity whose sessions bind: set aside, put back below.
            passed: list[_Entry] = []
            while heap:
                kw, salt, number, s = heap[0]
                if not self._live(heap, number, s, now):
                    continue
                power = (kw + extra) / capacity
                if power > best_score or (power == best_score and salt >= best_salt):
                    break  # the rest of this heap promise at least as much power
                sessions = (s.active_sessions + s.queued + s.pending_count + 1) / s.bays
                score = max(power, sessions)
                if score < best_score or (score == best_score and salt < best_salt):
                    best, best_score, best_salt = s, score, salt
                if sessions <= power:
                    break  # power binds: no later entry of this capacity scores lower
                passed.append(heapq.heappop(heap))
            if passed:
                if heap:
                    for entry in passed:
                        heapq.heappush(heap, entry)
                else:
                    self._heaps[capacity] = passed
                    heapq.heapify(passed)
        return None if best is None else (best, best_score)
