"""Finding 8 against a real gateway process (uvicorn, uvloop, the limited httptools protocol)
and the real broker, from raw sockets: what a client sends before its body is bounded in size,
in time and in connections, and nothing is published for what was refused.

Every bound is asserted generously (the timeout + 5 s), never as an exact duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from contracts import Topology
from loadgen.grid import free_ports, metric_value
from messaging import AmqpSettings, Session
from tests.helpers import wait_until_serving, wait_until_sync

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
SLACK_S = 5.0  # beyond a timeout, how late an answer may be on a loaded machine
POST_HEAD = b"POST /v1/charge-requests HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"


@dataclass
class Gateway:
    port: int
    pid: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return metric_value(text, name, labels or None) or 0.0


@contextlib.contextmanager
def gateway(
    amqp_settings: AmqpSettings, topology: Topology, log_dir: Path, **env: str
) -> Iterator[Gateway]:
    """``python -m gateway`` of this checkout on a free loopback port, until healthy."""
    (port,) = free_ports(1)
    log = log_dir / "gateway.log"
    environ = {
        **os.environ,
        "SMARTGRID_AMQP_URL": amqp_settings.amqp_url.get_secret_value(),
        "SMARTGRID_NAMESPACE": topology.namespace,
        "SMARTGRID_HTTP_HOST": HOST,
        "SMARTGRID_HTTP_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
        **{f"SMARTGRID_{k.upper()}": v for k, v in env.items()},
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway"],
            cwd=REPO_ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    gw = Gateway(port, proc.pid, log)
    try:
        wait_until_serving(f"{gw.url}/healthz", proc, log, "the gateway")
        yield gw
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def exchange(port: int, data: bytes, within_s: float) -> bytes:
    """Send ``data`` on a new connection and read until the server closes (or ``within_s``)."""
    with socket.create_connection((HOST, port), timeout=within_s) as sock:
        with contextlib.suppress(OSError):  # the server may stop reading once it has refused
            sock.sendall(data)
        return read_until_closed(sock, within_s)


def read_until_closed(sock: socket.socket, within_s: float) -> bytes:
    got = b""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got


def read_response(sock: socket.socket, within_s: float = 10) -> bytes:
    """One whole response (head and Content-Length body) from a kept-alive connection."""
    sock.settimeout(within_s)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {got!r}"
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


def status_of(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


async def requests_queued(amqp_settings: AmqpSettings, topology: Topology) -> int:
    session = await Session.open(amqp_settings, "smartgrid-tests-gateway-limits")
    try:
        return await session.queue_depth(topology.requests_queue)
    finally:
        await session.close()


@pytest.mark.timeout(120)
def test_a_megabyte_idempotency_key_is_431_and_costs_no_memory(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    """Finding 8: a 1 MB (and an 8 MB) Idempotency-Key header gets 431 and the connection is
    closed, without the gateway's memory growing by megabytes; nothing is published."""
    body = b'{"vehicle_id": "EV-1", "energy_kwh": 10, "max_power_kw": 11}'
    with gateway(amqp_settings, topology, tmp_path) as gw:
        # A first refusal loads every code path, so what follows measures only buffering.
        def with_key(size: int) -> bytes:
            head = POST_HEAD + b"Idempotency-Key: " + b"k" * size + b"\r\n"
            return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

        warm = exchange(gw.port, with_key(40_000), 10)
        assert status_of(warm) == 431, warm[:200]
        before = gw.rss_kb()
        for size in (1_000_000, 8_000_000):
            answer = exchange(gw.port, with_key(size), 10)
            assert status_of(answer) == 431, answer[:200]
            assert b"connection: close" in answer.lower()
        grown_kb = gw.rss_kb() - before
        assert grown_kb < 2048, f"memory grew by {grown_kb} kB"
        assert gw.metric("smartgrid_gateway_refused_connections_total", status="431") == 3
    assert asyncio.run(requests_queued(amqp_settings, topology)) == 0


@pytest.mark.timeout(120)
async def test_200_connections_trickling_a_header_get_408_within_the_timeout(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    """Finding 8: 200 connections sending one header byte a second (slowloris) are each
    answered 408 and closed within the header timeout (+ slack), and the gateway still serves."""
    timeout_s = 2.0
    with gateway(amqp_settings, topology, tmp_path, header_timeout_s=str(timeout_s)) as gw:

        async def trickle() -> tuple[bytes, float]:
            reader, writer = await asyncio.open_connection(HOST, gw.port)
            opened = time.monotonic()
            writer.write(POST_HEAD + b"X-Slow: ")
            got = b""
            try:
                async with asyncio.timeout(timeout_s + SLACK_S):
                    while True:
                        try:
                            chunk = await asyncio.wait_for(reader.read(65536), 1.0)
                        except TimeoutError:
                            writer.write(b"z")  # one more byte of the header, a second later
                            continue
                        if not chunk:
                            break  # closed by the gateway
                        got += chunk
            except TimeoutError:
                return got, float("inf")  # still open after the timeout and the slack
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            return got, time.monotonic() - opened

        results = await asyncio.gather(*(trickle() for _ in range(200)))
        served = await asyncio.to_thread(httpx.get, f"{gw.url}/healthz", timeout=5)
    statuses = [status_of(got) for got, _ in results]
    assert statuses == [408] * 200, {s: statuses.count(s) for s in set(statuses)}
    slowest = max(closed_after for _, closed_after in results)
    assert slowest < timeout_s + SLACK_S
    assert served.status_code == 200


@pytest.mark.timeout(120)
def test_a_chunked_body_that_stops_arriving_gets_408(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    """Finding 8: a chunked body that stops arriving is timed out with 408 and the connection
    closed; nothing is published."""
    timeout_s = 2.0
    with gateway(amqp_settings, topology, tmp_path, body_timeout_s=str(timeout_s)) as gw:
        started = time.monotonic()
        head = POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
        answer = exchange(gw.port, head + b"10\r\n" + b'{"vehicle_id": "' + b"\r\n", 30)
        took = time.monotonic() - started
        assert status_of(answer) == 408, answer[:200]
        assert b"connection: close" in answer.lower()
        assert took < timeout_s + SLACK_S
        assert gw.metric("smartgrid_gateway_requests_total", status="408") == 1
    assert asyncio.run(requests_queued(amqp_settings, topology)) == 0


@pytest.mark.timeout(120)
def test_connections_beyond_the_limit_are_refused(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    """Finding 8: with max_connections open, one more gets 503 and is closed at once, those
    open are still served, and a place freed is taken again."""
    limit = 20
    env = {"max_connections": str(limit), "header_timeout_s": "60"}
    with gateway(amqp_settings, topology, tmp_path, **env) as gw:
        get = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
        with contextlib.ExitStack() as stack:
            held = [
                stack.enter_context(socket.create_connection((HOST, gw.port), timeout=10))
                for _ in range(limit)
            ]
            for sock in held:  # each is accepted and served, and stays open (keep-alive)
                sock.sendall(get)
                assert status_of(read_response(sock)) == 200
            for _ in range(5):
                started = time.monotonic()
                answer = exchange(gw.port, get, 10)
                assert status_of(answer) in (503, None), answer[:200]  # None: a reset
                assert status_of(answer) is None or b"retry-after: 1\r\n" in answer.lower()
                assert time.monotonic() - started < SLACK_S
            held[0].sendall(get)
            assert status_of(read_response(held[0])) == 200
        # The held connections are closed: places are free again (once the gateway noticed).
        closing = get.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        wait_until_sync(
            lambda: status_of(exchange(gw.port, closing, 5)) == 200,
            "a place freed (a 200 on a new connection)",
            timeout=SLACK_S,
            poll=0.1,
        )
        assert gw.metric("smartgrid_gateway_refused_connections_total", status="503") >= 5
