"""Ending the benchmarks' child processes: a bounded stop, so that a run never hangs on one."""

from __future__ import annotations

import asyncio
import signal


async def terminate(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM ``proc`` if it still runs, wait up to ``grace_s`` for it to exit (a service
    drains on SIGTERM), then SIGKILL it."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
