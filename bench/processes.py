"""The benchmarks' child processes: how many to run a simulation on, and a bounded stop, so
that a run never hangs on one."""

from __future__ import annotations

import asyncio
import os
import signal


def default_jobs() -> int:
    """Worker processes for a pure simulation's runs: one per core this process may use, at
    most two (the machine's others run the broker and the rest)."""
    return max(1, min(2, len(os.sched_getaffinity(0))))


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
