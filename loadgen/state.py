"""What loadgen knows about a grid, built from heartbeats, events and ingress results.

Pure: no I/O, no clock (``now`` is passed in). Events are at-least-once, so everything is
counted by distinct ``request_id``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from contracts import ChargeEvent, EventKind, Heartbeat

# A request in one of these states will not change any more.
TERMINAL = (EventKind.COMPLETED, EventKind.DEAD_LETTERED, EventKind.REJECTED)
# Heartbeats older than this many of their intervals mark the substation stale (as the
# dispatcher does).
STALE_AFTER_INTERVALS = 3.0


@dataclass
class SubstationView:
    heartbeat: Heartbeat
    peak_utilization: float = 0.0

    @property
    def utilization(self) -> float:
        return self.heartbeat.load_kw / self.heartbeat.capacity_kw

    def age_s(self, now: datetime) -> float:
        return max(0.0, (now - self.heartbeat.sent_at).total_seconds())

    def status(self, now: datetime) -> str:
        if self.age_s(now) > STALE_AFTER_INTERVALS * self.heartbeat.interval_s:
            return "stale"
        return self.heartbeat.status


@dataclass(frozen=True)
class ReportRow:
    substation_id: str
    capacity_kw: float
    requests: int
    energy_kwh: float
    energy_share: float
    capacity_share: float
    peak_utilization: float


@dataclass
class GridState:
    substations: dict[str, SubstationView] = field(default_factory=dict)
    sent: int = 0
    accepted: set[UUID] = field(default_factory=set)
    ingress_statuses: Counter[str] = field(default_factory=Counter)
    by_kind: dict[EventKind, set[UUID]] = field(
        default_factory=lambda: {k: set() for k in EventKind}
    )
    # request id -> (substation, energy delivered) of its completion
    completions: dict[UUID, tuple[str | None, float]] = field(default_factory=dict)
    invalid_messages: int = 0

    # -- updates ---------------------------------------------------------------------------

    def on_heartbeat(self, hb: Heartbeat) -> None:
        view = self.substations.get(hb.substation_id)
        if view is None:
            view = self.substations[hb.substation_id] = SubstationView(hb)
        elif hb.seq < view.heartbeat.seq and hb.sent_at <= view.heartbeat.sent_at:
            return  # an older heartbeat overtaken by a newer one
        view.heartbeat = hb
        view.peak_utilization = max(view.peak_utilization, view.utilization)

    def on_event(self, ev: ChargeEvent) -> None:
        self.by_kind[ev.kind].add(ev.request_id)
        if ev.kind is EventKind.COMPLETED and ev.request_id not in self.completions:
            self.completions[ev.request_id] = (ev.substation_id, ev.energy_kwh or 0.0)

    def on_sent(self) -> None:
        self.sent += 1

    def on_ingress_result(self, request_id: UUID | None, status: str) -> None:
        """``status`` is the HTTP code as text, or a short error name; "202" means accepted."""
        self.ingress_statuses[status] += 1
        if request_id is not None and status == "202":
            self.accepted.add(request_id)

    # -- questions -------------------------------------------------------------------------

    def count(self, kind: EventKind) -> int:
        return len(self.by_kind[kind])

    @property
    def accepted_completed(self) -> int:
        return len(self.accepted & self.by_kind[EventKind.COMPLETED])

    def all_accepted_completed(self) -> bool:
        return self.accepted <= self.by_kind[EventKind.COMPLETED]

    def all_accepted_settled(self) -> bool:
        """Every accepted request reached a state it will not leave (completed or failed)."""
        settled: set[UUID] = set().union(*(self.by_kind[k] for k in TERMINAL))
        return self.accepted <= settled

    def report(self, order: list[str] | None = None) -> list[ReportRow]:
        """One row per substation (``order`` first, then any others seen), completed work only."""
        ids = list(order or [])
        ids += sorted(
            {*self.substations, *(s for s, _ in self.completions.values() if s)} - set(ids)
        )
        requests: Counter[str] = Counter()
        energy: Counter[str] = Counter()
        for sid, kwh in self.completions.values():
            if sid is not None:
                requests[sid] += 1
                energy[sid] += kwh
        capacity = {
            sid: (self.substations[sid].heartbeat.capacity_kw if sid in self.substations else 0.0)
            for sid in ids
        }
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
                peak_utilization=(
                    self.substations[sid].peak_utilization if sid in self.substations else 0.0
                ),
            )
            for sid in ids
        ]
