"""Parts 1 and 2: the bare ceiling (publisher, relays) and the real dispatcher on the same load.

Both relays drain the same pre-filled quorum queue ``<ns>.requests`` (N real ChargeRequests) into
K bound quorum substation queues, and both are measured the same way: the total depth of the
substation queues, sampled every 50 ms, from 10 % to 90 % of N (start-up and tail left out).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.throughput.broker import (
    REPO_ROOT,
    heartbeats,
    namespace,
    prefill,
    run_bare,
    watch_depth,
)
from bench.throughput.report import Table, fmt_ratio, ratio, window_rate
from messaging import AmqpSettings

SUBSTATIONS = ("s1", "s2", "s3")
DISPATCHER_TARGET = 0.7


@dataclass
class RelayFigures:
    publish: list[float] = field(default_factory=list)
    relay: list[float] = field(default_factory=list)
    relay_internal: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    dispatcher: list[float] = field(default_factory=list)
    request_bytes: int = 0
    assignment_bytes: int = 0
    n: int = 0

    @staticmethod
    def best(values: list[float]) -> float | None:
        return max(values) if values else None

    def to_json(self) -> dict[str, Any]:
        def summary(values: list[float]) -> dict[str, Any]:
            return {
                "runs": values,
                "best": self.best(values),
                "median": statistics.median(values) if values else None,
            }

        return {
            "messages": self.n,
            "request_bytes": self.request_bytes,
            "assignment_bytes": self.assignment_bytes,
            "publish_pipelined": summary(self.publish),
            "relay_pipelined": summary(self.relay),
            "relay_pipelined_internal": summary(self.relay_internal),
            "relay_naive": summary(self.naive),
            "dispatcher": summary(self.dispatcher),
            "dispatcher_over_relay": ratio(self.best(self.dispatcher), self.best(self.relay)),
            "target": DISPATCHER_TARGET,
        }


async def bare_round(settings: AmqpSettings, n: int, naive_n: int, figs: RelayFigures) -> None:
    async with namespace(settings, "relay", SUBSTATIONS) as (topo, session):
        pub = await prefill(settings, topo, n)
        figs.publish.append(pub["rate"])
        figs.request_bytes = pub["bytes"]
        queues = [topo.substation_queue(s) for s in SUBSTATIONS]
        watcher = asyncio.create_task(watch_depth(session, queues, n, timeout_s=60))
        rel = await run_bare(
            settings,
            "relay",
            "--queue",
            topo.requests_queue,
            "--exchange",
            topo.substations_exchange,
            "--keys",
            ",".join(SUBSTATIONS),
            "--count",
            str(n),
            "--timeout",
            "60",
        )
        samples = await watcher
        figs.assignment_bytes = rel["bytes"]
        if rel["relayed"] != n or rel["returned"] or rel["nacked"]:
            raise RuntimeError(f"bare relay incomplete: {rel}")
        figs.relay_internal.append(rel["rate"])
        rate = window_rate(samples, n)
        if rate is not None:
            figs.relay.append(rate)
        # The naive relay is ~10x slower: a smaller batch of the same messages.
        await prefill(settings, topo, naive_n)
        nai = await run_bare(
            settings,
            "naive",
            "--queue",
            topo.requests_queue,
            "--exchange",
            topo.substations_exchange,
            "--keys",
            ",".join(SUBSTATIONS),
            "--count",
            str(naive_n),
            "--timeout",
            "60",
        )
        figs.naive.append(nai["rate"])


async def dispatcher_round(
    settings: AmqpSettings, n: int, figs: RelayFigures, *, profile: str | None = None
) -> None:
    async with namespace(settings, "dispatch", SUBSTATIONS) as (topo, session):
        await prefill(settings, topo, n)
        stop_beats = asyncio.Event()
        beats = asyncio.create_task(heartbeats(session, topo, SUBSTATIONS, stop_beats))
        queues = [topo.substation_queue(s) for s in SUBSTATIONS]
        env = dict(os.environ)
        env.update(
            SMARTGRID_AMQP_URL=settings.amqp_url.get_secret_value(),
            SMARTGRID_NAMESPACE=topo.namespace,
            SMARTGRID_METRICS_PORT="0",
            SMARTGRID_LOG_LEVEL="WARNING",
        )
        log = tempfile.TemporaryFile()  # noqa: SIM115 (read on failure, closed with the round)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dispatcher",
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        spy: asyncio.subprocess.Process | None = None
        try:
            if profile:
                py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                fmt = "raw" if profile.endswith(".txt") else "flamegraph"
                spy = await asyncio.create_subprocess_exec(
                    py_spy, "record", "-o", profile, "-f", fmt, "-r", "200", "-p", str(proc.pid),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
            samples = await watch_depth(session, queues, n, timeout_s=90)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            if spy is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(spy.wait(), 15)
            stop_beats.set()
            await beats
        moved = samples[-1][1] if samples else 0
        if moved < n:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"dispatcher moved {moved:.0f} of {n} in time; its log:\n{tail}")
        rate = window_rate(samples, n)
        if rate is not None:
            figs.dispatcher.append(rate)


async def run(
    settings: AmqpSettings, *, quick: bool, profile: str | None = None
) -> tuple[RelayFigures, list[Table]]:
    n = 10_000 if quick else 30_000
    naive_n = 1_500 if quick else 3_000
    rounds = 1 if quick else 2
    figs = RelayFigures(n=n)
    # Interleaved, so that drift in what else runs on the machine hits both alike.
    for _ in range(rounds):
        await bare_round(settings, n, naive_n, figs)
        await dispatcher_round(settings, n, figs, profile=profile)
    return figs, tables(figs)


def tables(figs: RelayFigures) -> list[Table]:
    relay = figs.best(figs.relay)
    ceiling = Table(
        f"1. Ceiling: bare pika on this machine ({figs.n:,} msgs; request {figs.request_bytes} B, "
        f"assignment {figs.assignment_bytes} B; best of {len(figs.relay)})",
        ["what", "msg/s", "runs", "vs relay"],
    )
    rows = [
        ("publish, confirms pipelined (window 1000)", figs.publish),
        ("relay, confirms pipelined (prefetch 1000)", figs.relay),
        ("relay, same, its own clock (whole run)", figs.relay_internal),
        ("relay waiting for each confirm (Blocking)", figs.naive),
    ]
    for name, values in rows:
        best = figs.best(values)
        ceiling.add(
            name,
            best,
            " / ".join(f"{v:,.0f}" for v in values),
            fmt_ratio(ratio(best, relay)),
        )
    ceiling.notes.append(
        "quorum queues as in the product; relays drain a full <ns>.requests into 3 substation "
        "queues, measured from 10% to 90% of the messages"
    )
    disp = figs.best(figs.dispatcher)
    r = ratio(disp, relay)
    dispatcher = Table(
        "2. Dispatcher: real smartgrid-dispatcher draining the same pre-filled queue",
        ["what", "msg/s", "runs", "vs bare relay", "target", "met"],
    )
    runs = " / ".join(f"{v:,.0f}" for v in figs.relay)
    dispatcher.add("bare relay (ceiling)", relay, runs, "1.00x", "", "")
    dispatcher.add(
        "smartgrid-dispatcher (headroom, 3 live substations)",
        disp,
        " / ".join(f"{v:,.0f}" for v in figs.dispatcher),
        fmt_ratio(r),
        f">= {DISPATCHER_TARGET:.2f}x",
        "yes" if r is not None and r >= DISPATCHER_TARGET else "NO",
    )
    dispatcher.notes.append(
        "each request: a confirmed `dispatched` event, then the confirmed assignment, then the "
        "ack (the bare relay publishes once)"
    )
    return [ceiling, dispatcher]
