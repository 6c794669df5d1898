"""``loadgen watch``: the substations of a namespace, live, from their heartbeats."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from rich.console import Console

from loadgen.bounded import BROKER_TIMEOUT_S
from loadgen.observe import GridObserver
from loadgen.state import DEFAULT_TOP
from loadgen.view import LiveView, status_line, substation_table
from messaging import AmqpSettings


async def watch(
    settings: AmqpSettings,
    console: Console,
    duration_s: float | None,
    stop: asyncio.Event,
    *,
    top: int = DEFAULT_TOP,
    broker_timeout_s: float = BROKER_TIMEOUT_S,
) -> None:
    """Until ``stop`` is set (Ctrl-C), or for ``duration_s`` seconds; at most ``top``
    substations on screen (the busiest) and a count of the others."""
    topology = settings.topology()
    observer = GridObserver(settings, topology, events=False, call_timeout_s=broker_timeout_s)
    async with observer:
        state = observer.state
        started = time.monotonic()
        if duration_s is not None:
            asyncio.get_running_loop().call_later(duration_s, stop.set)
        title = f"{settings.namespace} @ {settings.redacted_url()}"
        view = LiveView(
            console,
            lambda: substation_table(state, datetime.now(UTC), title=title, limit=top),
            lambda: status_line(
                state, datetime.now(UTC), time.monotonic() - started, counts=False, limit=top
            ),
        )
        await view.run(stop)
