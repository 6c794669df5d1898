"""The tests' one wait: it ends when the condition holds, and otherwise fails after its deadline
saying what it waited for."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import wait_until, wait_until_serving, wait_until_sync


async def test_returns_once_the_condition_holds() -> None:
    polls: list[int] = []

    def third_time() -> bool:
        polls.append(1)
        return len(polls) >= 3

    elapsed = await wait_until(third_time, "the third poll", timeout=5, poll=0.001)
    assert len(polls) == 3
    assert 0 <= elapsed < 5


async def test_an_async_condition_is_awaited() -> None:
    seen: list[int] = []

    async def ready() -> bool:
        seen.append(1)
        return len(seen) == 2

    await wait_until(ready, "two polls", timeout=5, poll=0.001)
    assert len(seen) == 2


async def test_a_blocking_condition_runs_off_the_loop() -> None:
    threads: list[threading.Thread] = []

    def blocking() -> bool:
        threads.append(threading.current_thread())
        return True

    await wait_until(blocking, "one poll", blocking=True)
    assert threads
    assert threads[0] is not threading.main_thread()


async def test_after_the_deadline_it_says_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"after 0\.05s for the sky to fall\nsky: up"):
        await wait_until(lambda: False, "the sky to fall", timeout=0.05, detail=lambda: "sky: up")


async def test_ignored_errors_mean_not_yet_and_the_last_one_is_reported() -> None:
    calls: list[int] = []

    def starting() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"refused {len(calls)}")
        return True

    await wait_until(starting, "a server", ignore=(ConnectionError,), poll=0.001)
    assert len(calls) == 3

    def refused() -> bool:
        raise ConnectionError("refused")

    with pytest.raises(AssertionError, match=r"a server \(last: ConnectionError: refused\)"):
        await wait_until(refused, "a server", timeout=0.05, ignore=(ConnectionError,))


async def test_errors_not_ignored_end_the_wait_at_once() -> None:
    def broken() -> bool:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await wait_until(broken, "anything", timeout=60)


def test_the_sync_twin_waits_and_fails_the_same_way() -> None:
    polls: list[int] = []

    def second_time() -> bool:
        polls.append(1)
        return len(polls) == 2

    assert wait_until_sync(second_time, "two polls", poll=0.001) >= 0
    assert len(polls) == 2

    def refused() -> bool:
        raise OSError("refused")

    with pytest.raises(AssertionError, match=r"after 0\.05s for a port \(last: OSError: refused\)"):
        wait_until_sync(refused, "a port", timeout=0.05, ignore=(OSError,))


async def test_without_a_what_the_message_is_the_conditions_source() -> None:
    flag: list[bool] = []
    with pytest.raises(AssertionError, match=r"for await wait_until\(lambda: bool\(flag\)"):
        await wait_until(lambda: bool(flag), timeout=0.01)


def test_a_server_that_exited_fails_its_wait_at_once_showing_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        code = "print('address already in use'); raise SystemExit(3)"
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
    proc.wait(timeout=30)
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"(?s)the server exited 3:.*already in use"):
        wait_until_serving("http://127.0.0.1:1/healthz", proc, log, "the server", timeout=60)
    assert time.monotonic() - started < 10, "waited for the deadline, not for the exit"
