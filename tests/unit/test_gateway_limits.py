"""The gateway's connection limits (gateway.limits), driven byte by byte on a fake transport.

These also pin what the protocol relies on in uvicorn's HttpToolsProtocol: its parser callbacks,
``cycle.response_complete`` / ``keep_alive``, ``connections``, ``timeout_keep_alive``; a uvicorn
upgrade that changes them fails here first.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from gateway.limits import (
    BODY_GRACE_S,
    ConnectionLimits,
    LimitedHttpToolsProtocol,
    limited_protocol,
)
from tests.helpers import wait_until

GET = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.eof = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def write(self, data: bytes) -> None:
        assert not self.eof, "written after the write side was shut"
        self.written += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def status(self) -> int | None:
        """The status of the first answer written, if any."""
        return int(self.written.split(b" ", 2)[1]) if self.written else None


class Recorder:
    """An ASGI app that answers 200; with ``read_body`` it first reads the whole body."""

    def __init__(self, read_body: bool = True) -> None:
        self.read_body = read_body
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        while self.read_body:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class Server:
    """Makes connections of the limited protocol on one shared server state."""

    def __init__(self, app: Recorder, keep_alive_s: int = 5, **limits: Any) -> None:
        self.refusals: list[int] = []
        defaults: dict[str, Any] = {
            "max_header_bytes": 4096,
            "header_timeout_s": 10.0,
            "body_timeout_s": 10.0,
            "max_connections": 100,
        }
        self.limits = ConnectionLimits(**(defaults | limits), on_refusal=self.refusals.append)
        self.config = uvicorn.Config(
            app,
            http=limited_protocol(self.limits),
            ws="none",
            lifespan="off",
            log_config=None,
            timeout_keep_alive=keep_alive_s,
        )
        self.config.load()
        self.state = ServerState()

    def connect(self) -> tuple[LimitedHttpToolsProtocol, FakeTransport]:
        cls = self.config.http_protocol_class
        proto = cls(config=self.config, server_state=self.state, app_state={})  # type: ignore[call-arg]
        assert isinstance(proto, LimitedHttpToolsProtocol)
        transport = FakeTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        return proto, transport


def head(extra_header_bytes: int = 0) -> bytes:
    pad = b"X-Pad: " + b"p" * extra_header_bytes + b"\r\n" if extra_header_bytes else b""
    return b"GET /healthz HTTP/1.1\r\nHost: gw\r\n" + pad + b"\r\n"


async def test_a_normal_request_is_served_and_leaves_no_deadline() -> None:
    """Finding 8: the limits cost nothing to a request that arrives whole (no timer left)."""
    app = Recorder()
    server = Server(app)
    proto, transport = server.connect()
    proto.data_received(GET)
    await wait_until(lambda: transport.status() == 200, "a 200", timeout=5, poll=0.01)
    assert app.paths == ["/healthz"]
    assert proto._deadline is None  # uvicorn's keep-alive timer alone runs now
    assert not transport.closed


@pytest.mark.parametrize("over", [False, True])
async def test_a_head_over_the_limit_is_431_and_never_reaches_the_app(over: bool) -> None:
    """Finding 8: a request head over max_header_bytes gets 431 and its connection is closed;
    one within it is served."""
    app = Recorder()
    server = Server(app, max_header_bytes=4096)
    proto, transport = server.connect()
    data = head(4096 if over else 3900)
    proto.data_received(data)
    if over:
        assert transport.status() == 431
        assert b'"detail"' in transport.written
        assert b"connection: close" in transport.written
        assert transport.eof  # the answer is followed by EOF, then the connection closes
        await asyncio.sleep(0)  # one loop turn, no time: an app task started would have run
        assert app.paths == []
        assert server.refusals == [431]
        proto.data_received(b"more of the same")  # dropped, not parsed
    else:
        await wait_until(lambda: transport.status() == 200, "a 200", timeout=5, poll=0.01)
        assert app.paths == ["/healthz"]
        assert server.refusals == []


async def test_a_head_arriving_in_small_reads_is_refused_before_it_is_all_held() -> None:
    """Finding 8: an endless header is refused once past the limit, not buffered to its end."""
    app = Recorder()
    server = Server(app, max_header_bytes=4096)
    proto, transport = server.connect()
    proto.data_received(b"POST /v1/charge-requests HTTP/1.1\r\nIdempotency-Key: ")
    fed = 0
    while transport.status() is None and fed < 1_000_000:
        proto.data_received(b"k" * 1024)
        fed += 1024
    assert transport.status() == 431
    assert fed <= 4096 + 2 * 1024  # the limit and about one read beyond it
    assert app.paths == []


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHo"], ids=["nothing", "part"])
async def test_a_head_not_complete_in_time_is_408(sent: bytes) -> None:
    """Finding 8: a connection that does not finish its request head within header_timeout_s
    (slowloris, or silence) gets 408 and is closed."""
    app = Recorder()
    server = Server(app, header_timeout_s=0.2)
    proto, transport = server.connect()
    if sent:
        proto.data_received(sent)
    waited = await wait_until(
        lambda: transport.status() is not None, "an answer", timeout=5, poll=0.01
    )
    assert transport.status() == 408
    assert transport.eof
    assert waited < 0.2 + 3
    assert server.refusals == [408]
    assert app.paths == []


async def test_a_slow_head_after_a_kept_alive_request_is_408() -> None:
    """Finding 8: on a kept-alive connection the next head is bounded from its first byte."""
    app = Recorder()
    server = Server(app, header_timeout_s=0.2)
    proto, transport = server.connect()
    proto.data_received(GET)
    await wait_until(lambda: transport.status() == 200, "a 200", timeout=5, poll=0.01)
    transport.written = b""
    proto.data_received(b"GET /hea")
    await wait_until(lambda: transport.status() is not None, "an answer", timeout=5, poll=0.01)
    assert transport.status() == 408


async def test_connections_beyond_the_limit_get_503_at_once() -> None:
    """Finding 8: at most max_connections are open; one beyond gets 503 and is closed."""
    server = Server(Recorder(), max_connections=2)
    (first_proto, first), (_, second), (third_proto, third) = (server.connect() for _ in range(3))
    assert first.written == second.written == b""
    assert third.status() == 503
    assert b"retry-after: 1\r\n" in third.written
    assert third.eof
    assert server.refusals == [503]
    # A refused connection counts until it is gone (its linger ends), like any other.
    first_proto.connection_lost(None)
    third_proto.connection_lost(None)
    _, fourth = server.connect()
    assert fourth.written == b""


async def test_a_body_nobody_reads_cannot_hold_the_connection() -> None:
    """Finding 8: answered before its body was read (as 401/413 are), a body that stops
    arriving still ends the connection after body_timeout_s (+ the app's grace)."""
    app = Recorder(read_body=False)
    server = Server(app, body_timeout_s=0.1)
    proto, transport = server.connect()
    proto.data_received(b"POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n{")
    await wait_until(lambda: transport.status() == 200, "a 200", timeout=5, poll=0.01)
    proto.data_received(b'"a": ')  # a trickle cancels uvicorn's keep-alive timer
    waited = await wait_until(
        lambda: transport.closed, "the connection closed", timeout=0.1 + BODY_GRACE_S + 3, poll=0.01
    )
    assert waited >= 0.1


async def test_idle_after_an_early_answer_is_bounded_by_keep_alive() -> None:
    """Finding 8: the body of an early-answered request arrives; the idle connection after it
    is closed after the keep-alive timeout (uvicorn's own timer was cancelled by that body)."""
    app = Recorder(read_body=False)
    server = Server(app, keep_alive_s=1)
    proto, transport = server.connect()
    proto.data_received(b"POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{")
    await wait_until(lambda: transport.status() == 200, "a 200", timeout=5, poll=0.01)
    proto.data_received(b"}")
    waited = await wait_until(
        lambda: transport.closed, "the connection closed", timeout=1 + 3, poll=0.01
    )
    assert waited >= 0.5


def test_the_protocol_rests_on_uvicorns_httptools_callbacks() -> None:
    """Finding 8: the uvicorn internals the limits override or read still exist."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    for name in (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "on_response_complete",
    ):
        assert callable(getattr(HttpToolsProtocol, name)), name
    cycle_init = RequestResponseCycle.__init__.__code__.co_varnames
    assert "keep_alive" in cycle_init
    assert {"response_complete", "keep_alive"} <= set(
        RequestResponseCycle.__init__.__code__.co_names
    )


def test_the_gateway_serves_with_its_limits() -> None:
    """Finding 8: the settings reach uvicorn: the limited protocol, the keep-alive timeout, no
    WebSocket upgrade (which would leave the protocol), and refusals counted in /metrics."""
    from gateway import GatewaySettings, create_app
    from gateway.__main__ import uvicorn_config
    from tests.unit.gateway_doubles import FakePublisher

    settings = GatewaySettings(
        namespace="unit-gateway",
        max_header_bytes=2048,
        header_timeout_s=3,
        body_timeout_s=4,
        max_connections=7,
        keep_alive_timeout_s=9,
        retry_after_s=4,
    )
    app = create_app(settings, FakePublisher())
    config = uvicorn_config(app, settings)
    assert isinstance(config.http, type)
    assert issubclass(config.http, LimitedHttpToolsProtocol)
    limits = config.http.limits
    assert (limits.max_header_bytes, limits.header_timeout_s) == (2048, 3)
    assert (limits.body_timeout_s, limits.max_connections, limits.retry_after_s) == (4, 7, 4)
    assert config.timeout_keep_alive == 9
    assert config.ws == "none"
    limits.on_refusal(431)
    assert app.state.metrics.refused_connections.labels("431")._value.get() == 1


@pytest.mark.parametrize(
    ("soft", "hard", "raised_to"),
    [(1024, 4096, 2048 + 64), (1024, 1500, 1500), (100_000, 200_000, None)],
)
def test_open_files_are_raised_to_fit_the_connections(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, raised_to: int | None
) -> None:
    """Finding 8: max_connections means something only if that many sockets can be opened."""
    import resource

    from gateway.__main__ import allow_open_files

    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (soft, hard))
    monkeypatch.setattr(resource, "setrlimit", lambda _which, limits: set_to.append(limits))
    allow_open_files(2048)
    assert set_to == ([] if raised_to is None else [(raised_to, hard)])


async def test_each_body_read_expires_at_its_own_deadline_and_only_the_read() -> None:
    """Finding 8: with one timer for all reads, each read still times out at its own deadline,
    a read that finished is never cancelled afterwards, and other cancellations pass through."""
    from gateway.deadlines import Deadlines

    deadlines = Deadlines(0.3)
    never = asyncio.Event()
    started = time.monotonic()

    async def stalled() -> float:
        with pytest.raises(TimeoutError):
            await deadlines.within(never.wait)
        return time.monotonic() - started

    async def quick_then_slow() -> str:
        async def ready() -> str:
            return "read"

        got = await deadlines.within(ready)
        await asyncio.sleep(0.8)  # beyond every deadline: must not be cancelled
        return got

    first = asyncio.create_task(stalled())
    await asyncio.sleep(0.15)  # the second read starts later: its deadline is its own
    second = asyncio.create_task(stalled())
    finished = asyncio.create_task(quick_then_slow())
    other = asyncio.create_task(deadlines.within(never.wait))
    await asyncio.sleep(0.05)  # a read under way, well before any deadline, is then cancelled
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other
    first_s, second_s = await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert 0.29 <= first_s < 0.3 + 2
    assert 0.44 <= second_s < 0.45 + 2
    assert await asyncio.wait_for(finished, 5) == "read"
