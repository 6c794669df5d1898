"""Finding 9: SIGINT or SIGTERM ends loadgen within seconds, whatever it is waiting for: the
first asks the run to wind down (and report), a run that does not is cancelled after a grace,
a second signal (or the hard deadline) exits at once with 128 + the signal's number."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from loadgen import live
from loadgen.signals import StopSignals

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def test_the_first_signal_sets_stop_on_the_running_loop() -> None:
    """Finding 9: a signal reaches the run as ``stop``; the exit code says which it was."""
    stop = asyncio.Event()
    with StopSignals(hard_exit_s=60) as signals, signals.setting(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)
    assert signals.exit_code == 143


def test_outside_a_loop_a_signal_interrupts_what_raising_guards() -> None:
    """Finding 9: starting a grid or lingering (synchronous waits) is interrupted at once."""

    def start_a_grid(signals: StopSignals) -> None:
        with signals.raising():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the synchronous wait the signal interrupts (it never lasts 5 s)

    with StopSignals(hard_exit_s=60) as signals:
        with pytest.raises(KeyboardInterrupt):
            start_a_grid(signals)
        assert signals.exit_code == 130


async def test_a_run_that_does_not_wind_down_is_cancelled_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding 9: a run stuck in a call that never returns is cancelled STOP_GRACE_S after the
    signal, and the caller goes on to report."""
    monkeypatch.setattr(live, "STOP_GRACE_S", 0.2)
    stop = asyncio.Event()

    async def stuck() -> live.RunResult:
        await asyncio.Event().wait()  # a broker call that never answers, unbounded
        raise AssertionError("unreachable")

    run = asyncio.create_task(stuck())
    asyncio.get_running_loop().call_later(0.1, stop.set)
    started = time.monotonic()
    await asyncio.wait_for(live._finish(run, stop), 5)
    assert run.cancelled()
    assert time.monotonic() - started < 3


def _hung_process(hard_exit_s: float) -> subprocess.Popen[str]:
    """A process whose 'cleanup' ignores stop forever, with StopSignals installed."""
    code = textwrap.dedent(f"""
        import asyncio, sys
        from loadgen.signals import StopSignals

        async def main(signals):
            stop = asyncio.Event()
            with signals.setting(stop):
                print("ready", flush=True)
                await stop.wait()
                print("stopping", flush=True)
                await asyncio.Event().wait()

        with StopSignals(hard_exit_s={hard_exit_s}) as signals:
            asyncio.run(main(signals))
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _ended_within(proc: subprocess.Popen[str], seconds: float) -> int:
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {seconds}s after the signal") from None


def test_a_second_signal_exits_at_once() -> None:
    """Finding 9: the second signal does not wait for anything: exit 128 + the first one."""
    proc = _hung_process(hard_exit_s=60)
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "stopping"
    proc.send_signal(signal.SIGINT)
    assert _ended_within(proc, 5) == 143


def test_cleanup_that_hangs_is_cut_short_by_the_hard_deadline() -> None:
    """Finding 9: even if nothing else ends it, the process is gone ``hard_exit_s`` after the
    first signal."""
    proc = _hung_process(hard_exit_s=1)
    proc.send_signal(signal.SIGINT)
    assert _ended_within(proc, 10) == 130
    assert proc.stderr is not None
    assert "still not done" in proc.stderr.read()
