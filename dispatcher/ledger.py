"""What a dispatcher knows of the requests it dispatched, and the rules that follow from it.

Pure bookkeeping, no I/O: the service tells the ledger what happened (a request held, assigned,
confirmed, returned; another dispatcher's intent) and asks it what a request is (new, a
duplicate, a conflict) and where a copy of it may already wait.

* **Ids in flight**: requests held or awaiting their assignment's confirm, with their
  fingerprints. A second delivery of one of them is a duplicate (acked, not dispatched again)
  or, if its body differs, a conflict.
* **Recent routes**: for each recently dispatched request, the substation, whether the broker
  confirmed the assignment, and the fingerprint (None when known only from another
  dispatcher's intent). A confirmed route makes a later copy a duplicate; an unconfirmed one
  (announced, then a crash) says where a copy may wait: the request goes there again, so that
  the worker there drops one of the two (``resend_rule``).
* **Silence**: a substation is silent (its queue is taken back, a copy is no longer sent there)
  only once it said nothing for its stale window while this dispatcher could hear it
  (``silent_while_connected``): right after a reconnect every heartbeat looks old.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from dispatcher.load_table import SubstationState

# Where a request was (or is being) dispatched, whether the broker confirmed it, and the
# request's fingerprint (None: known only from another dispatcher's intent). A plain tuple of
# atoms: the collector stops tracking it, and there may be 200,000 of them.
Route = tuple[str, bool, int | None]
Seen = Literal["new", "duplicate", "conflict"]
Step = Literal["resend", "defer", "choose"]

# Request ids remembered as dispatched, to drop duplicates (about 100 bytes each).
RECENT_DISPATCHED = 200_000


class DispatchLedger:
    """Ids in flight and recent routes, keyed by ``request_id.int``."""

    def __init__(self, remembered: int = RECENT_DISPATCHED) -> None:
        self._remembered = remembered
        self.pending: dict[int, int] = {}  # held or in flight here -> fingerprint
        self._recent: OrderedDict[int, Route] = OrderedDict()

    def __len__(self) -> int:
        """Routes remembered."""
        return len(self._recent)

    def seen(self, key: int, fingerprint: int) -> Seen:
        """What a request read from ``<ns>.requests`` is: one held, in flight or confirmed here
        is a duplicate with the same body and a conflict with another; otherwise new (even if
        another dispatcher's intent named it: that copy may never have arrived)."""
        first = self.pending.get(key)
        if first is None:
            route = self._recent.get(key)
            if route is not None and route[1]:
                first = route[2]
        if first is None:
            return "new"
        return "duplicate" if first == fingerprint else "conflict"

    def hold(self, key: int, fingerprint: int) -> None:
        self.pending[key] = fingerprint

    def route(self, key: int) -> Route | None:
        return self._recent.get(key)

    def assigned(self, key: int, substation_id: str, fingerprint: int) -> None:
        """An assignment to ``substation_id`` is about to be announced and published."""
        known = self._recent.get(key)
        if known is None or known[0] != substation_id:
            self._remember(key, (substation_id, False, fingerprint))

    def confirmed(self, key: int, substation_id: str, fingerprint: int) -> None:
        """The broker has the assignment: the request is done here."""
        route = (substation_id, True, fingerprint)
        if key in self._recent:
            self._recent[key] = route  # remembered by ``assigned``, moments ago
        else:
            self._remember(key, route)
        self.pending.pop(key, None)

    def returned(self, key: int, substation_id: str) -> None:
        """The assignment came back unroutable: no copy waits at ``substation_id``."""
        route = self._recent.get(key)
        if route is not None and route[0] == substation_id and not route[1]:
            del self._recent[key]

    def followed(self, key: int, substation_id: str) -> None:
        """Another dispatcher's intent: a copy of the request may wait at ``substation_id``."""
        known = self._recent.get(key)
        if known is not None and known[:2] == (substation_id, True):
            return  # our own intent, echoed after its assignment was confirmed
        self._remember(key, (substation_id, False, None if known is None else known[2]))

    def connection_lost(self) -> None:
        """The held and in-flight deliveries died with the channel (the broker requeued
        them); the routes stay: they say where copies may wait."""
        self.pending.clear()

    def _remember(self, key: int, route: Route) -> None:
        self._recent[key] = route
        self._recent.move_to_end(key)
        while len(self._recent) > self._remembered:
            self._recent.popitem(last=False)


def silent_while_connected(
    last_seen: float, connected_at: float, now: float, window: float
) -> bool:
    """A substation's queue is taken back only if it was silent for ``window`` while this
    dispatcher could hear it: right after a reconnect every heartbeat looks old, and moving every
    healthy substation's queue then would only churn (and duplicate) work."""
    return now - max(last_seen, connected_at) > window


def is_silent(
    s: SubstationState, now: float, connected_at: float | None, stale_after_intervals: float
) -> bool:
    """``s`` said nothing for its stale window while this dispatcher could hear it (while
    disconnected: for its stale window at all)."""
    window = stale_after_intervals * s.interval_s
    if connected_at is None:
        return now - s.last_seen > window
    return silent_while_connected(s.last_seen, connected_at, now, window)


def resend_rule(state: SubstationState | None, silent: bool) -> Step:
    """For a request a copy of which may wait at a substation (``state``, None if the table no
    longer holds it): send it there again while that substation is up and not silent, so that
    its worker drops one copy; wait while it refuses publishes (until its next heartbeat),
    without holding up the requests behind; otherwise choose anew (a substation really gone has
    its queue taken back, copy included)."""
    if state is None:
        return "choose"
    if state.status == "up" and not silent:
        return "resend"
    if state.status == "refused":
        return "defer"
    return "choose"
