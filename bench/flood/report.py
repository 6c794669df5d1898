"""The flood bench's figures and tables: percentiles, one row per phase, the verdicts. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bench.table import render
from loadgen.report import percentile as nearest_rank

# The acceptance point: p99 decision time under the flood within this many times the quiet one.
TARGET_P99_RATIO = 2.0
OUTCOMES = ("rate", "no_queue", "full")
# The other processes whose CPU is shown beside the dispatcher's.
OTHERS = ("broker", "load", "workers")


def percentile(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile (loadgen's report), None for no values."""
    if not 0 <= p <= 100:
        raise ValueError("p must be within [0, 100]")
    ordered = sorted(values)
    return nearest_rank(ordered, p) if ordered else None


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


@dataclass
class PhaseFigures:
    """What one phase measured (the JSON keeps all of it; the tables show most)."""

    name: str
    seconds: float
    sent: int = 0
    completed: int = 0
    failed: int = 0  # rejected or dead-lettered: never expected here
    decisions: int = 0
    holds: int = 0  # decisions that found no room (the request waited)
    decision_p50_us: float | None = None
    decision_p99_us: float | None = None
    decision_max_us: float | None = None
    decision_cpu_p50_us: float | None = None  # the same decisions' CPU time (this thread's)
    decision_cpu_p99_us: float | None = None
    dispatched: int = 0
    dispatch_p50_ms: float | None = None
    dispatch_p99_ms: float | None = None
    heartbeats: int = 0  # handled by the dispatcher (real and fake)
    fake_published: int = 0
    heartbeat_mean_us: float | None = None
    heartbeat_busy_pct: float | None = None  # share of wall time inside the heartbeat handler
    probes: int = 0
    probe_p99_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    loop_lag_max_ms: float | None = None
    cpu_pct: float | None = None  # the bench process (the dispatcher), % of one core
    others_cpu_pct: dict[str, float] = field(default_factory=dict)  # broker, load, workers
    # The dispatcher's thread switched out while it could run (another process took the core).
    preempted_per_s: float | None = None
    refused: dict[str, int] = field(default_factory=dict)
    table_max: int = 0
    eligible_min: int | None = None
    real_heartbeat_age_max_s: float | None = None


def fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def requests_table(phases: Sequence[PhaseFigures], quiet: PhaseFigures) -> list[str]:
    header = [
        "phase",
        "s",
        "requests sent / completed",
        "decisions (held)",
        "decision p50 us",
        "p99 us",
        "p99 x quiet",
        "max us",
        "CPU p50 / p99 us",
        "CPU p99 x quiet",
        "dispatch p50 / p99 ms",
        "p99 x quiet",
    ]
    body = [
        [
            p.name,
            f"{p.seconds:g}",
            f"{p.sent:,} / {p.completed:,}" + (f" ({p.failed:,} failed)" if p.failed else ""),
            f"{p.decisions:,} ({p.holds:,})",
            fmt(p.decision_p50_us, 2),
            fmt(p.decision_p99_us, 2),
            fmt_ratio(ratio(p.decision_p99_us, quiet.decision_p99_us)),
            fmt(p.decision_max_us, 0),
            f"{fmt(p.decision_cpu_p50_us, 2)} / {fmt(p.decision_cpu_p99_us, 2)}",
            fmt_ratio(ratio(p.decision_cpu_p99_us, quiet.decision_cpu_p99_us)),
            f"{fmt(p.dispatch_p50_ms, 2)} / {fmt(p.dispatch_p99_ms, 2)}",
            fmt_ratio(ratio(p.dispatch_p99_ms, quiet.dispatch_p99_ms)),
        ]
        for p in phases
    ]
    return render(header, body)


def heartbeats_table(phases: Sequence[PhaseFigures]) -> list[str]:
    header = [
        "phase",
        "fake sent",
        "heartbeats handled",
        "us each",
        "loop busy on them",
        "refused rate / no_queue / full",
        "probes (p99 ms)",
        "loop lag p99 / max ms",
        "CPU % dispatcher / broker / load / workers",
        "preempted /s",
        "table max",
        "eligible min",
        "real hb age max s",
    ]
    body = [
        [
            p.name,
            f"{p.fake_published:,}",
            f"{p.heartbeats:,}",
            fmt(p.heartbeat_mean_us, 1),
            "-" if p.heartbeat_busy_pct is None else f"{p.heartbeat_busy_pct:.1f}%",
            " / ".join(f"{p.refused.get(o, 0):,}" for o in OUTCOMES),
            f"{p.probes:,} ({fmt(p.probe_p99_ms, 1)})",
            f"{fmt(p.loop_lag_p99_ms, 1)} / {fmt(p.loop_lag_max_ms, 1)}",
            " / ".join(fmt(v, 0) for v in (p.cpu_pct, *(p.others_cpu_pct.get(k) for k in OTHERS))),
            fmt(p.preempted_per_s, 0),
            f"{p.table_max:,}",
            fmt(p.eligible_min),
            fmt(p.real_heartbeat_age_max_s, 2),
        ]
        for p in phases
    ]
    return render(header, body)


@dataclass
class Verdict:
    what: str
    met: bool
    detail: str

    def line(self) -> str:
        return f"{'met   ' if self.met else 'MISSED'}  {self.what}: {self.detail}"


def verdicts(
    quiet: PhaseFigures,
    flood: PhaseFigures,
    phases: Sequence[PhaseFigures],
    *,
    real: int,
    fake_queues: int | None,
    fake_probed: int,
    table_at_end: int,
) -> list[Verdict]:
    """The acceptance point, split in its four claims."""
    p99 = ratio(flood.decision_p99_us, quiet.decision_p99_us)
    sent = sum(p.sent for p in phases)
    completed = sum(p.completed for p in phases)
    table_max = max((p.table_max for p in phases), default=0)
    return [
        Verdict(
            f"decision p99 under the flood <= {TARGET_P99_RATIO:g}x the quiet figure",
            p99 is not None and p99 <= TARGET_P99_RATIO,
            f"{fmt(flood.decision_p99_us, 2)} us against {fmt(quiet.decision_p99_us, 2)} us: "
            f"{fmt_ratio(p99)} ({flood.decisions:,} and {quiet.decisions:,} decisions timed)",
        ),
        Verdict(
            "real requests keep completing (completed = sent)",
            completed == sent and sent > 0 and flood.completed == flood.sent > 0,
            f"{completed:,} of {sent:,} completed, {flood.completed:,} of {flood.sent:,} "
            "sent during the flood",
        ),
        Verdict(
            "no queue declared for a fake id",
            fake_queues == 0,
            ("not checked" if fake_queues is None else f"{fake_queues:,}")
            + f" of {fake_probed:,} fake ids have a queue (passive declares)",
        ),
        Verdict(
            f"the dispatcher's table holds the {real} real substations only",
            table_at_end == real and table_max == real,
            f"{table_at_end} at the end, at most {table_max} during the run",
        ),
    ]
