"""A deadline for every body being read, kept with one timer for all of them.

asyncio.timeout arms and cancels a timer per request, which on the gateway's hot path costs
about seven times what this costs a read that finishes in time (nearly all do): a dict insert
and delete. The one timer is due at the oldest read's deadline; reads share one timeout, so the
oldest is the first in the dict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Deadlines:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._due: dict[asyncio.Task[Any], float] = {}  # the task reading -> its deadline
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def within(self, read: Callable[[], Awaitable[T]]) -> T:
        """``await read()``, cancelled with TimeoutError once it ran ``timeout_s``."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.within needs a task")
        loop = asyncio.get_running_loop()
        due = self._due[task] = loop.time() + self.timeout_s
        if self._timer is None:
            self._timer = loop.call_at(due, self._expire, loop)
        try:
            return await read()
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # cancelled for another reason
            task.uncancel()
            raise TimeoutError(f"not done within {self.timeout_s:g}s") from None
        finally:
            del self._due[task]
            self._expired.discard(task)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        for task, due in self._due.items():
            if due > now:
                self._timer = loop.call_at(due, self._expire, loop)
                return
            if task not in self._expired:
                # Delivered where the task waits, which is inside its read: the task cannot
                # run on before the CancelledError reaches it.
                self._expired.add(task)
                task.cancel()
