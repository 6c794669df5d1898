"""Dispatch policies: which eligible substation takes a request, or None to hold it.

Pure functions of the load table (and an injected random source), so that they can be compared
on the same load, in unit tests and in the balance simulation, without a broker.

``headroom`` is smartgrid's policy. It scores each substation by how much of it is already
promised — the vehicles' max power over capacity, and sessions over bays, counting what the
dispatcher assigned since the last heartbeat — and picks the least promised. It holds a request
(backpressure: it stays in <ns>.requests) once every substation has ``hold_factor`` times its
capacity promised. At the default, 1, no substation is ever promised more than its capacity, so
every car charges at its max power and the would-be demand never exceeds capacity. That alone
would idle substations between heartbeats (freed capacity learnt only at the next one); the load
table prevents it by freeing, between heartbeats, the power of sessions predicted to have ended:
the workers' predicted releases (``Heartbeat.releases``) and its own estimate for what it
assigned since (``load_table.assignment_end``). A factor above 1 promises beyond capacity
(sessions then share power and draw less than their max); the dispatcher predicts no end for
what it assigns beyond capacity.

Every policy chooses from a list of eligible substations (``choose``). Headroom also decides
from the load table's index (``choose_in``, the same pick in O(log n) for a grid of a few
capacity ratings), which ``decider`` uses when a policy has it: the dispatcher then never
builds the O(n) eligible list, neither per request nor per heartbeat.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from dispatcher.load_table import LoadTable, SubstationState, promised_ratio

__all__ = [
    "POLICIES",
    "Headroom",
    "IndexedPolicy",
    "LeastLoaded",
    "Policy",
    "PowerOfTwo",
    "RandomChoice",
    "RoundPolicy",
    "RoundRobin",
    "decider",
    "make_policy",
    "promised_ratio",
]


class Policy(Protocol):
    name: str

    def choose(self, candidates: Sequence[SubstationState], request_kw: float) -> str | None:
        """Pick a substation id from ``candidates`` (fresh and up), or None to hold."""
        ...


class IndexedPolicy(Protocol):
    """A policy that can decide from the load table's index, without the O(n) eligible list."""

    def choose_in(self, table: LoadTable, now: float, request_kw: float) -> str | None:
        """The same pick as ``choose(table.eligible(now), request_kw)``."""
        ...


class RoundPolicy(Protocol):
    """A policy that binds what one round of decisions shares (the table, ``now``, its own
    settings) once, so that each decision is one call."""

    def chooser(self, table: LoadTable, now: float) -> Callable[[float], str | None]:
        """``choose_in(table, now, kw)`` as ``choose(kw)``, for a table whose releases due by
        ``now`` are applied."""
        ...


def decider(policy: Policy, table: LoadTable, now: float) -> Callable[[float], str | None]:
    """``choose(request_kw)`` for one round of decisions at ``now``: the index's fast path when
    the policy has one; otherwise the eligible list, built once for the round (assignments
    recorded meanwhile update the states it holds). The releases due by ``now`` are applied
    here, once for the round, so that a decision is the pick alone."""
    table.release_due(now)
    # getattr, not isinstance: a runtime-checkable Protocol costs microseconds per check.
    if getattr(policy, "chooser", None) is not None:
        return cast(RoundPolicy, policy).chooser(table, now)
    if getattr(policy, "choose_in", None) is not None:
        return functools.partial(cast(IndexedPolicy, policy).choose_in, table, now)
    candidates: list[SubstationState] | None = None

    def choose(request_kw: float) -> str | None:
        nonlocal candidates
        if candidates is None:
            candidates = table.eligible(now)
        return policy.choose(candidates, request_kw)

    return choose


class Headroom:
    """smartgrid's policy: least promised relative to its own size; hold beyond hold_factor."""

    name = "headroom"

    def __init__(self, rng: random.Random, hold_factor: float = 1.0) -> None:
        if hold_factor <= 0:
            raise ValueError("hold_factor must be positive")
        self._rng = rng
        self.hold_factor = hold_factor

    def choose(self, candidates: Sequence[SubstationState], request_kw: float) -> str | None:
        best: SubstationState | None = None
        best_score = 0.0
        for s in candidates:
            # A car cannot draw more than the whole substation; capping keeps a big car from
            # being held forever at a small substation that is otherwise empty.
            score = promised_ratio(s, min(request_kw, s.capacity_kw), 1)
            # Random tie-break so identical substations do not all start with the same one.
            if (
                best is None
                or score < best_score
                or (score == best_score and self._rng.random() < 0.5)
            ):
                best, best_score = s, score
        return self._unless_held(best, best_score)

    def choose_in(self, table: LoadTable, now: float, request_kw: float) -> str | None:
        """``choose`` from the table's index: O(log n) instead of a scan of every substation."""
        table.release_due(now)
        return self.chooser(table, now)(request_kw)

    def chooser(self, table: LoadTable, now: float) -> Callable[[float], str | None]:
        """One round's ``choose_in``: the index, ``now`` and the hold factor bound once, and
        the hold rule inline, so that a decision (cold: a request every few milliseconds, other
        work in between) runs as little distinct code as it can."""
        least_promised = table.index.least_promised
        stale = table.stale_after_intervals
        hold = self.hold_factor

        def choose(request_kw: float) -> str | None:
            found = least_promised(request_kw, now, stale)
            if found is None:
                return None
            best, score = found
            # Beyond the hold factor, hold; except at an idle substation (a car bigger than
            # the whole substation still charges where nothing else does).
            if score > hold and (
                best.committed_kw + best.pending_kw != 0 or best.active_sessions != 0
            ):
                return None
            return best.substation_id

        return choose

    def _unless_held(self, best: SubstationState | None, score: float) -> str | None:
        if best is None:
            return None
        idle = best.committed_kw + best.pending_kw == 0 and best.active_sessions == 0
        if score > self.hold_factor and not idle:
            return None
        return best.substation_id


class RoundRobin:
    """Each eligible substation in turn, blind to load. Never holds."""

    name = "round-robin"

    def __init__(self, rng: random.Random) -> None:
        self._next = 0

    def choose(self, candidates: Sequence[SubstationState], request_kw: float) -> str | None:
        if not candidates:
            return None
        ordered = sorted(candidates, key=lambda s: s.substation_id)
        pick = ordered[self._next % len(ordered)]
        self._next += 1
        return pick.substation_id


class LeastLoaded:
    """The naive policy: lowest reported load in kW. Stale between heartbeats, so a burst
    herds onto one substation; and blind to capacity. Kept for comparison."""

    name = "least-loaded"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, candidates: Sequence[SubstationState], request_kw: float) -> str | None:
        if not candidates:
            return None
        return min(candidates, key=lambda s: (s.load_kw, s.substation_id)).substation_id


class RandomChoice:
    """Uniformly random among eligible substations. Never holds."""

    name = "random"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, candidates: Sequence[SubstationState], request_kw: float) -> str | None:
        if not candidates:
            return None
        return self._rng.choice(list(candidates)).substation_id


class PowerOfTwo:
    """Two random candidates, the one with the lower reported utilization. Never holds."""

    name = "power-of-two"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, candidates: Sequence[SubstationState], request_kw: float) -> str | None:
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0].substation_id
        a, b = self._rng.sample(list(candidates), 2)
        return min((a, b), key=lambda s: s.load_kw / s.capacity_kw).substation_id


POLICIES: dict[str, Callable[[random.Random], Policy]] = {
    Headroom.name: Headroom,
    RoundRobin.name: RoundRobin,
    LeastLoaded.name: LeastLoaded,
    RandomChoice.name: RandomChoice,
    PowerOfTwo.name: PowerOfTwo,
}


def make_policy(name: str, rng: random.Random, hold_factor: float = 1.0) -> Policy:
    if name == Headroom.name:
        return Headroom(rng, hold_factor)
    try:
        return POLICIES[name](rng)
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}") from None
