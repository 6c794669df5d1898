"""What a run did, in numbers: counts, pacing, latency per stage, and each substation's share.

``build_report`` is pure (a RunResult in, a Report out); ``print_report``, ``write_json`` and
``write_plot`` present it. Counts are of distinct request ids:

* ``sent``: requests loadgen issued; ``accepted``: the gateway answered 202 / the broker confirmed;
* ``rejected``: refused at the ingress (any other answer, by status or error) plus accepted ones
  rejected or dead-lettered downstream (by reason);
* ``completed``: accepted and completed; ``duplicates``: completions beyond the first (each
  its own event, the same energy: the request was charged again);
* ``suspect``: completions not to be believed (of a request never seen dispatched, or a second
  one with another energy), counted neither as completed nor as duplicates;
* ``unfinished``: accepted, neither completed nor rejected within the settle time, and still in
  the grid: held in ``<ns>.requests``, queued at a substation or charging there (``unfinished``
  in the JSON: ``total``, ``held``, ``queued`` and ``charging`` by substation, ``where``);
* ``lost``: accepted, neither completed nor rejected, and no longer held by the grid. The grid
  counts requests, loadgen knows ids: if the grid holds at least as many requests as are missing
  at the places their events point to, none is lost; if fewer, the difference is
  (``loadgen.unfinished`` has the exact rule; ``grid_holdings`` in the JSON, the counts).

The per-substation table lists every substation while there are at most ``limit``; beyond, only
those this run sent to or that completed its work (the rest is a count), and it prints at most
``limit`` rows (the busiest by requests) and a line for the others.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.table import Table

from contracts import EventKind
from loadgen.profiles import mean_rate
from loadgen.run import RunResult
from loadgen.state import ACCEPTED_STATUSES, DEFAULT_TOP, GridState, ReportRow
from loadgen.unfinished import account
from messaging import exit_codes

STAGES = (
    ("accepted", None),
    ("dispatched", EventKind.DISPATCHED),
    ("started", EventKind.STARTED),
    ("completed", EventKind.COMPLETED),
)
REASON_CHARS = 80
# Distinct downstream rejection reasons printed (the JSON has them all).
REASONS_SHOWN = 10
FIRST_IDS = 20


@dataclass(frozen=True)
class Latency:
    count: int
    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float


@dataclass(frozen=True)
class Report:
    via: str
    profile: str
    sent: int
    accepted: int
    rejected: int
    completed: int
    duplicates: int
    lost: int
    rejected_at_ingress: dict[str, int]
    rejected_downstream: dict[str, int]
    planned: int
    target_rate_per_s: float | None
    achieved_rate_per_s: float
    max_send_lateness_s: float
    accepted_per_s: float
    completed_per_s: float
    elapsed_s: float
    settled: bool
    latency: dict[str, Latency]
    substations: list[ReportRow]
    imbalance: float
    # Over this run's completions; demands: those whose worker said whether it was met.
    energy_requested_kwh: float = 0.0
    energy_delivered_kwh: float = 0.0
    demands: int = 0
    demands_met: int = 0
    lost_ids: list[str] = field(default_factory=list)
    suspect: int = 0
    suspect_ids: list[str] = field(default_factory=list)
    # Events of requests this run did not send, messages that were no valid contract message,
    # heartbeats of substations beyond what loadgen tracks: ignored, and counted here.
    foreign_events: int = 0
    invalid_messages: int = 0
    ignored_heartbeats: int = 0
    substations_not_listed: int = 0
    # Accepted requests still in the grid: {"total", "held", "queued": {sid: n},
    # "charging": {sid: n}, "where": {label: n}} (``Accounting.unfinished_json``).
    unfinished: dict[str, Any] = field(default_factory=lambda: {"total": 0})
    unfinished_ids: list[str] = field(default_factory=list)
    # What the grid said it holds (``Holdings.to_json``); None when it was not asked.
    grid_holdings: dict[str, Any] | None = None

    @property
    def unfinished_total(self) -> int:
        return int(self.unfinished.get("total", 0))

    @property
    def exit_code(self) -> int:
        """The CLI's contract (``messaging.exit_codes``): 1 when an accepted request was lost,
        else 4 when some are unfinished (still in the grid), else 0."""
        if self.lost:
            return exit_codes.FAILURE
        if self.unfinished_total:
            return exit_codes.UNFINISHED
        return exit_codes.OK

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["exit_code"] = self.exit_code
        return doc


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in [0, 100])."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _latency(values: list[float]) -> Latency:
    v = sorted(values)
    return Latency(
        len(v),
        percentile(v, 50),
        percentile(v, 95),
        percentile(v, 99),
        v[-1] if v else math.nan,
    )


def _stage_latencies(state: GridState) -> dict[str, Latency]:
    out: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    for rid in state.accepted:
        sent = state.sent_at.get(rid)
        if sent is None:
            continue
        out["accepted"].append(_seconds(sent, state.accepted_at.get(rid)))
        times = state.first_at.get(rid, {})
        for name, kind in STAGES[1:]:
            if kind in times:
                out[name].append(_seconds(sent, times[kind]))
    return {
        name: _latency([x for x in values if not math.isnan(x)]) for name, values in out.items()
    }


def _seconds(start: datetime, end: datetime | None) -> float:
    return math.nan if end is None else max(0.0, (end - start).total_seconds())


def _reason(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else "unknown"
    return first[:REASON_CHARS]


def build_report(
    result: RunResult, order: list[str] | None = None, limit: int = DEFAULT_TOP
) -> Report:
    state, options, pacing = result.state, result.options, result.pacing
    ingress = {k: v for k, v in state.ingress_statuses.items() if k not in ACCEPTED_STATUSES}
    failed = state.accepted_failed()
    downstream = Counter(_reason(state.failure_reasons.get(r, "unknown")) for r in failed)
    completed = state.accepted_completed
    holdings = result.holdings
    accounting = account({rid: state.place(rid) for rid in state.lost()}, holdings)
    lost = set(accounting.lost_ids)
    requests_queue = holdings.requests_queue if holdings else "<ns>.requests"
    rows = state.report(order, limit)
    means = [r.mean_utilization for r in rows if r.capacity_kw > 0]
    mean_of_means = sum(means) / len(means) if means else 0.0
    completion_span = max(result.elapsed_s, 1e-9)
    last_completion = max(
        (t[EventKind.COMPLETED] for r, t in state.first_at.items() if EventKind.COMPLETED in t),
        default=None,
    )
    if last_completion is not None:
        completion_span = max((last_completion - result.started_at).total_seconds(), 1e-9)
    # Rate over the sending window: n sends span n-1 intervals.
    achieved = (state.sent - 1) / pacing.span_s if pacing.span_s > 0 else 0.0
    # Poisson profiles only promise their mean rate; a replay has no rate of its own.
    target = None if options.profile == "replay" else mean_rate(options.profile, options.rate)
    energy = state.energy()
    return Report(
        via=options.via,
        profile=options.profile,
        sent=state.sent,
        accepted=len(state.accepted),
        rejected=sum(ingress.values()) + len(failed),
        completed=completed,
        duplicates=state.duplicates,
        lost=len(lost),
        rejected_at_ingress=dict(sorted(ingress.items())),
        rejected_downstream=dict(downstream.most_common()),
        planned=pacing.planned,
        target_rate_per_s=target,
        achieved_rate_per_s=achieved,
        max_send_lateness_s=pacing.max_late_s,
        accepted_per_s=len(state.accepted) / max(result.sending_s, 1e-9),
        completed_per_s=completed / completion_span,
        elapsed_s=result.elapsed_s,
        settled=result.settled,
        latency=_stage_latencies(state),
        substations=rows,
        imbalance=max(means) / mean_of_means if mean_of_means > 0 else math.nan,
        energy_requested_kwh=energy.requested_kwh,
        energy_delivered_kwh=energy.delivered_kwh,
        demands=energy.demands,
        demands_met=energy.demands_met,
        lost_ids=[str(r) for r in _first(lost, FIRST_IDS)],
        suspect=state.suspect,
        suspect_ids=[str(r) for r in _first(state.suspect_requests(), FIRST_IDS)],
        foreign_events=state.foreign_events,
        invalid_messages=state.invalid_messages,
        ignored_heartbeats=state.ignored_heartbeats,
        substations_not_listed=state.not_listed(rows),
        unfinished=accounting.unfinished_json(requests_queue),
        unfinished_ids=[str(r) for r in _first(set(accounting.unfinished_ids), FIRST_IDS)],
        grid_holdings=holdings.to_json() if holdings else None,
    )


def _first(ids: set[UUID], n: int) -> list[UUID]:
    return sorted(ids, key=str)[:n]


# -- presentation ---------------------------------------------------------------------------


def _fmt_s(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def counts_table(report: Report) -> Table:
    t = Table(title=f"what happened ({report.profile} via {report.via})", title_justify="left")
    t.add_column("sent", justify="right")
    t.add_column("accepted", justify="right")
    t.add_column("rejected", justify="right")
    t.add_column("completed", justify="right")
    t.add_column("duplicates", justify="right")
    t.add_column("suspect", justify="right")
    t.add_column("unfinished", justify="right")
    t.add_column("lost", justify="right")
    lost_style = "bold red" if report.lost else "green"
    unfinished = report.unfinished_total
    t.add_row(
        str(report.sent),
        str(report.accepted),
        str(report.rejected),
        str(report.completed),
        str(report.duplicates),
        f"[yellow]{report.suspect}[/]" if report.suspect else "0",
        f"[yellow]{unfinished}[/]" if unfinished else "0",
        f"[{lost_style}]{report.lost}[/]",
    )
    return t


def latency_table(report: Report) -> Table:
    t = Table(title="latency from send, per stage", title_justify="left")
    for col in ("stage", "count", "p50", "p95", "p99", "max"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for name, lat in report.latency.items():
        t.add_row(
            name,
            str(lat.count),
            *(_fmt_s(x) for x in (lat.p50_s, lat.p95_s, lat.p99_s, lat.max_s)),
        )
    return t


def substations_table(
    rows: list[ReportRow],
    title: str = "per substation",
    *,
    limit: int | None = None,
    not_listed: int = 0,
) -> Table:
    """The listed rows, at most ``limit`` of them (the most requests first chosen, shown in
    their order); the others, and ``not_listed`` substations, summed up in one line each."""
    shown, hidden = rows, []
    if limit is not None and len(rows) > limit:
        top = {id(r) for r in sorted(rows, key=lambda r: -r.requests)[:limit]}
        shown = [r for r in rows if id(r) in top]
        hidden = [r for r in rows if id(r) not in top]
    caption = f"… and {not_listed} more substations that did none of this run's work"
    t = Table(
        title=title,
        title_justify="left",
        caption=caption if not_listed else None,
        caption_justify="left",
    )
    t.add_column("substation")
    for col in (
        "capacity kW",
        "requests",
        "energy kWh",
        "of requested",
        "demands met",
        "energy share",
        "capacity share",
        "peak utilization",
        "mean utilization",
    ):
        t.add_column(col, justify="right")
    for r in shown:
        t.add_row(
            r.substation_id,
            f"{r.capacity_kw:.0f}",
            str(r.requests),
            f"{r.energy_kwh:.1f}",
            _of_requested([r]),
            _met([r]),
            f"{r.energy_share:.1%}",
            f"{r.capacity_share:.1%}",
            f"{r.peak_utilization:.0%}",
            f"{r.mean_utilization:.0%}",
        )
    if hidden:
        t.add_row(
            f"… and {len(hidden)} more",
            f"{sum(r.capacity_kw for r in hidden):.0f}",
            str(sum(r.requests for r in hidden)),
            f"{sum(r.energy_kwh for r in hidden):.1f}",
            _of_requested(hidden),
            _met(hidden),
            *[""] * 4,
            style="dim",
        )
    if rows:
        t.add_section()
        t.add_row(
            "total",
            f"{sum(r.capacity_kw for r in rows):.0f}",
            str(sum(r.requests for r in rows)),
            f"{sum(r.energy_kwh for r in rows):.1f}",
            _of_requested(rows),
            _met(rows),
            *[""] * 4,
        )
    return t


def _of_requested(rows: list[ReportRow]) -> str:
    """Delivered over requested, of the completions that said both."""
    requested = sum(r.energy_requested_kwh for r in rows)
    if not requested:
        return "-"
    delivered = sum(r.energy_kwh for r in rows if r.demands)
    return f"{delivered / requested:.1%}"


def _met(rows: list[ReportRow]) -> str:
    demands = sum(r.demands for r in rows)
    return f"{sum(r.demands_met for r in rows)}/{demands}" if demands else "-"


def print_report(console: Console, report: Report, limit: int = DEFAULT_TOP) -> None:
    """The report on screen; bounded whatever the number of substations and reasons."""
    console.print(counts_table(report))
    if report.rejected_at_ingress:
        console.print(
            "rejected at the ingress: "
            + ", ".join(f"{k} x{v}" for k, v in report.rejected_at_ingress.items()),
            soft_wrap=True,
        )
    if report.rejected_downstream:
        reasons = list(report.rejected_downstream.items())
        text = "; ".join(f"{k} x{v}" for k, v in reasons[:REASONS_SHOWN])
        if len(reasons) > REASONS_SHOWN:
            text += f"; … and {len(reasons) - REASONS_SHOWN} more reasons"
        console.print("rejected downstream: " + text, soft_wrap=True, markup=False)
    pacing = f"sent {report.sent}/{report.planned} at {report.achieved_rate_per_s:.1f}/s"
    if report.target_rate_per_s:
        off = report.achieved_rate_per_s / report.target_rate_per_s - 1
        pacing += f" (target {report.target_rate_per_s:g}/s, {off:+.1%})"
    pacing += f", latest send {_fmt_s(report.max_send_lateness_s)} behind schedule"
    console.print(pacing, highlight=False)
    console.print(
        f"throughput: accepted {report.accepted_per_s:.1f}/s while sending, "
        f"completed {report.completed_per_s:.1f}/s; run {report.elapsed_s:.1f}s",
        highlight=False,
    )
    console.print(latency_table(report))
    if report.demands:
        console.print(energy_line(report), highlight=False)
    console.print(
        substations_table(report.substations, limit=limit, not_listed=report.substations_not_listed)
    )
    if not math.isnan(report.imbalance):
        console.print(
            f"imbalance (max over mean of the substations' mean utilization): "
            f"{report.imbalance:.2f} (1.00 = even)",
            highlight=False,
        )
    ignored = {
        "events of requests this run did not send": report.foreign_events,
        "messages that are not valid contract messages": report.invalid_messages,
        "heartbeats of substations beyond the ones tracked": report.ignored_heartbeats,
    }
    if any(ignored.values()):
        console.print(
            "ignored: " + ", ".join(f"{n} {what}" for what, n in ignored.items() if n),
            highlight=False,
        )
    if report.suspect:
        console.print(
            f"[yellow]{report.suspect} suspect completions[/] (of a request never seen "
            "dispatched, or again with another energy), not counted as completed: "
            f"{', '.join(report.suspect_ids[:5])}",
            soft_wrap=True,
        )
    if report.unfinished_total:
        console.print(unfinished_text(report, limit), soft_wrap=True, markup=False)
    holdings = report.grid_holdings or {}
    for why in holdings.get("unread", [])[:REASONS_SHOWN]:
        console.print(f"could not count what the grid holds at {why}", soft_wrap=True, markup=False)
    if report.lost:
        console.print(
            f"[bold red]{report.lost} accepted requests lost[/]: neither completed nor "
            f"rejected, and not held by the grid (first: {', '.join(report.lost_ids[:5])})",
            soft_wrap=True,
        )
    elif report.unfinished_total:
        console.print(
            f"[yellow]nothing lost, {report.unfinished_total} unfinished[/]: still in the grid "
            "when the settle time was up (a longer --settle waits for them)",
            soft_wrap=True,
        )
    else:
        console.print(f"[green]nothing lost: {report.accepted} accepted, all accounted for[/]")


def energy_line(report: Report) -> str:
    """Energy delivered against requested, and demands met, over the run's completions."""
    requested = report.energy_requested_kwh
    share = f" ({report.energy_delivered_kwh / requested:.1%})" if requested else ""
    return (
        f"energy: {report.energy_delivered_kwh:.1f} of {requested:.1f} kWh requested "
        f"delivered{share}; demands met {report.demands_met}/{report.demands}"
    )


def unfinished_text(report: Report, limit: int = DEFAULT_TOP) -> str:
    """One line: how many are unfinished and where they wait (at most ``limit`` places)."""
    where = list(report.unfinished.get("where", {}).items())
    text = ", ".join(f"{n} {label}" for label, n in where[:limit])
    if len(where) > limit:
        rest = sum(n for _, n in where[limit:])
        text += f", {rest} at {len(where) - limit} more places"
    holdings = report.grid_holdings or {}
    counted = holdings.get("requests_counted_by")
    note = f" ({holdings.get('requests_queue')} counted by {counted})" if counted else ""
    head = f"{report.unfinished_total} accepted requests unfinished, still in the grid"
    return f"{head}: {text}{note}"


def write_json(report: Report, path: Path) -> None:
    """The report as JSON; figures that do not exist (no samples) are null, never NaN."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_no_nan(report.to_json()), indent=2, allow_nan=False) + "\n")


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def write_plot(state: GridState, path: Path, title: str, limit: int = DEFAULT_TOP) -> None:
    """Per-substation load over time (and its capacity), from every heartbeat, as a PNG: at
    most ``limit`` substations, those this run used first, then those heard from most."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    samples = sorted(state.history, key=lambda s: s.at)
    heard = Counter(s.substation_id for s in samples)
    drawn = sorted(heard, key=lambda sid: (sid not in state.involved, -heard[sid], sid))[:limit]
    fig, ax = plt.subplots(figsize=(10, 5))
    if samples:
        t0 = samples[0].at
        for sid in sorted(drawn):
            mine = [s for s in samples if s.substation_id == sid]
            xs = [(s.at - t0).total_seconds() for s in mine]
            (line,) = ax.plot(xs, [s.load_kw for s in mine], label=f"{sid} load")
            ax.axhline(mine[-1].capacity_kw, color=line.get_color(), linestyle="--", linewidth=0.8)
    ax.set_xlabel("seconds since the first heartbeat")
    ax.set_ylabel("kW (dashed: capacity)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
