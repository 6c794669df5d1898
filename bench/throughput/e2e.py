"""Part 4: end to end. loadgen against a LocalGrid at rising rates, via HTTP and via AMQP.

The grid is the real one (gateway, dispatcher, three workers as processes), with substations big
and fast enough (time scale 360,000: a 30 kWh session lasts a few wall milliseconds) that the
plumbing, not the simulated physics, is what is measured. Each rate runs for a fixed time, then
loadgen waits (bounded) until every accepted request completed. A rate is sustained when nothing
accepted was lost, loadgen kept up with the schedule, and the backlog (sent and not finished, as
loadgen follows the answers and events: waiting for a 202, queued, held or charging; sampled every
0.25 s while sending) stayed flat. The ladder stops at the first rate not sustained.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.throughput.broker import new_namespace
from bench.throughput.report import Sample, Table, backlog_flat, fmt, slope
from contracts import Topology
from loadgen.broker import delete_namespace
from loadgen.grid import LocalGrid, SubstationSpec
from loadgen.report import build_report
from loadgen.run import RunOptions, RunResult, Via, run_load
from messaging import AmqpSettings

# Room enough that the dispatcher's headroom policy never holds at these rates (it holds once
# every bay, or the whole capacity at the cars' max power, is promised).
SUBSTATIONS = (
    SubstationSpec("s1", 50_000, 500),
    SubstationSpec("s2", 100_000, 500),
    SubstationSpec("s3", 200_000, 500),
)
TIME_SCALE = 360_000.0
SETTLE_S = 20.0


@dataclass
class Step:
    via: str
    rate: float
    seconds: float
    sent: int
    accepted: int
    completed: int
    lost: int
    duplicates: int
    achieved_rate: float
    completed_rate: float
    max_late_s: float
    backlog_max: float
    backlog_slope: float
    flat: bool
    p99_accepted_s: float | None
    p99_completed_s: float | None
    settled: bool

    @property
    def sustained(self) -> bool:
        return (
            self.lost == 0
            and self.settled
            and self.flat
            and self.achieved_rate >= 0.95 * self.rate
            and self.accepted == self.sent
        )


def backlog_of(result: RunResult) -> float:
    """Sent and not finished: waiting for the gateway's answer, queued, held or charging.

    Finished: refused at the ingress, or accepted and then completed or rejected downstream.
    """
    state = result.state
    refused = state.answered - len(state.accepted)
    done = state.accepted_completed + len(state.accepted_failed())
    return float(state.sent - refused - done)


async def step(
    settings: AmqpSettings, grid: LocalGrid, via: Via, rate: float, seconds: float
) -> Step:
    samples: list[Sample] = []

    def tick(result: RunResult) -> None:
        samples.append((result.elapsed_s, backlog_of(result)))

    options = RunOptions(
        via=via,
        profile="steady",
        rate=rate,
        duration_s=seconds,
        settle_s=SETTLE_S,
        concurrency=64,
        gateway_url=grid.gateway_url,
        seed=int(rate),
    )
    result = await run_load(settings, options, on_tick=tick, tick_s=0.25)
    report = build_report(result)
    sending = [s for s in samples if s[0] <= result.sending_s]
    p99 = report.latency.get("completed")
    p99_acc = report.latency.get("accepted")
    return Step(
        via=via,
        rate=rate,
        seconds=seconds,
        sent=report.sent,
        accepted=report.accepted,
        completed=report.completed,
        lost=report.lost,
        duplicates=report.duplicates,
        achieved_rate=report.achieved_rate_per_s,
        completed_rate=report.completed_per_s,
        max_late_s=report.max_send_lateness_s,
        backlog_max=max((v for _, v in sending), default=0.0),
        backlog_slope=slope(sending),
        flat=backlog_flat(sending, rate),
        p99_accepted_s=p99_acc.p99_s if p99_acc is not None and p99_acc.count else None,
        p99_completed_s=p99.p99_s if p99 is not None and p99.count else None,
        settled=result.settled,
    )


async def run(settings: AmqpSettings, *, quick: bool) -> tuple[dict[str, Any], list[Table]]:
    ladders: list[tuple[Via, list[float]]] = (
        [("http", [100.0, 300.0]), ("amqp", [400.0, 1600.0])]
        if quick
        else [
            ("http", [50.0, 100.0, 200.0, 300.0, 400.0, 800.0]),
            ("amqp", [800.0, 1600.0, 3200.0]),
        ]
    )
    seconds = 5.0 if quick else 10.0
    ns = new_namespace("e2e").namespace
    grid_settings = settings.model_copy(update={"namespace": ns})
    logs = tempfile.TemporaryDirectory(prefix=f"smartgrid-{ns}-")
    grid = LocalGrid(
        SUBSTATIONS,
        settings=grid_settings,
        namespace=ns,
        time_scale=TIME_SCALE,
        log_level="WARNING",
        log_dir=Path(logs.name),
    )
    steps: list[Step] = []
    try:
        grid.start()  # blocks until every process is ready (bounded by its start-up timeout)
        for via, rates in ladders:
            for rate in rates:
                s = await step(grid_settings, grid, via, rate, seconds)
                steps.append(s)
                if not s.sustained:
                    break
    finally:
        grid.stop()
        await delete_namespace(grid_settings, Topology(ns), [s.id for s in SUBSTATIONS])
        logs.cleanup()
    best = {
        via: max((s.rate for s in steps if s.sustained and s.via == via), default=None)
        for via, _ in ladders
    }
    t = Table(
        f"4. End to end: loadgen run (steady, {seconds:g} s per rate) against a LocalGrid "
        f"(gateway, dispatcher, 3 workers; time x{TIME_SCALE:,.0f}), rates up to the first not "
        "sustained",
        ["via", "rate/s", "sent", "achieved/s", "accepted", "completed", "lost", "dup",
         "backlog max", "backlog trend/s", "p99 to 202 s", "p99 to completed s", "sustained"],
    )  # fmt: skip
    for s in steps:
        t.add(
            s.via,
            s.rate,
            s.sent,
            s.achieved_rate,
            s.accepted,
            s.completed,
            s.lost,
            s.duplicates,
            s.backlog_max,
            f"{s.backlog_slope:+.1f}",
            fmt(s.p99_accepted_s, 2),
            fmt(s.p99_completed_s, 2),
            "yes" if s.sustained else "NO",
        )
    t.notes.append(
        "latencies from each request's scheduled send (open loop), as loadgen reports them; "
        "loadgen itself (an httpx client, and following 4 events per request) runs on the same "
        "2 cores; via amqp it publishes straight to <ns>.requests (pipelined confirms), so the "
        "amqp ladder is the grid behind the gateway"
    )
    t.notes.append(
        "highest rate sustained (0 lost, every request accepted, sends on schedule, backlog "
        "under 1 s of arrivals and not growing), requests/s: "
        + ", ".join(f"via {via} {fmt(rate)}" for via, rate in best.items())
    )
    return {
        "rates": [s.__dict__ | {"sustained": s.sustained} for s in steps],
        "highest_sustained_rate": best,
        "seconds_per_rate": seconds,
        "time_scale": TIME_SCALE,
    }, [t]
