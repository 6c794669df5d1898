"""A run on screen: the progress bar and the substations' table while it goes (plain lines in a
log), a signal to stop early with a report of what happened so far."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.text import Text

from loadgen.run import RunOptions, RunResult, new_result, run_load
from loadgen.signals import StopSignals
from loadgen.view import LiveView, progress_text, run_progress, status_line, substation_table
from messaging import AmqpSettings

log = logging.getLogger(__name__)

# After a stop signal the run winds down by itself (it stops sending and settling, and its
# broker calls are bounded); what is not done by then is cancelled, and what it saw reported.
STOP_GRACE_S = 4.0
CANCEL_GRACE_S = 1.0


def run_live(
    settings: AmqpSettings,
    options: RunOptions,
    console: Console,
    signals: StopSignals | None = None,
) -> RunResult:
    """``run_load`` with a live view, on its own event loop; a signal (``signals``) ends it
    within seconds, with ``interrupted`` set on the result."""
    result = new_result(options)

    async def main() -> RunResult:
        stop = asyncio.Event()
        state = result.state
        latest: list[RunResult] = []

        def render() -> RenderableType:
            head = run_progress(latest[-1]) if latest else Text("connecting...")
            return Group(head, substation_table(state, datetime.now(UTC), limit=options.top))

        def line() -> str:
            head = progress_text(latest[-1]) if latest else "connecting..."
            now = datetime.now(UTC)
            rest = status_line(state, now, 0.0, counts=False, limit=options.top).split(" | ", 1)
            return head + (f" | {rest[1]}" if len(rest) > 1 else "")

        def keep(r: RunResult) -> None:
            latest[:] = [r]

        done = asyncio.Event()
        view = asyncio.create_task(LiveView(console, render, line).run(done))
        run = asyncio.create_task(
            run_load(settings, options, result=result, on_tick=keep, stop=stop)
        )
        try:
            with signals.setting(stop) if signals else contextlib.nullcontext():
                await _finish(run, stop)
        finally:
            result.interrupted = result.interrupted or stop.is_set()
            done.set()
            await view
        return result

    return asyncio.run(main())


async def _finish(run: asyncio.Task[RunResult], stop: asyncio.Event) -> None:
    """Until ``run`` ends; once ``stop`` is set, STOP_GRACE_S more at most, then it is
    cancelled (and abandoned if even that does not end it). What ended the run on its own (an
    unreachable grid) is raised."""
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not run.done():
        await asyncio.wait({run}, timeout=STOP_GRACE_S)
    if not run.done():
        log.warning("the run did not wind down within %gs of the signal: cancelled", STOP_GRACE_S)
        run.cancel()
        await asyncio.wait({run}, timeout=CANCEL_GRACE_S)
    if run.done() and not run.cancelled():
        run.result()
