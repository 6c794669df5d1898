"""What every chaos scenario shares: a grid, steady load with a fault injected part way, and the
score, kept the way RabbitMQ's Jepsen test scores a queue.

accepted = every 202 (or publisher confirm); at the end everything is drained; lost = accepted -
completed - explicitly rejected, which must be 0; duplicates are allowed on the wire, but a
request_id completes (is charged) once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from contracts import Topology
from loadgen.grid import LocalGrid, SubstationSpec, metric_value
from loadgen.report import Report, build_report
from loadgen.run import RunOptions, RunResult, run_load
from loadgen.settings import LoadgenSettings
from messaging import AmqpSettings, Session
from tests.helpers import Condition, register_substations, wait_until

SUBSTATIONS = (
    SubstationSpec("s150", 150.0, 8),
    SubstationSpec("s300", 300.0, 16),
    SubstationSpec("s600", 600.0, 32),
)
IDS = [s.id for s in SUBSTATIONS]
# Sessions last at most about 4 wall seconds at x7200 (60 kWh at 7 kW), so a fault finds some
# charging and some waiting.
TIME_SCALE = 7200.0
HEARTBEAT_S = 0.5
# Reconnects in the tests should not wait out the default 15 s cap.
FAST_RECONNECT = {"SMARTGRID_RECONNECT_MAX_S": "2", "SMARTGRID_DRAIN_TIMEOUT_S": "3"}


@dataclass
class Score:
    scenario: str
    accepted: int
    completed: int
    rejected: int
    duplicates: int
    lost: int
    recover_s: float | None
    note: str = ""


SCORES: list[Score] = []


def score(scenario: str, result: RunResult, recover_s: float | None, note: str = "") -> Report:
    """The run's report over the grid's substations; its row goes into the chaos table."""
    report = build_report(result, IDS)
    SCORES.append(
        Score(
            scenario,
            report.accepted,
            report.completed,
            report.rejected,
            report.duplicates,
            report.lost,
            recover_s,
            note,
        )
    )
    return report


def render_scores(scores: list[Score]) -> list[str]:
    head = (
        "scenario",
        "accepted",
        "completed",
        "rejected",
        "duplicates",
        "lost",
        "time to recover",
    )
    rows = [
        (
            s.scenario,
            str(s.accepted),
            str(s.completed),
            str(s.rejected),
            str(s.duplicates),
            str(s.lost),
            f"{'-' if s.recover_s is None else f'{s.recover_s:.2f}s'} {s.note}".strip(),
        )
        for s in scores
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join
    return [line(h.ljust(w) for h, w in zip(head, widths, strict=True))] + [
        line(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    ]


@contextmanager
def chaos_grid(
    settings: AmqpSettings, topology: Topology, log_dir: Path, **kw: Any
) -> Iterator[LocalGrid]:
    """The grid of SUBSTATIONS in ``topology``'s namespace. Their ids are registered, so that the
    topology fixture deletes their queues with the namespace."""
    register_substations(topology, IDS)
    env = {**FAST_RECONNECT, **kw.pop("extra_env", {})}
    grid = LocalGrid(
        SUBSTATIONS,
        settings=settings.model_copy(update={"namespace": topology.namespace}),
        time_scale=TIME_SCALE,
        heartbeat_interval_s=kw.pop("heartbeat_interval_s", HEARTBEAT_S),
        log_dir=log_dir,
        extra_env=env,
        **kw,
    )
    with grid:
        yield grid


def loadgen_settings(grid: LocalGrid) -> LoadgenSettings:
    return LoadgenSettings(amqp_url=grid.settings.amqp_url, namespace=grid.namespace)


async def load_with_fault(
    grid: LocalGrid,
    fault: Callable[[], Awaitable[None]],
    *,
    after_s: float = 3.0,
    rate: float = 25.0,
    requests: int = 200,
    via: str = "http",
    settle_s: float = 90.0,
    settings: LoadgenSettings | None = None,
    management_url: str | None = None,
) -> RunResult:
    """Steady load; ``fault()`` runs ``after_s`` into it. Waits until every accepted request
    finished (or ``settle_s``). ``settings``: loadgen's own (default: the grid's URL and
    namespace)."""

    async def inject() -> None:
        # When the fault strikes is part of the scenario: a time into the load, not a condition.
        await asyncio.sleep(after_s)
        await fault()

    injector = asyncio.create_task(inject())
    options = RunOptions(
        via=via,  # type: ignore[arg-type]
        rate=rate,
        requests=requests,
        seed=7,
        settle_s=settle_s,
        gateway_url=grid.gateway_url,
        management_url=management_url,
    )
    try:
        return await run_load(settings or loadgen_settings(grid), options)
    finally:
        await injector


async def load_with_timed_fault(
    grid: LocalGrid, fault: Callable[[], Awaitable[float]], **load: Any
) -> tuple[RunResult, float]:
    """``load_with_fault`` for a fault that returns the seconds it measured (how long the grid
    took to recover, drain, ...): the run's result and those seconds."""
    took: list[float] = []

    async def timed() -> None:
        took.append(await fault())

    return await load_with_fault(grid, timed, **load), took[0]


async def signal_then_wait(
    grid: LocalGrid, process: str, sig: signal.Signals, until: Condition, what: str, **wait: Any
) -> float:
    """Send ``sig`` to ``process``, then the seconds until ``until`` holds (it reads metrics
    over blocking HTTP, so it is polled from a thread)."""
    grid.send_signal(process, sig)
    return await wait_until(until, what, blocking=True, **wait)


def metric(grid: LocalGrid, process: str, name: str, **labels: str) -> float:
    try:
        text = httpx.get(grid.metrics_urls[process], timeout=2).text
    except httpx.HTTPError:
        return float("nan")
    return metric_value(text, name, labels or None) or 0.0


def metric_sum(grid: LocalGrid, process: str, name: str) -> float:
    """The sum of every series of ``name`` (all label values); NaN if the process is gone."""
    try:
        text = httpx.get(grid.metrics_urls[process], timeout=2).text
    except httpx.HTTPError:
        return float("nan")
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def drained(settings: AmqpSettings, topology: Topology) -> dict[str, int]:
    """Ready messages left in the requests queue and every substation queue (should be 0)."""
    session = await Session.open(settings, "smartgrid-chaos-check")
    try:
        queues = [topology.requests_queue, *(topology.substation_queue(s) for s in IDS)]
        return {q: await session.queue_depth(q) for q in queues}
    finally:
        await session.close()


async def taken_back(
    grid: LocalGrid, topology: Topology, victim: str
) -> tuple[float, dict[str, int]]:
    """After a worker's death: how many assignments the dispatcher took back from its queue,
    and what every queue holds once the grid drained (each should be 0)."""
    reclaimed = metric(
        grid, "dispatcher", "smartgrid_dispatcher_reclaimed_total", substation=victim
    )
    return reclaimed, await drained(grid.settings, topology)


def assert_nothing_lost(result: RunResult, report: Report) -> None:
    assert report.accepted > 0
    assert report.lost == 0, f"lost {report.lost}: {report.lost_ids[:5]}"
    assert report.completed + sum(report.rejected_downstream.values()) == report.accepted
    assert report.duplicates == 0, "a request was charged twice"
    assert report.suspect == 0, f"suspect completions: {report.suspect_ids[:5]}"
    assert result.settled


__all__ = [
    "IDS",
    "SCORES",
    "Score",
    "assert_nothing_lost",
    "chaos_grid",
    "drained",
    "load_with_fault",
    "load_with_timed_fault",
    "metric",
    "metric_sum",
    "render_scores",
    "score",
    "signal_then_wait",
]
