"""A run on screen: the progress bar and the substations' table while it goes (plain lines in a
log), Ctrl-C to stop early with a report of what happened so far."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.text import Text

from loadgen.run import RunOptions, RunResult, run_load
from loadgen.state import GridState
from loadgen.view import LiveView, progress_text, run_progress, status_line, substation_table
from messaging import AmqpSettings
from messaging.runtime import install_stop_signals


def run_live(settings: AmqpSettings, options: RunOptions, console: Console) -> RunResult:
    """``run_load`` with a live view, on its own event loop; SIGINT/SIGTERM end it early."""

    async def main() -> RunResult:
        stop = asyncio.Event()
        install_stop_signals(stop)
        state = GridState(keep_history=True)
        latest: list[RunResult] = []

        def render() -> RenderableType:
            head = run_progress(latest[-1]) if latest else Text("connecting...")
            return Group(head, substation_table(state, datetime.now(UTC)))

        def line() -> str:
            head = progress_text(latest[-1]) if latest else "connecting..."
            rest = status_line(state, datetime.now(UTC), 0.0, counts=False).split(" | ", 1)
            return head + (f" | {rest[1]}" if len(rest) > 1 else "")

        def keep(result: RunResult) -> None:
            latest[:] = [result]

        done = asyncio.Event()
        view = asyncio.create_task(LiveView(console, render, line).run(done))
        try:
            return await run_load(settings, options, state=state, on_tick=keep, stop=stop)
        finally:
            done.set()
            await view

    return asyncio.run(main())
