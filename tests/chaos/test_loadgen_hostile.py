"""Finding 9: loadgen can hang and can be fooled. ``python -m loadgen run`` as a user runs it,
against the real broker, while a hostile peer floods heartbeats of 5,000 made-up substations,
forges events, or the broker stops answering (a loopback proxy that stops relaying): it ends
within its settle time plus a bound, its output stays small, SIGTERM ends it within seconds with
the report so far, and forged completions are suspect, not charges.

No grid runs here: a dispatcher would make a queue for every made-up substation, which is the
dispatcher's finding, not loadgen's. With nothing consuming <ns>.requests, every request loadgen
sends is accepted and stays there, unfinished (exit 4), unless the test takes it off the queue
(then it is lost: exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from contracts import ChargeEvent, ChargeRequest, DispatchIntent, EventKind, Heartbeat, Topology
from contracts.messages import Route
from messaging import AmqpSettings, Delivery, Session
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
FLOOD = 5000
# The flood's pace: 5,000 heartbeats in about 1.4 s.
FLOOD_S = 1.4
MAX_STDOUT_BYTES = 200_000
# Beyond its settle time, loadgen's cleanup and report take seconds; this bound is generous
# for a loaded 2-core machine, and far below what a hang is.
ENDS_WITHIN_S = 40.0
SIGTERM_ENDS_WITHIN_S = 12.0


class Loadgen:
    """``python -m loadgen run ...`` in a subprocess, its output in files."""

    def __init__(self, proc: asyncio.subprocess.Process, out: Path, err: Path) -> None:
        self.proc = proc
        self.out_path = out
        self.err_path = err

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    async def wait_for_output(self, text: str, within_s: float = 60) -> None:
        def printed() -> bool:
            if text in self.stdout:
                return True
            code = self.proc.returncode
            assert code is None, f"loadgen exited {code} before printing {text!r}:\n{self.stdout}"
            return False

        await wait_until(
            printed,
            f"{text!r} from loadgen",
            timeout=within_s,
            poll=0.1,
            detail=lambda: self.stdout[-2000:],
        )

    async def ended_within(self, seconds: float) -> tuple[int, float]:
        """(exit code, seconds it took); kills it (by its pid) and fails if it is not done."""
        started = time.monotonic()
        try:
            code = await asyncio.wait_for(self.proc.wait(), seconds)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(
                f"loadgen still running {seconds:.0f}s later:\n{self.stdout[-1500:]}"
                f"\n{self.stderr[-1500:]}"
            ) from None
        return code, time.monotonic() - started


@contextlib.asynccontextmanager
async def loadgen(
    tmp_path: Path, amqp_url: str, namespace: str, *args: str, **env: str
) -> AsyncIterator[Loadgen]:
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "loadgen", "run", "--via", "amqp", *args),
            cwd=ROOT,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "SMARTGRID_AMQP_URL": amqp_url,
                "SMARTGRID_NAMESPACE": namespace,
                **env,
            },
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    run = Loadgen(proc, out, err)
    try:
        yield run
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def flood_heartbeats(settings: AmqpSettings, topology: Topology) -> float:
    """What a hostile peer may do: 5,000 heartbeats of distinct random ids, ~1.4 s."""
    rng = random.Random(9)
    session = await Session.open(settings, "smartgrid-chaos-flood")
    started = time.monotonic()
    try:
        await session.declare_all(topology.exchanges(), [], [])
        confirms = []
        for i in range(FLOOD):
            hb = Heartbeat(
                substation_id=f"fake-{rng.getrandbits(48):012x}",
                capacity_kw=rng.uniform(10, 1000),
                bays=4,
                load_kw=rng.uniform(0, 500),
                active_sessions=1,
                queued=0,
                seq=1,
                assignments_received=0,
            )
            body = hb.model_dump_json().encode()
            confirms.append(session.publish(topology.heartbeats_exchange, "", body))
            if i % 100 == 99:  # the flood's rate: FLOOD heartbeats spread over FLOOD_S
                await asyncio.sleep(FLOOD_S / FLOOD * 100)
        await asyncio.gather(*confirms)
    finally:
        await session.close()
    return time.monotonic() - started


class FreezingProxy:
    """A loopback TCP relay to the broker that can stop relaying, keeping every connection
    open: a broker that stops answering without hanging up."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0
        self.held = 0  # reads held back since the freeze (a client waiting on the broker)

    async def start(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def freeze(self) -> None:
        self.flowing.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await self.flowing.wait()
                data = await src.read(65536)
                if not data:
                    break
                if not self.flowing.is_set():
                    self.held += 1
                await self.flowing.wait()  # what was read as it froze is held too
                dst.write(data)
                await dst.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for w in self._writers:
            w.close()


@pytest.fixture
async def proxy(amqp_settings: AmqpSettings) -> AsyncIterator[FreezingProxy]:
    url = urlsplit(amqp_settings.amqp_url.get_secret_value())
    relay = await FreezingProxy(url.hostname or "127.0.0.1", url.port or 5672).start()
    yield relay
    await relay.close()


def _via(settings: AmqpSettings, port: int) -> str:
    url = urlsplit(settings.amqp_url.get_secret_value())
    netloc = url.netloc.rsplit("@", 1)
    auth = f"{netloc[0]}@" if len(netloc) == 2 else ""
    return url._replace(netloc=f"{auth}127.0.0.1:{port}").geturl()


@pytest.mark.timeout(180)
async def test_a_heartbeat_flood_neither_holds_loadgen_nor_floods_its_output(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    """Finding 9: under a flood of 5,000 heartbeats with random ids, loadgen ends within its
    settle time plus a bound, prints the busiest substations and a count of the rest (not a line
    per substation: under 200 KB in all), and tracks a bounded number of them."""
    settle = 6.0
    report = tmp_path / "report.json"
    url = amqp_settings.amqp_url.get_secret_value()
    args = ("-n", "40", "--rate", "20", "--settle", str(settle), "--json", str(report))
    async with loadgen(tmp_path, url, topology.namespace, *args) as run:
        # Given loadgen following the grid and sending
        await run.wait_for_output("sent ")
        started = time.monotonic()
        # When a peer floods the heartbeats exchange
        took = await flood_heartbeats(amqp_settings, topology)
        code, _ = await run.ended_within(2 + settle + ENDS_WITHIN_S)
    ended = time.monotonic() - started
    print(f"\nflood of {FLOOD} in {took:.1f}s; loadgen ended {ended:.1f}s after it began")
    # Then it ends within its settle time plus a bound, and says nothing was consumed
    assert code == 4, run.stderr[-2000:]
    assert ended < 2 + settle + ENDS_WITHIN_S
    # And its output stays small, the rest of the substations a count
    size = run.out_path.stat().st_size
    assert size < MAX_STDOUT_BYTES, f"{size} bytes of output"
    assert "more substations" in run.stdout
    assert "what happened" in run.stdout
    doc = json.loads(report.read_text())
    assert (doc["sent"], doc["accepted"], doc["lost"], doc["suspect"]) == (40, 40, 0, 0)
    assert doc["unfinished"]["held"] == 40
    # None of the made-up substations did any of this run's work: none is listed, all counted
    assert doc["substations"] == []
    assert 0 < doc["substations_not_listed"] <= 1000
    assert doc["substations_not_listed"] + doc["ignored_heartbeats"] >= FLOOD - 1000
    assert "Traceback" not in run.stderr


@pytest.mark.timeout(180)
async def test_a_broker_that_stops_answering_holds_loadgen_seconds_not_minutes(
    amqp_settings: AmqpSettings, topology: Topology, proxy: FreezingProxy, tmp_path: Path
) -> None:
    """Finding 9: every broker call loadgen makes is bounded: when the broker stops answering
    (connections open, nothing relayed) loadgen gives up deleting its events queue (the broker
    expires it) with one line, prints its report and ends, within its settle time plus a bound,
    not after the AMQP heartbeat gives the connection up."""
    settle = 3.0
    url = _via(amqp_settings, proxy.port)
    args = ("-n", "20", "--rate", "40", "--settle", str(settle))
    async with loadgen(
        tmp_path, url, topology.namespace, *args, SMARTGRID_AMQP_HEARTBEAT_S="600"
    ) as run:
        # Given a run that has sent everything, confirmed
        await run.wait_for_output("confirmed 20")
        # When the broker stops answering
        proxy.freeze()
        code, took = await run.ended_within(settle + ENDS_WITHIN_S)
    print(f"\nloadgen ended {took:.1f}s after the broker froze (settle {settle:g}s)")
    # Then loadgen ends anyway, with its report (the management API, not behind the proxy,
    # still counts the requests in <ns>.requests: unfinished), and says what it gave up
    assert code == 4
    assert "what happened" in run.stdout
    assert "gave up deleting" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.timeout(180)
async def test_sigterm_mid_run_ends_it_within_seconds_with_the_report_so_far(
    amqp_settings: AmqpSettings, topology: Topology, proxy: FreezingProxy, tmp_path: Path
) -> None:
    """Finding 9: SIGTERM ends a run within seconds, with the report of what it saw so far
    and exit code 143, even while the broker does not answer and a flood goes on."""
    url = _via(amqp_settings, proxy.port)
    args = ("-n", "2000", "--rate", "20", "--settle", "60")
    async with loadgen(
        tmp_path, url, topology.namespace, *args, SMARTGRID_AMQP_HEARTBEAT_S="600"
    ) as run:
        # Given a run half way through its sending, under a flood, whose broker froze
        await run.wait_for_output("sent ")
        await flood_heartbeats(amqp_settings, topology)
        proxy.freeze()
        await wait_until(lambda: proxy.held > 0, "loadgen to send to the frozen broker")
        # When it gets SIGTERM
        run.proc.send_signal(signal.SIGTERM)
        code, took = await run.ended_within(SIGTERM_ENDS_WITHIN_S)
    print(f"\nloadgen ended {took:.1f}s after SIGTERM")
    # Then it ended within seconds, with the report so far, as interrupted by SIGTERM
    assert code == 143, run.stderr[-2000:]
    assert "what happened" in run.stdout
    assert run.out_path.stat().st_size < MAX_STDOUT_BYTES


async def _requests(session: Session, topology: Topology, n: int) -> list[ChargeRequest]:
    """Play the dispatcher's part only as far as reading: the first ``n`` requests."""
    got: list[ChargeRequest] = []
    done = asyncio.Event()

    def on(d: Delivery) -> None:
        got.append(ChargeRequest.model_validate_json(d.body))
        d.ack()
        if len(got) >= n:
            done.set()

    await session.declare_queue(topology.requests_queue_spec())
    tag = await session.consume(topology.requests_queue, on)
    await asyncio.wait_for(done.wait(), 30)
    await session.cancel(tag)
    return got


async def _forge(session: Session, topology: Topology, doc: dict[str, Any], key: str) -> None:
    await session.publish(topology.events_exchange, key, json.dumps(doc).encode())


def _completed(rid: uuid.UUID, energy: Any) -> dict[str, Any]:
    ev = ChargeEvent(request_id=rid, kind=EventKind.COMPLETED, substation_id="s1")
    return {**ev.model_dump(mode="json"), "energy_kwh": energy}


@pytest.mark.timeout(180)
async def test_forged_completions_are_suspect_not_charges(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    """Finding 9: a completion for a request loadgen never saw dispatched, or a second one
    with another energy, is reported as suspect (top-level ``suspect`` in --json), not as a
    completion nor a duplicate charge; the same energy under a new event id is a duplicate; an
    invalid event (a string for a number) is counted, never a crash; lost stays honest."""
    report = tmp_path / "report.json"
    url = amqp_settings.amqp_url.get_secret_value()
    args = ("-n", "6", "--rate", "50", "--settle", "10", "--json", str(report))
    session = await Session.open(amqp_settings, "smartgrid-chaos-forger")
    try:
        async with loadgen(tmp_path, url, topology.namespace, *args) as run:
            # Given the six requests of a run, read off the requests queue
            requests = await _requests(session, topology, 6)
            never_dispatched, two_energies, charged_twice, bad, done, silent = (
                r.request_id for r in requests
            )
            routes = tuple(
                Route(request_id=r, substation_id="s1")
                for r in (two_energies, charged_twice, bad, done)
            )
            intent = DispatchIntent(dispatcher="forger", routes=routes)
            await session.publish(
                topology.events_exchange,
                topology.intent_routing_key,
                intent.model_dump_json().encode(),
            )
            # When forged and real-looking completions arrive
            for rid, energy in (
                (never_dispatched, 20.0),
                (two_energies, 20.0),
                (two_energies, 25.0),
                (charged_twice, 20.0),
                (charged_twice, 20.0),
                (bad, "30"),
                (done, 20.0),
                (uuid.uuid4(), 20.0),
            ):
                await _forge(session, topology, _completed(rid, energy), "event.completed")
            code, _ = await run.ended_within(10 + ENDS_WITHIN_S)
    finally:
        await session.close()
    doc = json.loads(report.read_text())
    # Then the suspect ones are neither completed nor duplicates, and what is lost is honest
    assert code == 1
    assert (doc["completed"], doc["duplicates"], doc["suspect"]) == (3, 1, 2)
    assert doc["lost"] == 3
    lost = {uuid.UUID(r) for r in doc["lost_ids"]}
    assert lost == {never_dispatched, bad, silent}
    assert {uuid.UUID(r) for r in doc["suspect_ids"]} == {never_dispatched, two_energies}
    assert doc["invalid_messages"] == 1
    assert doc["foreign_events"] == 1
    assert "suspect completions" in run.stdout
    assert "Traceback" not in run.stderr
