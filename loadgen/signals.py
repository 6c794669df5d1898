"""SIGINT and SIGTERM end loadgen within seconds, whatever it is waiting for.

The first signal asks the command to wind down: a running event loop gets ``stop`` set (the
run stops sending and settling, and reports what it has); outside one, inside ``raising()``
(starting a grid, lingering), it raises KeyboardInterrupt. Should winding down itself take
longer than ``hard_exit_s``, or a second signal come, the process exits at once with the code
of the first signal: 128 + its number (130 for SIGINT, 143 for SIGTERM), as a shell reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from messaging import exit_codes

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# After the first signal the process is gone within this long, cleanup finished or not.
HARD_EXIT_S = 15.0


def exit_code(signum: int) -> int:
    return exit_codes.for_signal(signum)


class StopSignals:
    """Installed with ``with StopSignals() as signals:`` around a whole command."""

    def __init__(self, hard_exit_s: float = HARD_EXIT_S) -> None:
        self.hard_exit_s = hard_exit_s
        self.signum: int | None = None
        self._wake: Callable[[], None] | None = None
        self._raise = False
        self._previous: dict[int, Any] = {}
        self._deadline: threading.Timer | None = None

    @property
    def exit_code(self) -> int | None:
        """The exit code a signal asks for, None if none came."""
        return None if self.signum is None else exit_code(self.signum)

    def __enter__(self) -> StopSignals:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._deadline is not None:
            self._deadline.cancel()  # the command is done: nothing left to cut short
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            _exit_now(exit_code(self.signum), "second signal: exiting at once")
        self.signum = signum
        why = f"still not done {self.hard_exit_s:g}s after the signal: exiting"
        self._deadline = threading.Timer(self.hard_exit_s, _exit_now, (exit_code(signum), why))
        self._deadline.daemon = True
        self._deadline.start()
        if self._wake is not None:
            self._wake()
        elif self._raise:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def setting(self, stop: asyncio.Event) -> Iterator[None]:
        """While the running loop runs this block, a signal sets ``stop`` (also one that came
        before it started)."""
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(stop.set)

        self._wake = wake
        if self.signum is not None:
            stop.set()
        try:
            yield
        finally:
            self._wake = None

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """In this (synchronous) block a signal raises KeyboardInterrupt."""
        if self.signum is not None:
            raise KeyboardInterrupt
        self._raise = True
        try:
            yield
        finally:
            self._raise = False


def _exit_now(code: int, why: str) -> None:
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), f"loadgen: {why}\n".encode())
    os._exit(code)
