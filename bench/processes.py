"""The benchmarks' child processes: how many to run a simulation on, and a bounded stop, so
that a run never hangs on one."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_jobs() -> int:
    """Worker processes for a pure simulation's runs: one per core this process may use, at
    most two (the machine's others run the broker and the rest)."""
    return max(1, min(2, len(os.sched_getaffinity(0))))


def run_each(
    run: Callable[[T], R], todo: Sequence[T], jobs: int, first: Callable[[T], bool]
) -> list[R]:
    """``[run(t) for t in todo]``, in ``jobs`` worker processes when more than one; the tasks
    for which ``first`` holds (the longest) start first, so the pool does not end on one
    straggler."""
    if jobs <= 1:
        return [run(t) for t in todo]
    order = sorted(range(len(todo)), key=lambda i: not first(todo[i]))
    with ProcessPoolExecutor(jobs) as pool:
        done = dict(zip(order, pool.map(run, [todo[i] for i in order]), strict=True))
    return [done[i] for i in range(len(todo))]


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
