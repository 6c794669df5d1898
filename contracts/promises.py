"""What ``Heartbeat.committed_kw`` counts per car, the rule worker and dispatcher share.

A car without a departure is promised its max power. A car with one needs only the power that
fills it by then, ``energy / time left`` (at most its max), and nothing once its departure has
passed (it leaves unserved wherever it is). If every car a substation holds got its promise from
now on, each would be full by its departure (or, without one, charge at its max): a substation
whose promises sum to at most its capacity, with a bay for each car, can meet every demand it
holds.
"""

from __future__ import annotations

SECONDS_PER_HOUR = 3600.0


def promised_kw(energy_kwh: float, max_kw: float, seconds_left: float | None) -> float:
    """The power promised to a car needing ``energy_kwh`` at most ``max_kw``, leaving in
    ``seconds_left`` (simulated seconds at a worker's time scale; None: it stays until full)."""
    if seconds_left is None:
        return max_kw
    if seconds_left <= 0:
        return 0.0
    return min(max_kw, energy_kwh * SECONDS_PER_HOUR / seconds_left)
