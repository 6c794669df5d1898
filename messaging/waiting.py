"""Waiting that a stop cuts short: every loop of the services and loadgen sleeps this way, so
that a stop (a signal, a shutdown) ends it at once instead of after the sleep."""

from __future__ import annotations

import asyncio
import contextlib


async def sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or until ``event`` is set if that comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
