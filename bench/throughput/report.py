"""Pure helpers of the throughput bench: rates from samples, tables, wrk output. No I/O."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Sample = tuple[float, float]  # (seconds, a count or depth)


def crossing_time(samples: Sequence[Sample], level: float) -> float | None:
    """When a non-decreasing series first reached ``level`` (linear between samples)."""
    prev: Sample | None = None
    for t, v in samples:
        if v >= level:
            if prev is None or v == prev[1]:
                return t
            t0, v0 = prev
            return t0 + (t - t0) * (level - v0) / (v - v0)
        prev = (t, v)
    return None


def window_rate(
    samples: Sequence[Sample], total: float, lo: float = 0.1, hi: float = 0.9
) -> float | None:
    """Messages per second while the count went from ``lo`` to ``hi`` of ``total``.

    Leaves out the start (process start-up, first prefetch) and the tail (the last messages
    trickling) so that what is measured is the sustained rate.
    """
    t_lo = crossing_time(samples, lo * total)
    t_hi = crossing_time(samples, hi * total)
    if t_lo is None or t_hi is None or t_hi <= t_lo:
        return None
    return (hi - lo) * total / (t_hi - t_lo)


def first_reaching(samples: Sequence[Sample], level: float) -> int | None:
    """Index of the first sample at or above ``level``."""
    return next((i for i, (_, v) in enumerate(samples) if v >= level), None)


def window_cpu_us(
    samples: Sequence[Sample],
    cpu: Sequence[Sequence[float]],
    total: float,
    lo: float = 0.1,
    hi: float = 0.9,
) -> list[float | None]:
    """CPU microseconds per message of each watched process, over the same window as
    ``window_rate`` (between the samples that first reached ``lo`` and ``hi`` of ``total``)."""
    i, j = first_reaching(samples, lo * total), first_reaching(samples, hi * total)
    width = len(cpu[0]) if cpu else 0
    if i is None or j is None or j <= i:
        return [None] * width
    moved = samples[j][1] - samples[i][1]
    out: list[float | None] = []
    for k in range(width):
        used = cpu[j][k] - cpu[i][k]
        out.append(None if math.isnan(used) or moved <= 0 else used / moved * 1e6)
    return out


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def slope(samples: Sequence[Sample]) -> float:
    """Least-squares slope of a series (units per second); 0 for fewer than two samples."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    if den == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in samples) / den


def backlog_flat(samples: Sequence[Sample], rate: float, tolerance_s: float = 1.0) -> bool:
    """A backlog is flat when it stays under ``tolerance_s`` seconds of arrivals and does not
    grow (its trend over the run is under 5 % of the arrival rate)."""
    if not samples:
        return True
    worst = max(v for _, v in samples)
    return worst <= rate * tolerance_s and slope(samples) <= 0.05 * rate


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append([c if isinstance(c, str) else fmt(c) for c in cells])

    def render(self) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))

        def line(cells: Sequence[str]) -> str:
            parts = [
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        out = [self.title, line(self.headers), line(["-" * w for w in widths])]
        out += [line(r) for r in self.rows]
        out += [f"  {n}" for n in self.notes]
        return "\n".join(out)


# -- wrk ----------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if m is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rate: float
    latency_ms: dict[str, float]  # "50", "75", "90", "99" -> ms
    statuses: dict[str, int]  # from the Lua script's done(): status -> count
    socket_errors: str | None


def parse_wrk(text: str) -> WrkResult:
    """Parse ``wrk --latency`` output plus the ``status <code> <count>`` lines our Lua prints."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError("no request count in wrk output")
    requests = int(m.group(1))
    seconds = _ms(m.group(2) + m.group(3)) / 1e3
    rate_m = re.search(r"Requests/sec:\s*([\d.]+)", text)
    rate = float(rate_m.group(1)) if rate_m else requests / seconds
    latency: dict[str, float] = {}
    dist = text.split("Latency Distribution", 1)
    if len(dist) == 2:
        for pct, value in re.findall(r"^\s*(\d+(?:\.\d+)?)%\s+(\S+)", dist[1], re.MULTILINE):
            latency[pct.removesuffix(".000")] = _ms(value)
    statuses = {code: int(n) for code, n in re.findall(r"^status (\S+) (\d+)$", text, re.M)}
    err = re.search(r"Socket errors:.*", text)
    return WrkResult(requests, seconds, rate, latency, statuses, err.group(0) if err else None)


WRK_LUA = r"""
-- POST a valid ChargeRequest with a fresh request_id each time; count answers by status.
local hex = "0123456789abcdef"
local function uuid4()
  local t = {}
  for i = 1, 32 do
    local r = math.random(16)
    if i == 13 then r = 5 elseif i == 17 then r = 9 + (r % 4) end
    t[i] = hex:sub(r, r)
  end
  local s = table.concat(t)
  return s:sub(1, 8) .. "-" .. s:sub(9, 12) .. "-" .. s:sub(13, 16) .. "-" .. s:sub(17, 20)
    .. "-" .. s:sub(21, 32)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local pause_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  statuses = {}
  math.randomseed(tonumber(os.getenv("BENCH_SEED") or "1") + 7919 * id)
end

function request()
  local body = '{"request_id":"' .. uuid4() .. '","vehicle_id":"EV-bench","energy_kwh":30.5,'
    .. '"max_power_kw":11}'
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

if pause_ms > 0 then
  function delay()
    return pause_ms
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do total[code] = (total[code] or 0) + n end
  end
  for code, n in pairs(total) do io.write(string.format("status %s %d\n", code, n)) end
end
"""
