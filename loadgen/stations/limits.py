"""What limits a simulated station was given, and when (wall-clock ``time.monotonic``): pure,
no I/O. The tests check with it that the CSMS never gave more than a capacity at any instant.

Each change is the limit in W that holds from that instant: for an EVSE (id >= 1) the one its car
is held to (its transaction's TxProfile, else the TxDefaultProfile, else None: no profile, the
EVSE's max); for the station (id 0) its ChargingStationMaxProfile (None: none). A log keeps its
last ``maxlen`` changes; the older ones are folded into its base (the state before the first kept
change), so what it says from its base on stays exact.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

STATION = 0  # the evse id of the station max
LIMIT_LOG_MAX = 100_000


@dataclass(frozen=True)
class LimitChange:
    at_monotonic: float
    station_id: str
    evse_id: int  # 0: the station's ChargingStationMaxProfile
    limit_w: float | None


class LimitLog:
    def __init__(
        self,
        station_id: str,
        evse_max_w: dict[int, float],
        maxlen: int = LIMIT_LOG_MAX,
        at: float | None = None,
    ) -> None:
        self.station_id = station_id
        self.evse_max_w = dict(evse_max_w)
        self.maxlen = maxlen
        self.base_at = time.monotonic() if at is None else at
        self.base: dict[int, float | None] = {STATION: None, **dict.fromkeys(evse_max_w)}
        self._current = dict(self.base)
        self._changes: deque[LimitChange] = deque()

    def current(self, evse_id: int) -> float | None:
        return self._current[evse_id]

    def record(self, evse_id: int, limit_w: float | None, at: float | None = None) -> bool:
        """``limit_w`` holds for ``evse_id`` from ``at`` (now); False when it held already."""
        if self._current[evse_id] == limit_w:
            return False
        self._current[evse_id] = limit_w
        self._changes.append(
            LimitChange(time.monotonic() if at is None else at, self.station_id, evse_id, limit_w)
        )
        while len(self._changes) > self.maxlen:
            old = self._changes.popleft()
            self.base[old.evse_id] = old.limit_w
            self.base_at = old.at_monotonic
        return True

    def changes(self) -> list[LimitChange]:
        return list(self._changes)

    def bound_w(self, limits: dict[int, float | None]) -> float:
        """The most the station may draw under ``limits``: min(station max, sum over its EVSEs
        of min(limit, EVSE max)), an EVSE without a limit counting its max."""
        return station_bound_w(limits, self.evse_max_w)


def station_bound_w(limits: dict[int, float | None], evse_max_w: dict[int, float]) -> float:
    total = 0.0
    for evse_id, max_w in evse_max_w.items():
        limit = limits.get(evse_id)
        total += max_w if limit is None else max(0.0, min(limit, max_w))
    station = limits.get(STATION)
    return total if station is None else min(max(0.0, station), total)


def limit_totals(logs: Iterable[LimitLog]) -> list[tuple[float, float]]:
    """The sum of the stations' bounds (``LimitLog.bound_w``) as a step function: (from
    ``time.monotonic``, W), starting at the latest base of the logs (before it, some log no
    longer knows its state). Changes at the same instant count once, after all of them."""
    logs = list(logs)
    if not logs:
        return []
    start = max(log.base_at for log in logs)
    state = {log.station_id: dict(log.base) for log in logs}
    maxes = {log.station_id: log.evse_max_w for log in logs}
    merged = heapq.merge(*(log.changes() for log in logs), key=lambda c: c.at_monotonic)
    bounds: dict[str, float] = {}
    steps: list[tuple[float, float]] = []
    pending: list[LimitChange] = []

    def settle() -> None:
        for c in pending:
            state[c.station_id][c.evse_id] = c.limit_w
            bounds[c.station_id] = station_bound_w(state[c.station_id], maxes[c.station_id])
        at = max(start, pending[-1].at_monotonic) if pending else start
        total = math.fsum(bounds.values())
        if steps and steps[-1][0] == at:
            steps[-1] = (at, total)
        elif not steps or steps[-1][1] != total:
            steps.append((at, total))
        pending.clear()

    for log in logs:
        bounds[log.station_id] = station_bound_w(state[log.station_id], log.evse_max_w)
    settle()
    for change in merged:
        if pending and change.at_monotonic != pending[-1].at_monotonic:
            settle()
        pending.append(change)
    if pending:
        settle()
    return steps
