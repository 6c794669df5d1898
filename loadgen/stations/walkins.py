"""Walk-in cars: drivers who plug in without a remote start. Seeded, pure, no I/O.

A car's energy and most power come from loadgen's demand mix (``loadgen.demand``): 70 % AC at
7-11 kW, 30 % DC at 50-150 kW, 10-60 kWh. How long it stays is our modelling choice: the time to
take its energy at min(car max, EVSE max), times a slack drawn uniformly from 0.8 to 3 (some
drivers leave before the car is full), at least 15 minutes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from loadgen.demand import DEFAULT_MIX, DemandMix, sample_demand

PARKING_SLACK = (0.8, 3.0)
PARKING_MIN_S = 15 * 60.0
AC_VOLTS = 400  # line-to-line, three phase
AC_PHASE_VOLTS = 230.0
AC_MIN_A = 6  # IEC 61851's lowest current a car may be given
DC_VOLTS = 500


@dataclass(frozen=True)
class WalkInConfig:
    per_hour: float = 0.0  # arrivals per station per simulated hour; 0: none
    max_count: int = 10_000  # plugged-in walk-ins over the whole fleet
    seed: int | None = None
    mix: DemandMix = DEFAULT_MIX


@dataclass(frozen=True)
class WalkInCar:
    number: int
    need_wh: float
    max_w: float
    parking_s: float  # simulated seconds until the driver leaves
    dc: bool


def sample_walk_in(
    rng: random.Random, number: int, evse_max_w: float, mix: DemandMix = DEFAULT_MIX
) -> WalkInCar:
    demand = sample_demand(rng, number, mix)
    need_wh = demand.energy_kwh * 1000
    max_w = demand.max_power_kw * 1000
    charge_s = need_wh / min(max_w, evse_max_w) * 3600
    parking_s = max(PARKING_MIN_S, charge_s * rng.uniform(*PARKING_SLACK))
    return WalkInCar(number, need_wh, max_w, parking_s, dc=demand.max_power_kw >= mix.dc_kw[0])


def next_arrival_wall_s(
    rng: random.Random, per_hour: float, stations: int, time_scale: float
) -> float:
    """Wall seconds to the next arrival at any of ``stations`` (Poisson, ``per_hour`` each)."""
    return rng.expovariate(per_hour * stations * time_scale / 3600)


def charging_needs(car: WalkInCar, departure_time: str) -> dict[str, Any]:
    """NotifyEVChargingNeeds' chargingNeeds (snake_case, as the ``ocpp`` package takes it)."""
    energy = round(car.need_wh)
    if car.dc:
        return {
            "requested_energy_transfer": "DC",
            "departure_time": departure_time,
            "dc_charging_parameters": {
                "ev_max_current": math.ceil(car.max_w / DC_VOLTS),
                "ev_max_voltage": DC_VOLTS,
                "energy_amount": energy,
                "ev_max_power": round(car.max_w),
            },
        }
    return {
        "requested_energy_transfer": "AC_three_phase",
        "departure_time": departure_time,
        "ac_charging_parameters": {
            "energy_amount": energy,
            "ev_min_current": AC_MIN_A,
            "ev_max_current": math.floor(car.max_w / (3 * AC_PHASE_VOLTS)),
            "ev_max_voltage": AC_VOLTS,
        },
    }
