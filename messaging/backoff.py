"""Reconnect delays: exponential, capped, with jitter so a restarted broker is not stampeded."""

from __future__ import annotations

import random


def compute_backoff(
    attempt: int, *, base_s: float = 0.25, cap_s: float = 15.0, rng: random.Random | None = None
) -> float:
    """Delay before reconnect ``attempt`` (0-based): half fixed, half random ("equal jitter")."""
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 30)))
    r = (rng or random).random()
    return ceiling / 2 + r * ceiling / 2
