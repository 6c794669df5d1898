"""What the simulated vehicles ask for: seeded, pure, no I/O.

The mix models passenger cars; its ranges come from how cars are built and charged, and its
shape is a modelling choice (documented in the README, "Load generator"):

* AC power: on-board chargers of 7.4 kW (single phase, 32 A at 230 V) and 11 kW (three phase,
  16 A at 400 V), the common IEC 61851 / Type 2 ratings; 7.2 kW (30 A at 240 V, SAE J1772
  Level 2) in North America. Drawn uniformly from 7-11 kW.
* DC power: what passenger cars accept on CCS/CHAdeMO fast chargers, 50 kW (older and small
  cars) to about 150 kW (most current mid-size cars). Drawn uniformly from 50-150 kW for the
  30 % of sessions assumed to be fast charges.
* Energy: batteries of 40-100 kWh, sessions that top up roughly 20-80 % of them: 10-60 kWh,
  triangular with its mode at 30 kWh (most sessions are top-ups, few are near-full charges).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class DemandMix:
    energy_kwh: tuple[float, float] = (10.0, 60.0)
    energy_mode_kwh: float = 30.0
    ac_kw: tuple[float, float] = (7.0, 11.0)
    dc_kw: tuple[float, float] = (50.0, 150.0)
    dc_share: float = 0.3

    def __post_init__(self) -> None:
        lo, hi = self.energy_kwh
        if not 0 < lo <= self.energy_mode_kwh <= hi:
            raise ValueError("energy bounds must satisfy 0 < low <= mode <= high")
        if not 0.0 <= self.dc_share <= 1.0:
            raise ValueError("dc_share must be within [0, 1]")


DEFAULT_MIX = DemandMix()


@dataclass(frozen=True)
class Demand:
    vehicle_id: str
    energy_kwh: float
    max_power_kw: float

    def request_body(self, request_id: UUID, departure: datetime | None = None) -> dict[str, Any]:
        """JSON body of a ChargeRequest (what POST /v1/charge-requests takes)."""
        body: dict[str, Any] = {
            "request_id": str(request_id),
            "vehicle_id": self.vehicle_id,
            "energy_kwh": self.energy_kwh,
            "max_power_kw": self.max_power_kw,
        }
        if departure is not None:
            body["departure"] = departure.isoformat()
        return body


def _clamp(x: float, bounds: tuple[float, float]) -> float:
    return min(max(x, bounds[0]), bounds[1])


def sample_demand(rng: random.Random, index: int, mix: DemandMix = DEFAULT_MIX) -> Demand:
    lo, hi = mix.energy_kwh
    # Rounding can step just past a bound; clamp so the bounds hold exactly.
    energy = _clamp(round(rng.triangular(lo, hi, mix.energy_mode_kwh), 1), mix.energy_kwh)
    if rng.random() < mix.dc_share:
        power = _clamp(round(rng.uniform(*mix.dc_kw)), mix.dc_kw)
    else:
        power = _clamp(round(rng.uniform(*mix.ac_kw), 1), mix.ac_kw)
    return Demand(vehicle_id=f"EV-{index:05d}", energy_kwh=energy, max_power_kw=float(power))
