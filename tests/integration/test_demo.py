"""`make demo`'s command end to end: it brings up the grid, drives a burst through the gateway,
shows every substation, reports, exits 0, and leaves no process and no namespace behind."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contracts import Topology
from messaging import AmqpSettings, FatalBrokerError, Session

REQUESTS = 90


async def _queue_exists(settings: AmqpSettings, queue: str) -> bool:
    session = await Session.open(settings, "smartgrid-tests-demo-check")
    try:
        await session.queue_depth(queue)
    except FatalBrokerError:  # 404 NOT_FOUND closes the channel
        return False
    finally:
        await session.close()
    return True


@pytest.mark.timeout(180)
def test_demo_runs_the_grid_and_exits_0(amqp_settings: AmqpSettings, tmp_path: Path) -> None:
    # Given a broker; When the demo runs a small, fast burst (from a scratch folder for its logs)
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "loadgen", "demo"),
            *("--requests", str(REQUESTS), "--time-scale", "36000", "--timeout", "120"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout + done.stderr
    # Then it ends by itself with 0, every request completed, each substation in the report
    assert done.returncode == 0, out
    assert f"all {REQUESTS} accepted requests completed" in out, out
    for sid in ("s150", "s300", "s600"):
        assert re.search(rf"^\W*{sid}\W+\d+\W+\d+\W", out, re.MULTILINE), (sid, out)
    # And its namespace is gone
    match = re.search(r"namespace (demo-[0-9a-f]+)", out)
    assert match, out
    assert not asyncio.run(_queue_exists(amqp_settings, Topology(match[1]).requests_queue))
