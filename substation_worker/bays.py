"""What the worker's service needs of its bays: the simulation (``simulation.Substation``) or
real stations over OCPP (``ocpp.csms.StationBays``). The service's delivery rules (ack on
completion, duplicates, hand-backs, drain) are the same over either."""

from __future__ import annotations

from typing import Protocol

from substation_worker.simulation import ChargingSession, PredictedRelease, Step


class Bays(Protocol):
    @property
    def now_s(self) -> float: ...
    @property
    def capacity_kw(self) -> float: ...
    @property
    def bays(self) -> int: ...
    @property
    def charger_max_kw(self) -> float: ...
    @property
    def load_kw(self) -> float: ...
    @property
    def committed_kw(self) -> float: ...
    @property
    def active_count(self) -> int: ...
    @property
    def waiting_count(self) -> int: ...

    def holds(self, key: str) -> bool: ...

    def offer(
        self,
        key: str,
        energy_kwh: float,
        max_power_kw: float,
        *,
        departure_s: float | None = None,
        priority: int = 0,
    ) -> ChargingSession: ...

    def advance(self, sim_dt_s: float) -> Step: ...

    def take_waiting(self) -> list[ChargingSession]: ...

    def reset(self) -> list[ChargingSession]: ...

    def predicted_releases(self, horizon_s: float = ...) -> list[PredictedRelease]: ...
