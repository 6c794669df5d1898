"""Substations ordered by what is promised to them, so that headroom's decision is O(log n).

Headroom picks the substation least promised once it takes the request:
``max((committed + pending + min(request, capacity)) / capacity, (sessions + 1) / bays)``. The
request's share depends on the capacity, so one order cannot serve every request size. Within
one capacity it can: the request adds the same share to every substation, so ordering by promised
kW is ordering by score (where power binds, as it does unless a substation has few bays for its
power). Hence one heap per capacity, and each decision compares the capacities' tops: O(k + log n)
for k distinct capacities, which real grids draw from a short list of transformer ratings (IEC
60076's R10 series has 15 between 100 and 2500 kVA). A grid where every capacity differs is
O(n), still below a scan (``python -m bench.scale`` shows both).

Entries are never updated in place: a change pushes a new entry and the old one is dropped when
it surfaces (lazy invalidation); the heaps are rebuilt once dead entries outnumber live ones.
"""

from __future__ import annotations

import heapq
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the load table imports this module
    from dispatcher.load_table import SubstationState

# (promised kW, random tie-break, entry number, state): the entry number is unique, so tuples
# never compare states, and it tells whether the entry is still the substation's current one.
_Entry = tuple[float, float, int, "SubstationState"]
# Rebuild the heaps when they hold more than this many entries beyond twice the live ones.
_SLACK = 1024
_INF = float("inf")


class PromiseIndex:
    """Substations by capacity, each capacity a heap by promised kW (committed + pending)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._heaps: dict[float, list[_Entry]] = {}  # by capacity_kw
        self._current: dict[str, int] = {}  # substation id -> its live entry's number
        self._entries = 0  # in all heaps, live or dead
        self._numbered = 0

    def __len__(self) -> int:
        """Entries in the heaps, live or dead."""
        return self._entries

    def put(self, s: SubstationState) -> None:
        """(Re)index ``s`` after a heartbeat or an assignment; one not up is left out."""
        if s.status != "up":
            self.forget(s.substation_id)
            return
        self._numbered += 1
        self._current[s.substation_id] = self._numbered
        entry = (s.committed_kw + s.pending_kw, self._rng.random(), self._numbered, s)
        heapq.heappush(self._heaps.setdefault(s.capacity_kw, []), entry)
        self._entries += 1
        if self._entries > 2 * len(self._current) + _SLACK:
            self._rebuild()

    def forget(self, substation_id: str) -> None:
        self._current.pop(substation_id, None)

    def least_promised(
        self, request_kw: float, now: float, stale_after_intervals: float, whole: bool = False
    ) -> tuple[SubstationState, float] | None:
        """The least promised substation for ``request_kw`` among the usable ones (up, and
        heard from within ``stale_after_intervals`` of its interval by ``now``), and its score;
        None if there is none. One found unusable is dropped until it is put again: staleness
        only grows until its next heartbeat. The request counts at most the capacity of each
        substation (a car cannot draw more), unless ``whole``: then in full (a car with a
        departure, whose need a smaller substation cannot meet).

        The hot path of every decision, written flat: each distinct operation it runs costs
        microseconds when the decision comes cold (a request every few milliseconds, with the
        event loop's other work in between), so it calls nothing it can do inline."""
        heaps = self._heaps
        current = self._current
        while heaps:
            # A heap's top has the least promised power of its capacity, live or dead: a
            # bound on every live entry's score. So the least bound is the answer when its
            # entry is live and power binds there (the usual case); a dead top is popped.
            least = _INF
            heap: list[_Entry] | None = None
            for cap, entries in heaps.items():
                bound = (entries[0][0] + (request_kw if whole or request_kw < cap else cap)) / cap
                if bound < least:
                    least = bound
                    heap = entries
            if heap is None:  # every bound infinite (a heartbeat reporting inf kW committed)
                return self._exhaustive(request_kw, now, stale_after_intervals, whole)
            _, _, number, s = heap[0]
            if (
                current.get(s.substation_id) != number
                or s.status != "up"
                or now - s.last_seen > stale_after_intervals * s.interval_s
            ):
                self._drop_top(heap, number, s)
                continue
            if (s.active_sessions + s.queued + s.pending_count + 1) / s.bays <= least:
                return s, least
            return self._exhaustive(request_kw, now, stale_after_intervals, whole)
        return None

    def tops(self, now: float, stale_after_intervals: float) -> list[SubstationState]:
        """The least promised usable substation of each capacity (dead or unusable tops are
        popped on the way, as ``least_promised`` does): a short list, one per rating."""
        found = []
        for heap in list(self._heaps.values()):
            while heap:
                _, _, number, s = heap[0]
                if self._live(heap, number, s, now, stale_after_intervals):
                    found.append(s)
                    break
        return found

    def _live(
        self,
        heap: list[_Entry],
        number: int,
        s: SubstationState,
        now: float,
        stale_after_intervals: float,
    ) -> bool:
        """Whether ``heap``'s top (``number``, ``s``) is live; if not, pop it."""
        if (
            self._current.get(s.substation_id) == number
            and s.status == "up"
            and now - s.last_seen <= stale_after_intervals * s.interval_s
        ):
            return True
        self._drop_top(heap, number, s)
        return False

    def _drop_top(self, heap: list[_Entry], number: int, s: SubstationState) -> None:
        """Pop ``heap``'s top, dead or unusable; one unusable is out until it is put again."""
        heapq.heappop(heap)
        self._entries -= 1
        if self._current.get(s.substation_id) == number:
            # Stale or no longer up: out until its next heartbeat puts it back.
            del self._current[s.substation_id]
        if not heap:
            del self._heaps[s.capacity_kw]

    def _exhaustive(
        self, request_kw: float, now: float, stale_after_intervals: float, whole: bool = False
    ) -> tuple[SubstationState, float] | None:
        """``least_promised`` where sessions bind (a substation with few bays for its power):
        each heap is walked in power order until its power share alone exceeds the best."""
        best: SubstationState | None = None
        best_score = best_salt = _INF
        for capacity, heap in list(self._heaps.items()):
            extra = request_kw if whole else min(request_kw, capacity)
            # Entries of this capacity whose sessions bind: set aside, put back below.
            passed: list[_Entry] = []
            while heap:
                kw, salt, number, s = heap[0]
                if not self._live(heap, number, s, now, stale_after_intervals):
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
