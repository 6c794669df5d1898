"""``loadgen watch``: the substations of a namespace, live, from their heartbeats."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from rich.console import Console

from contracts import Topology
from loadgen.observe import GridObserver
from loadgen.view import LiveView, status_line, substation_table
from messaging import AmqpSettings


async def watch(
    settings: AmqpSettings, console: Console, duration_s: float | None, stop: asyncio.Event
) -> None:
    """Until ``stop`` is set (Ctrl-C), or for ``duration_s`` seconds."""
    topology = Topology(settings.namespace)
    async with GridObserver(settings, topology, events=False) as observer:
        state = observer.state
        started = time.monotonic()
        if duration_s is not None:
            asyncio.get_running_loop().call_later(duration_s, stop.set)
        title = f"{settings.namespace} @ {settings.redacted_url()}"
        view = LiveView(
            console,
            lambda: substation_table(state, datetime.now(UTC), title=title),
            lambda: status_line(state, datetime.now(UTC), time.monotonic() - started, counts=False),
        )
        await view.run(stop)
