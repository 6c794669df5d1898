"""Parts 1 and 2: the bare ceiling (publisher, relays), the real dispatcher and the frameworks'
relays (FastStream, Dramatiq: bench.throughput.peers) on the same load.

Every relay drains the same kind of pre-filled quorum queue ``<ns>.requests`` (N real
ChargeRequests) into K bound quorum substation queues, and all are measured the same way: the
total depth of the substation queues, sampled every 50 ms, from 10 % to 90 % of N (start-up and
tail left out). Beside each sample the CPU time used so far by the relay process and by the broker
is read from /proc, so each row also says what a message costs in CPU, a figure that the other
load on a shared machine disturbs much less than the rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.processes import terminate
from bench.throughput.broker import (
    BARE,
    PEERS,
    REPO_ROOT,
    Watch,
    bare_result,
    broker_pid,
    heartbeats,
    namespace,
    prefill,
    run_bare,
    start_bare,
    watch_depth,
)
from bench.throughput.peers import LIMITS
from bench.throughput.peers import PEERS as PEER_RELAYS
from bench.throughput.report import Table, fmt, fmt_ratio, ratio, window_cpu_us, window_rate
from contracts import Topology
from messaging import AmqpSettings

SUBSTATIONS = ("s1", "s2", "s3")
DISPATCHER_TARGET = 0.7
# The bare relays and the dispatchers of tables 1-2, then the frameworks' relays of table 2b.
OWN_RELAYS = ("relay", "intent-batched", "intent", "dispatcher", "baseline")
RELAYS = (*OWN_RELAYS, *PEER_RELAYS)
# A framework's relay may be several times slower than the bare one: room for that in time.
PEER_TIMEOUT_S = 120.0


@dataclass
class Measured:
    """One relay over the rounds: rates, and CPU µs per message of it and of the broker."""

    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    broker_cpu_us: list[float] = field(default_factory=list)

    def add(self, watch: Watch, n: int) -> None:
        rate = window_rate(watch.samples, n)
        if rate is not None:
            self.rates.append(rate)
        own, broker = window_cpu_us(watch.samples, watch.cpu, n)
        if own is not None:
            self.cpu_us.append(own)
        if broker is not None:
            self.broker_cpu_us.append(broker)

    @property
    def best(self) -> float | None:
        return max(self.rates) if self.rates else None

    @staticmethod
    def _median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    @property
    def cpu(self) -> float | None:
        return self._median(self.cpu_us)

    @property
    def broker_cpu(self) -> float | None:
        return self._median(self.broker_cpu_us)

    def runs(self) -> str:
        return " / ".join(f"{v:,.0f}" for v in self.rates)

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.rates,
            "best": self.best,
            "cpu_us_per_msg": self.cpu_us,
            "broker_cpu_us_per_msg": self.broker_cpu_us,
        }


@dataclass
class RelayFigures:
    n: int
    publish: list[float] = field(default_factory=list)
    relay_internal: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    measured: dict[str, Measured] = field(default_factory=lambda: {k: Measured() for k in RELAYS})
    request_bytes: int = 0
    assignment_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        relay, disp, intent = (self.measured[k] for k in ("relay", "dispatcher", "intent-batched"))
        base = self.measured["baseline"]
        return {
            "messages": self.n,
            "request_bytes": self.request_bytes,
            "assignment_bytes": self.assignment_bytes,
            "publish_pipelined": {"runs": self.publish, "best": _max(self.publish)},
            "relay_pipelined_own_clock": {"runs": self.relay_internal},
            "relay_naive": {"runs": self.naive, "best": _max(self.naive)},
            **{k: m.to_json() for k, m in self.measured.items()},
            "dispatcher_over_relay": ratio(disp.best, relay.best),
            "dispatcher_over_intent_relay": ratio(disp.best, intent.best),
            "dispatcher_over_baseline": ratio(disp.best, base.best),
            **{
                f"{peer}_over_relay": ratio(self.measured[peer].best, relay.best)
                for peer in PEER_RELAYS
            },
            "target": DISPATCHER_TARGET,
        }


def _max(values: list[float]) -> float | None:
    return max(values) if values else None


def _relay_args(topo_queue: str, exchange: str, n: int, timeout_s: float = 60.0) -> list[str]:
    return [
        "--queue", topo_queue, "--exchange", exchange, "--keys", ",".join(SUBSTATIONS),
        "--count", str(n), "--timeout", f"{timeout_s:g}",
    ]  # fmt: skip


def relay_args(what: str, topo: Topology, n: int) -> list[str]:
    """The arguments of the relay process ``what`` (a bare relay or a peer) in ``topo``."""
    peer = what in PEER_RELAYS
    args = _relay_args(
        topo.requests_queue, topo.substations_exchange, n, PEER_TIMEOUT_S if peer else 60.0
    )
    if what.startswith("intent"):
        args += ["--events-exchange", topo.events_exchange]
    if peer:  # Dramatiq sends to queues by name, not through an exchange
        args += ["--targets", ",".join(topo.substation_queue(s) for s in SUBSTATIONS)]
    return args


async def _drain(settings: AmqpSettings, what: str, n: int, figs: RelayFigures) -> dict[str, Any]:
    """Drain a pre-filled ``<ns>.requests`` with the relay process ``what`` (a bare relay, or
    a peer's in ``PEER_RELAYS``), watched as every relay is; checks that it relayed all."""
    peer = what in PEER_RELAYS
    async with namespace(settings, what, SUBSTATIONS) as (topo, session):
        pub = await prefill(settings, topo, n)
        figs.publish.append(pub["rate"])
        figs.request_bytes = pub["bytes"]
        queues = [topo.substation_queue(s) for s in SUBSTATIONS]
        module = PEERS if peer else BARE
        proc = await start_bare(settings, what, *relay_args(what, topo, n), module=module)
        watch = await watch_depth(
            session, queues, n, timeout_s=PEER_TIMEOUT_S if peer else 60.0,
            pids=[proc.pid, broker_pid()],
        )  # fmt: skip
        result = await bare_result(proc, what)
        if result["relayed"] != n or result["returned"] or result["nacked"]:
            raise RuntimeError(f"{what} relay incomplete: {result}")
        figs.measured[what].add(watch, n)
        return result


async def bare_round(settings: AmqpSettings, n: int, naive_n: int, figs: RelayFigures) -> None:
    rel = await _drain(settings, "relay", n, figs)
    figs.assignment_bytes = rel["bytes"]
    figs.relay_internal.append(rel["rate"])
    await _drain(settings, "intent-batched", n, figs)
    await _drain(settings, "intent", n, figs)
    async with namespace(settings, "naive", SUBSTATIONS) as (topo, _session):
        # ~10x slower: a smaller batch of the same messages.
        await prefill(settings, topo, naive_n)
        args = _relay_args(topo.requests_queue, topo.substations_exchange, naive_n)
        nai = await run_bare(settings, "naive", *args)
        figs.naive.append(nai["rate"])


async def peers_round(settings: AmqpSettings, n: int, figs: RelayFigures) -> None:
    """The frameworks' relays (bench.throughput.peers), each on a queue of its own."""
    for peer in PEER_RELAYS:
        await _drain(settings, peer, n, figs)


async def dispatcher_round(
    settings: AmqpSettings,
    n: int,
    figs: RelayFigures,
    *,
    profile: str | None = None,
    src: Path | None = None,
) -> None:
    """The dispatcher of this checkout, or (``src``) of another one, e.g. before a change."""
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
        if src is not None:
            env["PYTHONPATH"] = str(src)  # ahead of this checkout's editable install
        log = tempfile.TemporaryFile()  # noqa: SIM115 (read on failure, closed with the round)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dispatcher",
            env=env,
            cwd=src or REPO_ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        spy: asyncio.subprocess.Process | None = None
        try:
            if profile:
                py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                fmt_ = "raw" if profile.endswith(".txt") else "flamegraph"
                spy = await asyncio.create_subprocess_exec(
                    py_spy, "record", "-o", profile, "-f", fmt_, "-r", "200", "-p", str(proc.pid),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
            watch = await watch_depth(
                session, queues, n, timeout_s=90, pids=[proc.pid, broker_pid()]
            )
        finally:
            await terminate(proc, 15)
            if spy is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(spy.wait(), 15)
            stop_beats.set()
            await beats
        moved = watch.samples[-1][1] if watch.samples else 0
        if moved < n:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            log.close()
            raise RuntimeError(f"dispatcher moved {moved:.0f} of {n} in time; its log:\n{tail}")
        log.close()
        figs.measured["dispatcher" if src is None else "baseline"].add(watch, n)


async def run(
    settings: AmqpSettings,
    *,
    quick: bool,
    profile: str | None = None,
    baseline_src: Path | None = None,
    ceiling: bool = True,
    peers: bool = False,
    count: int | None = None,
) -> tuple[RelayFigures, list[Table]]:
    """Parts 1 and 2 (``ceiling``) and the frameworks' relays (``peers``), interleaved. Without
    ``ceiling`` a round is the bare relay, the dispatcher and the peers: what the peers'
    table compares them with. ``count`` overrides the messages per relay."""
    n = count or (10_000 if quick else 20_000)
    naive_n = max(1, n // 10)
    # Interference on a shared machine only ever slows a run down: the best of three, each part
    # interleaved with the others, is the least disturbed.
    rounds = 1 if quick else 3
    figs = RelayFigures(n=n)
    # Interleaved, so that drift in what else runs on the machine hits all of them alike.
    for _ in range(rounds):
        if ceiling:
            await bare_round(settings, n, naive_n, figs)
        else:
            await _drain(settings, "relay", n, figs)
        await dispatcher_round(settings, n, figs, profile=profile)
        if baseline_src is not None:
            await dispatcher_round(settings, n, figs, src=baseline_src)
        if peers:
            await peers_round(settings, n, figs)
    out = tables(figs, baseline_src) if ceiling else []
    if peers:
        out.append(peers_table(figs))
    return figs, out


# How each relay waits for its confirms and acks, for the peers' table.
CONFIRMS = {
    "relay": "pipelined; one ack per confirm (multiple)",
    "dispatcher": "pipelined; intent then assignments per batch",
    "faststream": "each awaited by its own task [a]",
    "dramatiq": "one at a time per thread [b]",
}
PEER_NAMES = {"faststream": "FastStream relay", "dramatiq": "Dramatiq relay"}


def peers_table(figs: RelayFigures) -> Table:
    """The frameworks' relays beside the bare relay and the dispatcher of the same rounds."""
    relay, disp = figs.measured["relay"], figs.measured["dispatcher"]
    rounds = max(len(figs.measured[p].rates) for p in PEER_RELAYS)
    t = Table(
        f"2b. Frameworks: the bare relay's guarantee written with FastStream and with Dramatiq, "
        f"same pre-filled quorum queue ({figs.n:,} msgs; best of {rounds})",
        ["what", "msg/s", "runs", "vs bare relay", "vs dispatcher", "CPU us/msg",
         "broker us/msg", "confirms"],
    )  # fmt: skip
    rows = [("bare relay (pika, ceiling)", "relay"), ("smartgrid-dispatcher", "dispatcher")]
    rows += [(PEER_NAMES[p], p) for p in PEER_RELAYS]
    for name, key in rows:
        m = figs.measured[key]
        t.add(
            name, m.best, m.runs(), fmt_ratio(ratio(m.best, relay.best)),
            fmt_ratio(ratio(m.best, disp.best)), fmt(m.cpu), fmt(m.broker_cpu), CONFIRMS[key],
        )  # fmt: skip
    t.notes += [
        "every relay: manual ack from the quorum <ns>.requests, persistent + mandatory "
        "publish with publisher confirms, the source acked only once its publish is "
        "confirmed; each in its own process, on a queue of its own, in the same rounds",
        f"[a] FastStream {_version('faststream')}: {LIMITS['faststream']}",
        f"[b] Dramatiq {_version('dramatiq')}: {LIMITS['dramatiq']}",
    ]
    return t


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "(not installed)"


def tables(figs: RelayFigures, baseline_src: Path | None = None) -> list[Table]:
    relay, intent, per_request, disp, base = (figs.measured[k] for k in OWN_RELAYS)
    rounds = len(relay.rates)
    ceiling = Table(
        f"1. Ceiling: bare pika on this machine ({figs.n:,} msgs; request {figs.request_bytes} B, "
        f"assignment {figs.assignment_bytes} B; best of {rounds})",
        ["what", "msg/s", "runs", "vs relay", "CPU us/msg", "broker us/msg"],
    )

    def add_rates(name: str, rates: list[float]) -> None:
        best = _max(rates)
        runs = " / ".join(f"{v:,.0f}" for v in rates)
        ceiling.add(name, best, runs, fmt_ratio(ratio(best, relay.best)), "", "")

    add_rates("publish, confirms pipelined (window 1000)", figs.publish)
    for name, m in (
        ("relay, confirms pipelined (prefetch 1000)", relay),
        ("intent-first relay, one intent per batch", intent),
        ("intent-first relay, one intent per request", per_request),
    ):
        ceiling.add(
            name, m.best, m.runs(), fmt_ratio(ratio(m.best, relay.best)),
            fmt(m.cpu), fmt(m.broker_cpu),
        )  # fmt: skip
    add_rates("relay waiting for each confirm (Blocking)", figs.naive)
    ceiling.notes += [
        "quorum queues as in the product; each relay drains a full <ns>.requests into 3 "
        "substation queues, rate from 10% to 90% of the messages (relay on its own clock, whole "
        "run: " + " / ".join(f"{v:,.0f}" for v in figs.relay_internal) + ")",
        "intent-first: the dispatcher's protocol without the dispatcher (no parsing, no policy): "
        "a confirmed intent, then the confirmed assignment, then the ack; per batch (what one "
        "turn of the I/O loop delivered) as the dispatcher does, or per request",
    ]
    r = ratio(disp.best, relay.best)
    dispatcher = Table(
        "2. Dispatcher: real smartgrid-dispatcher draining the same pre-filled queue",
        ["what", "msg/s", "runs", "vs bare relay", "CPU us/msg", "broker us/msg", "target", "met"],
    )
    dispatcher.add(
        "bare relay (ceiling)", relay.best, relay.runs(), "1.00x",
        fmt(relay.cpu), fmt(relay.broker_cpu), "", "",
    )  # fmt: skip
    dispatcher.add(
        "bare intent-first relay, one intent per batch", intent.best, intent.runs(),
        fmt_ratio(ratio(intent.best, relay.best)), fmt(intent.cpu), fmt(intent.broker_cpu), "", "",
    )  # fmt: skip
    dispatcher.add(
        "smartgrid-dispatcher (headroom, 3 live substations)",
        disp.best,
        disp.runs(),
        fmt_ratio(r),
        fmt(disp.cpu),
        fmt(disp.broker_cpu),
        f">= {DISPATCHER_TARGET:.2f}x",
        "yes" if r is not None and r >= DISPATCHER_TARGET else "NO",
    )
    if baseline_src is not None:
        dispatcher.add(
            f"the same from {baseline_src}", base.best, base.runs(),
            fmt_ratio(ratio(base.best, relay.best)), fmt(base.cpu), fmt(base.broker_cpu), "", "",
        )  # fmt: skip
        dispatcher.notes.append(
            f"this checkout's dispatcher against {baseline_src}'s: "
            f"{fmt_ratio(ratio(disp.best, base.best))} the rate, "
            f"{fmt_ratio(ratio(disp.cpu, base.cpu))} the CPU per message"
        )
    dispatcher.notes += [
        "the dispatcher against its own protocol's ceiling (bare intent-first relay, batched): "
        + fmt_ratio(ratio(disp.best, intent.best)),
        "each pump (the requests of one event-loop turn): one confirmed DispatchIntent listing "
        "their routes, then each confirmed assignment, then the acks; the bare relay publishes "
        "once per request",
    ]
    return [ceiling, dispatcher]
