"""What tests share (test modules never import each other): waiting on a condition under a
deadline, draining a queue, the substations a test started (for cleanup), where deploy/ is, the
external tools a test needs, and messages and loadgen runs made by hand.

Tests wait on the condition they need, never a fixed time: ``wait_until`` (async) and
``wait_until_sync`` poll it until it holds and fail after ``timeout`` saying what was awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from contracts import Assignment, ChargeEvent, ChargeRequest, EventKind, Heartbeat, Topology
from loadgen.choices import Via
from loadgen.run import RunOptions, RunResult, new_result
from loadgen.state import CONFIRMED
from messaging import Delivery, Session

if TYPE_CHECKING:
    from tests.fakes import FakeBroker

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"

# How often a condition is polled unless told: short against the seconds the waits allow.
POLL_S = 0.05

Condition = Callable[[], bool | Awaitable[bool]]
Detail = Callable[[], str]


def _described(condition: Callable[[], object]) -> str:
    """What a wait given no ``what`` waited for: the condition's own source (its line)."""
    try:
        source = " ".join(inspect.getsource(condition).split())
    except (OSError, TypeError):
        return repr(condition)
    return source[:300]


def _timed_out(
    what: str | None,
    condition: Callable[[], object],
    timeout: float,
    detail: Detail | None,
    last_error: BaseException | None,
) -> AssertionError:
    message = f"still waiting after {timeout:g}s for {what or _described(condition)}"
    if last_error is not None:
        message += f" (last: {type(last_error).__name__}: {last_error})"
    if detail is not None:
        message += f"\n{detail()}"
    return AssertionError(message)


async def wait_until(
    condition: Condition,
    what: str | None = None,
    *,
    timeout: float = 15.0,
    poll: float = POLL_S,
    ignore: tuple[type[Exception], ...] = (),
    blocking: bool = False,
    detail: Detail | None = None,
) -> float:
    """Poll ``condition`` until it is true; return the seconds that took.

    ``condition`` may be a coroutine function. ``blocking``: it does blocking I/O (a sync HTTP
    call), so it runs in a thread and the loop keeps serving. ``ignore``: exceptions that mean
    "not yet" (a server still starting). After ``timeout`` an AssertionError names ``what`` was
    awaited (without one, the condition's source line), the last ignored exception and
    ``detail()`` (a log tail, the state seen).
    """
    start = time.monotonic()
    deadline = start + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if blocking:
                result = await asyncio.to_thread(condition)
            else:
                result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return time.monotonic() - start
        except ignore as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise _timed_out(what, condition, timeout, detail, last_error)
        # The poll interval of this wait: the condition is what ends it.
        await asyncio.sleep(poll)


def wait_until_sync(
    condition: Callable[[], bool],
    what: str | None = None,
    *,
    timeout: float = 15.0,
    poll: float = POLL_S,
    ignore: tuple[type[Exception], ...] = (),
    detail: Detail | None = None,
) -> float:
    """``wait_until`` for code without an event loop (fixtures, threads, subprocess drivers)."""
    start = time.monotonic()
    deadline = start + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if condition():
                return time.monotonic() - start
        except ignore as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise _timed_out(what, condition, timeout, detail, last_error)
        # The poll interval of this wait: the condition is what ends it.
        time.sleep(poll)


def wait_until_serving(
    url: str, proc: subprocess.Popen[bytes], log: Path, what: str, *, timeout: float = 30.0
) -> float:
    """Until GET ``url`` answers 200 from ``proc``, a server the test started. If ``proc`` exits
    first, the wait fails at once instead of at its deadline; either failure shows the tail of
    ``log``, the server's output."""

    def tail() -> str:
        return log.read_text(errors="replace")[-3000:]

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited {proc.returncode}:\n{tail()}", pytrace=False)
        return httpx.get(url, timeout=2).status_code == 200

    return wait_until_sync(
        answers,
        f"{what} to answer 200 at {url}",
        timeout=timeout,
        poll=0.2,
        ignore=(httpx.HTTPError,),
        detail=tail,
    )


async def collect(session: Session, queue: str, n: int, timeout: float = 15) -> list[Delivery]:
    """Up to ``n`` deliveries from ``queue`` (acked), whatever arrived within ``timeout``."""
    got: list[Delivery] = []
    done = asyncio.Event()

    def on(d: Delivery) -> None:
        got.append(d)
        d.ack()
        if len(got) >= n:
            done.set()

    tag = await session.consume(queue, on)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout)
    await session.cancel(tag)
    return got


# Substation ids a test started, by namespace, so the topology fixtures delete their queues too.
SUBSTATIONS: dict[str, set[str]] = {}


def register_substations(topo: Topology, ids: list[str]) -> None:
    SUBSTATIONS.setdefault(topo.namespace, set()).update(ids)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str, how: str) -> None:
    """A tool the test needs is absent: in CI (CI=true) a loud failure, elsewhere a skip that
    says how to get it."""
    message = f"{what} is not installed ({how})"
    if in_ci():
        pytest.fail(message + "; .ci/run installs it", pytrace=False)
    pytest.skip(message)


def require(binary: str, how: str) -> str:
    """The path of ``binary`` (PATH, then /usr/bin and /usr/local/bin), or ``missing``."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/bin:/usr/local/bin")
    if found is None:
        missing(binary, how)
        raise AssertionError("unreachable")
    return found


# -- messages and loadgen runs made by hand ---------------------------------------------------
# Their clock is fixed, so that every time and latency a report derives from them is exact.
T0 = datetime(2026, 11, 24, 12, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def charge_request_body(**overrides: Any) -> dict[str, Any]:
    """A valid body of POST /v1/charge-requests, with a request_id of its own."""
    body: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "vehicle_id": "EV-0042",
        "energy_kwh": 32.5,
        "max_power_kw": 11.0,
    }
    body.update(overrides)
    return body


def charge_event(
    rid: uuid.UUID, kind: EventKind, t: float, sid: str | None = None, **fields: Any
) -> ChargeEvent:
    """Request ``rid``'s ``kind`` event at substation ``sid``, ``t`` seconds after T0."""
    return ChargeEvent(request_id=rid, kind=kind, at=at(t), substation_id=sid, **fields)


def heartbeat(sid: str, capacity: float, load: float, seq: int = 1, t: float = 0.0) -> Heartbeat:
    """``sid`` at ``load`` of its ``capacity`` kW (4 bays, one session, nothing queued), sent
    ``t`` seconds after T0."""
    return Heartbeat(
        substation_id=sid,
        capacity_kw=capacity,
        bays=4,
        load_kw=load,
        active_sessions=1,
        queued=0,
        seq=seq,
        assignments_received=0,
        sent_at=at(t),
    )


def accepted_run(n: int, via: Via = "http") -> tuple[RunResult, list[uuid.UUID]]:
    """A run of ``n`` requests sent at T0 and accepted 10 ms later, as ``via`` says it: HTTP's
    202 or the broker's confirm. Their ids, in the order sent."""
    result = new_result(RunOptions(via=via, requests=n))
    ids = [uuid.uuid4() for _ in range(n)]
    for rid in ids:
        result.state.on_sent(rid, T0)
        result.state.on_ingress_result(rid, CONFIRMED if via == "amqp" else "202", at(0.01))
    return result, ids


def leaving_request(
    leaves_in_s: float, energy_kwh: float = 20.0, *, requested_ago_s: float = 0.0
) -> ChargeRequest:
    """A request of an 11 kW car whose departure is ``leaves_in_s`` wall seconds from now
    (negative: passed), requested ``requested_ago_s`` before now."""
    now = datetime.now(UTC)
    return ChargeRequest(
        vehicle_id="ev-1",
        energy_kwh=energy_kwh,
        max_power_kw=11.0,
        departure=now + timedelta(seconds=leaves_in_s),
        requested_at=now - timedelta(seconds=requested_ago_s),
    )


def refuse_connections(
    monkeypatch: pytest.MonkeyPatch, allowed: Callable[[Any], bool], why: str
) -> None:
    """Make every TCP/UDP connection to an address ``allowed`` refuses fail at once with an
    AssertionError naming the address and ``why``."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def refuse(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not allowed(address):
            raise AssertionError(f"a test connected to {address!r}: {why}")

    def connect(sock: socket.socket, address: Any) -> None:
        refuse(sock, address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        refuse(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


def assignment_of(
    request: ChargeRequest, substation_id: str = "s1", capacity_kw: float = 100.0
) -> Assignment:
    """An assignment of ``request`` to ``substation_id``, as a dispatcher makes one."""
    return Assignment.model_validate(
        {
            "request": request,
            "substation_id": substation_id,
            "snapshot": {
                "load_kw": 0,
                "capacity_kw": capacity_kw,
                "committed_kw": 0,
                "pending_kw": 0,
                "heartbeat_seq": 1,
                "heartbeat_age_s": 0,
            },
            "policy": "headroom",
        }
    )


def events_of(broker: FakeBroker, topology: Topology, kind: str) -> list[ChargeEvent]:
    """The ``kind`` events published on the in-memory broker, in order."""
    return [
        ChargeEvent.model_validate_json(p.body)
        for p in broker.published_to(topology.events_exchange)
        if p.routing_key == f"event.{kind}"
    ]


def filled_env(example: str) -> str:
    """What `make env` writes from deploy/.env.example: every empty value made random."""
    return re.sub(r"(?m)^([A-Z_]+)=$", lambda m: f"{m.group(1)}={secrets.token_hex(24)}", example)
