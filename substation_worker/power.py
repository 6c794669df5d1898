"""Sharing a substation's capacity among its charging sessions. Pure: no I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Enough passes to shave float rounding off the largest share; each pass removes the whole excess.
_MAX_FIXUP_PASSES = 64


def share_power(capacity_kw: float, demands_kw: Sequence[float]) -> list[float]:
    """Water-filling (max-min fair) share of ``capacity_kw``, in the order of ``demands_kw``.

    Sessions are served smallest demand first; each gets ``min(its demand, what remains /
    sessions left)``. So nobody gets more than its own maximum, the sessions that are held back
    all get the same (largest) share, and the capacity is used up whenever demand allows.
    The sum never exceeds ``capacity_kw``, also after float rounding.

    Args:
        capacity_kw: what the transformer can deliver, kW (>= 0).
        demands_kw: each session's maximum power (min of car and charger), kW (>= 0).
    """
    if not math.isfinite(capacity_kw) or capacity_kw < 0:
        raise ValueError(f"capacity_kw must be finite and >= 0, got {capacity_kw!r}")
    for d in demands_kw:
        if not math.isfinite(d) or d < 0:
            raise ValueError(f"demands must be finite and >= 0, got {d!r}")
    n = len(demands_kw)
    shares = [0.0] * n
    remaining = float(capacity_kw)
    for served, i in enumerate(sorted(range(n), key=lambda j: demands_kw[j])):
        give = min(float(demands_kw[i]), remaining / (n - served))
        shares[i] = give
        remaining = max(0.0, remaining - give)
    trim_to_capacity(shares, capacity_kw)
    return shares


def trim_to_capacity(shares: list[float], capacity_kw: float) -> None:
    """Rounding can put the sum a few ulps above capacity: take that off the largest share.

    In place. Every sharing ends with it, so no float sum of the shares exceeds ``capacity_kw``.
    """
    for _ in range(_MAX_FIXUP_PASSES):
        total = max(sum(shares), math.fsum(shares))
        if total <= capacity_kw:
            return
        i = max(range(len(shares)), key=shares.__getitem__)
        excess = total - capacity_kw
        shares[i] = max(0.0, shares[i] - max(excess, math.ulp(shares[i])))
    # Unreachable in practice; never hand out more than the transformer has.
    scale = capacity_kw / max(sum(shares), math.fsum(shares))
    for i, s in enumerate(shares):
        shares[i] = s * scale * (1 - 1e-12)
