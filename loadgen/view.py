"""How loadgen shows a grid: a rich live table on a terminal, periodic plain lines otherwise.

Both stay the same size whatever the number of substations: at most ``limit`` of them (those
this run uses, then the live and busiest: ``GridState.busiest``) and one line for the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from contracts import EventKind
from loadgen.run import RunResult
from loadgen.state import ACCEPTED_STATUSES, DEFAULT_TOP, GridState
from messaging.waiting import sleep_unless

STATUS_STYLE = {"up": "green", "draining": "yellow", "stale": "red"}


def substation_table(
    state: GridState, now: datetime, title: str = "substations", limit: int = DEFAULT_TOP
) -> Table:
    shown, more = state.busiest(limit, now)
    table = Table(title=title, title_justify="left", expand=False, caption=_ignored(state))
    table.add_column("substation")
    table.add_column("load kW", justify="right")
    table.add_column("capacity kW", justify="right")
    table.add_column("utilization", min_width=28)
    table.add_column("active", justify="right")
    table.add_column("queued", justify="right")
    table.add_column("status")
    table.add_column("heartbeat age", justify="right")
    for sid in shown:
        view = state.substations[sid]
        hb = view.heartbeat
        status = view.status(now)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=hb.capacity_kw, completed=min(hb.load_kw, hb.capacity_kw), width=20),
            f"{view.utilization:4.0%}",
        )
        table.add_row(
            sid,
            f"{hb.load_kw:.1f}",
            f"{hb.capacity_kw:.0f}",
            bar,
            f"{hb.active_sessions}/{hb.bays}",
            str(hb.queued),
            Text(status, style=STATUS_STYLE.get(status, "")),
            f"{view.age_s(now):.1f}s",
        )
    if more:
        table.add_row(f"… and {more} more substations", *[""] * 7, style="dim")
    if not state.substations:
        table.add_row("(no heartbeat yet)", *[""] * 7)
    return table


def _ignored(state: GridState) -> str | None:
    n = state.ignored_heartbeats
    if not n:
        return None
    return f"{n} heartbeats of substations beyond the {state.max_substations} tracked ignored"


def progress_text(result: RunResult) -> str:
    state = result.state
    window = result.sending_s or result.elapsed_s  # the send rate, frozen once all are sent
    rate = state.sent / window if window > 0 else 0.0
    suspect = f"  suspect {state.suspect}" if state.suspects else ""
    return (
        f"sent {state.sent}/{result.pacing.planned}  confirmed {len(state.accepted)}  "
        f"completed {state.accepted_completed}{suspect}{energy_text(state)}  "
        f"in flight {state.in_flight}  {rate:.0f}/s  {result.elapsed_s:.1f}s"
    )


def energy_text(state: GridState) -> str:
    """Energy delivered of requested and demands met so far (empty before any completion
    says so)."""
    energy = state.energy()
    if not energy.demands:
        return ""
    return (
        f"  energy {energy.delivered_kwh:.0f}/{energy.requested_kwh:.0f} kWh"
        f"  met {energy.demands_met}/{energy.demands}"
    )


def run_progress(result: RunResult) -> RenderableType:
    """A progress bar of what was sent against the plan, with the counts that matter."""
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(result.pacing.planned, 1), completed=result.state.sent, width=30),
        progress_text(result),
    )
    return bar


def counts_text(state: GridState, elapsed_s: float) -> str:
    failed = state.count(EventKind.DEAD_LETTERED) + state.count(EventKind.REJECTED)
    text = (
        f"sent {state.sent}  accepted {len(state.accepted)}  "
        f"dispatched {state.count(EventKind.DISPATCHED)}  started {state.count(EventKind.STARTED)}"
        f"  completed {state.accepted_completed}/{len(state.accepted)}{energy_text(state)}"
    )
    if failed:
        text += f"  failed {failed}"
    refused = sum(
        n for status, n in state.ingress_statuses.items() if status not in ACCEPTED_STATUSES
    )
    if refused:
        text += f"  not accepted {refused}"
    return text + f"  elapsed {elapsed_s:.1f}s"


def status_line(
    state: GridState,
    now: datetime,
    elapsed_s: float,
    counts: bool = True,
    limit: int = DEFAULT_TOP,
) -> str:
    """One plain line for logs and pipes."""
    parts = [counts_text(state, elapsed_s)] if counts else [f"elapsed {elapsed_s:.1f}s"]
    shown, more = state.busiest(limit, now)
    for sid in shown:
        view = state.substations[sid]
        hb = view.heartbeat
        parts.append(
            f"{sid} {hb.load_kw:.0f}/{hb.capacity_kw:.0f}kW {view.utilization:.0%} "
            f"active {hb.active_sessions} queued {hb.queued} {view.status(now)}"
        )
    if more:
        parts.append(f"… and {more} more substations")
    if state.ignored_heartbeats:
        parts.append(f"{state.ignored_heartbeats} heartbeats of untracked substations ignored")
    return " | ".join(parts)


def print_error(console: Console, message: str) -> None:
    """One error, verbatim (no markup: log tails contain brackets), unwrapped."""
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


class LiveView:
    """Redraw ``render()`` in place on a terminal; print ``line()`` every few seconds otherwise
    (CI logs, pipes), where rich's live display would show nothing until the end."""

    def __init__(
        self,
        console: Console,
        render: Callable[[], RenderableType],
        line: Callable[[], str],
        *,
        refresh_s: float = 0.25,
        line_every_s: float = 2.0,
    ) -> None:
        self.console = console
        self.render = render
        self.line = line
        self.refresh_s = refresh_s
        self.line_every_s = line_every_s

    async def run(self, done: asyncio.Event) -> None:
        """Until ``done`` is set (or cancelled); the last state is always shown."""
        if self.console.is_terminal:
            # auto_refresh=False: redraw from this loop, no refresh thread.
            with Live(self.render(), console=self.console, auto_refresh=False) as live:
                try:
                    while not done.is_set():
                        live.update(self.render(), refresh=True)
                        await sleep_unless(done, self.refresh_s)
                finally:
                    live.update(self.render(), refresh=True)
        else:
            printed: list[str] = []

            def show() -> None:
                # A line the same as the one before says nothing new (a run that ends while
                # "connecting..." would print it twice).
                line = self.line()
                if printed != [line]:
                    self.console.print(line, soft_wrap=True, highlight=False)
                    printed[:] = [line]

            try:
                while not done.is_set():
                    show()
                    await sleep_unless(done, self.line_every_s)
            finally:
                show()
