"""Small async helpers for integration tests: wait on a condition, drain a queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from messaging import Delivery, Session


async def collect(session: Session, queue: str, n: int, timeout: float = 15) -> list[Delivery]:
    got: list[Delivery] = []
    done = asyncio.Event()

    def on(d: Delivery) -> None:
        got.append(d)
        d.ack()
        if len(got) >= n:
            done.set()

    tag = await session.consume(queue, on)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout)
    await session.cancel(tag)
    return got


async def wait_until(cond: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)
