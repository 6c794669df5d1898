"""Broker-side helpers of the bench: namespaces, queue depths over time, the bare subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procfs
from bench.throughput.report import Sample
from contracts import Heartbeat, Topology
from loadgen.broker import delete_namespace
from messaging import AmqpSettings, Session

REPO_ROOT = Path(__file__).resolve().parents[2]


def new_namespace(part: str) -> Topology:
    return Topology(f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}-{part}")


@contextlib.asynccontextmanager
async def namespace(
    settings: AmqpSettings, part: str, substation_ids: Sequence[str] = ()
) -> AsyncIterator[tuple[Topology, Session]]:
    """A fresh namespace with the core topology and bound substation queues, deleted after."""
    topo = new_namespace(part)
    session = await Session.open(settings, f"bench-{part}")
    try:
        await session.declare_all(topo.exchanges(), topo.core_queues(), topo.core_bindings())
        for sid in substation_ids:
            await session.declare_queue(topo.substation_queue_spec(sid))
            await session.bind(topo.substation_binding(sid))
        yield topo, session
    finally:
        with contextlib.suppress(Exception):
            await session.close()
        await delete_namespace(settings, topo, substation_ids)


async def total_depth(session: Session, queues: Sequence[str]) -> int:
    depths = await asyncio.gather(*(session.queue_depth(q) for q in queues))
    return sum(depths)


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used so far; NaN if it cannot be read."""
    cpu = procfs.process_cpu_s(pid)
    return math.nan if cpu is None else cpu


def broker_pid() -> int | None:
    """The RabbitMQ node on this machine (the longest-running beam.smp), if it can be seen."""
    found: list[tuple[int, int]] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "beam.smp":
                continue
            started = int((proc / "stat").read_text().rpartition(")")[2].split()[19])
        except (OSError, ValueError, IndexError):
            continue
        found.append((started, int(proc.name)))
    return min(found)[1] if found else None


@dataclass
class Watch:
    """Depth samples, and beside each the CPU seconds used so far by each watched process."""

    samples: list[Sample] = field(default_factory=list)
    cpu: list[tuple[float, ...]] = field(default_factory=list)


async def watch_depth(
    session: Session,
    queues: Sequence[str],
    target: int,
    timeout_s: float,
    interval_s: float = 0.05,
    pids: Sequence[int | None] = (),
) -> Watch:
    """Sample the total ready depth of ``queues`` until it reaches ``target`` (or time is up)."""
    watch = Watch()
    start = time.perf_counter()
    while True:
        depth = await total_depth(session, queues)
        now = time.perf_counter() - start
        watch.samples.append((now, float(depth)))
        watch.cpu.append(tuple(process_cpu_s(p) for p in pids))
        if depth >= target or now > timeout_s:
            return watch
        await asyncio.sleep(interval_s)


BARE = "bench.throughput.bare"
PEERS = "bench.throughput.peers"


async def start_bare(
    settings: AmqpSettings, what: str, *args: str, module: str = BARE
) -> asyncio.subprocess.Process:
    """``python -m <module> <what> --url ... <args>`` in its own process (a bare relay, or
    (``PEERS``) a framework's), its JSON result on stdout."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        what,
        "--url",
        settings.amqp_url.get_secret_value(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )


async def bare_result(proc: asyncio.subprocess.Process, what: str) -> dict[str, Any]:
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def run_bare(
    settings: AmqpSettings, what: str, *args: str, module: str = BARE
) -> dict[str, Any]:
    """Run ``<module> <what>`` (``bench.throughput.bare`` by default) in its own process; its
    JSON result."""
    return await bare_result(await start_bare(settings, what, *args, module=module), what)


async def prefill(settings: AmqpSettings, topo: Topology, count: int) -> dict[str, Any]:
    """``count`` ChargeRequests into ``<ns>.requests``, pipelined (the bare publisher)."""
    result = await run_bare(
        settings,
        "publish",
        "--exchange",
        topo.requests_exchange,
        "--count",
        str(count),
        "--timeout",
        str(max(30.0, count / 1000)),
    )
    if result["confirmed"] != count or result["nacked"] or result["returned"]:
        raise RuntimeError(f"pre-fill incomplete: {result}")
    return result


async def heartbeats(
    session: Session,
    topo: Topology,
    substation_ids: Sequence[str],
    stop: asyncio.Event,
    *,
    capacity_kw: float = 1_000_000,
    bays: int = 100_000,
    interval_s: float = 1.0,
) -> None:
    """Fake live substations with room for everything, so that the policy never holds."""
    seq = 0
    while not stop.is_set():
        seq += 1
        for sid in substation_ids:
            beat = Heartbeat(
                substation_id=sid,
                capacity_kw=capacity_kw,
                bays=bays,
                load_kw=0,
                active_sessions=0,
                queued=0,
                seq=seq,
                assignments_received=0,
                interval_s=interval_s,
            )
            session.publish_and_forget(
                topo.heartbeats_exchange, "", beat.model_dump_json().encode()
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
