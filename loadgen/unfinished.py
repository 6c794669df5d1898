"""Unfinished or lost: what the grid still holds of the requests a run did not see finish.

Pure: the grid's own counts come in as a ``Holdings`` (``loadgen.holdings`` reads them), the
requests as their ``Place`` (``GridState.place``: where their events last put them).

The rule. A request accepted and neither completed nor rejected is *missing*. The grid counts
what it holds at each place a missing request points to: the messages in ``<ns>.requests``
(ready and held unacked by a dispatcher), and for each substation the ``queued`` and
``active_sessions`` of its latest heartbeat (its queue's depth from the broker when its
heartbeats went stale). The grid holds requests, not ids, so:

* if, over those places, it holds at least as many requests as are missing, none is lost: all
  are *unfinished*, each reported where its events put it;
* if it holds fewer, the difference is *lost*, taken from the places where the grid holds
  fewer than loadgen expects there (the biggest shortfall first): those are the lost ids.

The counts include other clients' requests at the same places, so "unfinished" means the grid
holds enough requests to account for the missing ones, not that each id was found. A place the
grid's counts could not be read for counts as holding nothing (``Holdings.unread`` says why);
without any counts at all (``None``), every missing request is lost, as the grid could not say
otherwise.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from uuid import UUID

from loadgen.state import CHARGING, HELD, QUEUED, Place


@dataclass(frozen=True)
class SubstationHolds:
    queued: int
    charging: int
    # "heartbeat" (a fresh one), "queue" (stale or silent: its queue's depth), or "unread".
    source: str = "heartbeat"


@dataclass(frozen=True)
class Holdings:
    """What the grid said it holds when the run ended."""

    # Messages in <ns>.requests, ready and unacked; None if it could not be read.
    requests: int | None
    requests_queue: str = "<ns>.requests"
    # How ``requests`` was counted: "management API" (ready and unacked), "ready only".
    requests_counted_by: str = "management API"
    substations: Mapping[str, SubstationHolds] = field(default_factory=dict)
    # What could not be read, and why (one line each): those places count as holding nothing.
    unread: tuple[str, ...] = ()

    def at(self, place: Place) -> int:
        if place.substation_id is None:
            return self.requests or 0
        holds = self.substations.get(place.substation_id)
        if holds is None:
            return 0
        return holds.charging if place.stage == CHARGING else holds.queued

    def to_json(self) -> dict[str, object]:
        return {
            "requests_queue": self.requests_queue,
            "requests": self.requests,
            "requests_counted_by": self.requests_counted_by,
            "substations": {
                sid: {"queued": h.queued, "charging": h.charging, "source": h.source}
                for sid, h in sorted(self.substations.items())
            },
            "unread": list(self.unread),
        }


@dataclass(frozen=True)
class Accounting:
    """The missing requests split: unfinished (by place) and lost."""

    unfinished: dict[Place, int]
    unfinished_ids: frozenset[UUID]
    lost_ids: frozenset[UUID]

    @property
    def unfinished_total(self) -> int:
        return sum(self.unfinished.values())

    def unfinished_json(self, requests_queue: str = "<ns>.requests") -> dict[str, object]:
        """``{"total", "held", "queued": {sid: n}, "charging": {sid: n}, "where": {label: n}}``."""
        by_stage: dict[str, dict[str, int]] = {QUEUED: {}, CHARGING: {}}
        held = 0
        for place, n in sorted(self.unfinished.items()):
            if place.substation_id is None:
                held += n
            else:
                by_stage[place.stage][place.substation_id] = n
        return {
            "total": self.unfinished_total,
            HELD: held,
            QUEUED: by_stage[QUEUED],
            CHARGING: by_stage[CHARGING],
            "where": {p.label(requests_queue): n for p, n in self.by_size()},
        }

    def by_size(self) -> list[tuple[Place, int]]:
        return sorted(self.unfinished.items(), key=lambda item: (-item[1], item[0]))


def account(places: Mapping[UUID, Place], holdings: Holdings | None) -> Accounting:
    """Split the missing requests (id -> where its events put it) by the rule above."""
    if holdings is None:
        return Accounting({}, frozenset(), frozenset(places))
    expected: dict[Place, list[UUID]] = defaultdict(list)
    for rid, place in places.items():
        expected[place].append(rid)
    # The grid's count per substation is shared by its queued and charging places: counted once.
    held_total = holdings.at(Place(HELD)) if Place(HELD) in expected else 0
    stations = {p.substation_id for p in expected if p.substation_id is not None}
    for sid in stations:
        holds = holdings.substations.get(sid)
        if holds is not None:
            held_total += holds.queued + holds.charging
    to_lose = max(0, len(places) - held_total)
    shortfall = {p: max(0, len(ids) - holdings.at(p)) for p, ids in expected.items()}
    lost: set[UUID] = set()
    for place in sorted(shortfall, key=lambda p: (-shortfall[p], p)):
        if to_lose == 0:
            break
        take = min(shortfall[place], to_lose)
        lost.update(sorted(expected[place], key=str)[:take])
        to_lose -= take
    unfinished: Counter[Place] = Counter(p for rid, p in places.items() if rid not in lost)
    return Accounting(
        dict(unfinished),
        frozenset(rid for rid in places if rid not in lost),
        frozenset(lost),
    )
