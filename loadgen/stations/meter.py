"""Energy from a power schedule over simulated time: no clock, no I/O.

Power is constant between changes, so the energy is the exact sum of power x duration. A meter
can be capped (the car's need): it stops at the cap, and says when it reached it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

WH_PER_WS = 1 / 3600


def energy_wh(schedule: Sequence[tuple[float, float]], until_s: float) -> float:
    """Wh delivered by ``schedule`` ((from_s, power_w), sorted by time) up to ``until_s``."""
    total = 0.0
    for i, (start, power) in enumerate(schedule):
        end = schedule[i + 1][0] if i + 1 < len(schedule) else until_s
        end = min(end, until_s)
        if end > start:
            total += power * (end - start) * WH_PER_WS
    return total


@dataclass
class Meter:
    """An energy register (Wh) fed at ``power_w`` since ``at_s`` (simulated seconds)."""

    at_s: float
    power_w: float = 0.0
    energy_wh: float = 0.0
    cap_wh: float | None = None
    # Every power change, (from_s, power_w): what the register integrates, for checking.
    schedule: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.schedule.append((self.at_s, self.power_w))

    @property
    def full(self) -> bool:
        return self.cap_wh is not None and self.energy_wh >= self.cap_wh

    def advance(self, to_s: float) -> float | None:
        """Integrate up to ``to_s``; the simulated time the cap was reached, if it was (the
        power is 0 from then on)."""
        if to_s <= self.at_s:
            return None
        gained = self.power_w * (to_s - self.at_s) * WH_PER_WS
        if self.cap_wh is not None and self.power_w > 0 and self.energy_wh + gained >= self.cap_wh:
            full_at = self.at_s + (self.cap_wh - self.energy_wh) / (self.power_w * WH_PER_WS)
            self.energy_wh = self.cap_wh
            self.at_s = full_at
            self._set(0.0)
            self.at_s = to_s
            return full_at
        self.energy_wh += gained
        self.at_s = to_s
        return None

    def set_power(self, power_w: float, at_s: float) -> None:
        """From ``at_s`` on the power is ``power_w`` (0 once full)."""
        self.advance(at_s)
        self._set(0.0 if self.full else max(0.0, power_w))

    def _set(self, power_w: float) -> None:
        if power_w != self.power_w:
            self.power_w = power_w
            self.schedule.append((self.at_s, power_w))
