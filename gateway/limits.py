"""What comes before the body is bounded where the bytes arrive: uvicorn's httptools protocol.

uvicorn's httptools protocol has no limit of its own on the size of a request head, on how long
a head or a body may take to arrive, or on how many connections are open. This subclass adds:

* a head (request line and headers) over ``max_header_bytes``: 431, and the connection closed,
  with no more of it held in memory than the limit and about one network read;
* a head not complete ``header_timeout_s`` after the connection opened (or after its first byte,
  on a kept-alive connection): 408, closed;
* a body not complete ``body_timeout_s`` + BODY_GRACE_S after its head: closed (the app answers
  408 at ``body_timeout_s`` when it reads the body; this also bounds a body nobody reads);
* a connection beyond ``max_connections`` open: 503, closed.

Between requests, uvicorn's ``timeout_keep_alive`` closes an idle connection. What this relies
on in uvicorn is pinned by tests/unit/test_gateway_limits.py.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

# The app answers a slow body itself (408) at body_timeout_s; the connection is closed under it
# only if no answer came this much later.
BODY_GRACE_S = 1.0
# A refused peer may still be sending: closing with unread input makes the kernel send a reset,
# which can destroy the answer before the client reads it. So the write side is shut and input
# dropped until the peer closes, for at most this long.
LINGER_S = 2.0

# What the peer must send next: a request head, the rest of a body, or (after an answer given
# before its body was in) nothing, within the keep-alive timeout. None: the app is answering.
Owed = Literal["head", "body", "idle"] | None


def _ignore(_status: int) -> None:
    pass


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    retry_after_s: int = 1  # sent with the 503, as with every 503 of the gateway
    # Called with the status of every refusal (431, 408, 503), e.g. to count it.
    on_refusal: Callable[[int], None] = _ignore


def limited_protocol(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to pass as uvicorn.Config(http=...)."""

    class Limited(LimitedHttpToolsProtocol):
        pass

    Limited.limits = limits
    return Limited


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    # The hot path (a request arriving whole) adds four cheap overrides and no timer: a head is
    # measured only when the read it completed in could have taken it past the limit. (Base
    # methods are called by name there: super() costs a lookup per call.)
    limits: ClassVar[ConnectionLimits]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._owed: Owed = "head"  # the first head is due from the moment the connection opens
        self._deadline: asyncio.TimerHandle | None = None
        self._head_raw = 0  # bytes of earlier reads that were all this (unfinished) head
        self._read = 0  # bytes of the read being parsed
        self._heads = 0  # heads completed on this connection
        self._too_large = False
        self._refused = False
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too many connections; retry later")
        else:
            self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered and closing: what still comes is dropped unparsed
        if self._owed is None or self._owed == "idle":
            # Bytes after a complete request are the next one's head.
            self._owed = "head"
            self._head_raw = 0
            self._cancel_deadline()
        heads, self._read = self._heads, len(data)
        HttpToolsProtocol.data_received(self, data)
        if self._owed is None:
            return  # a request is complete and being answered: nothing is owed
        if self.transport.is_closing():
            return  # refused by uvicorn itself (400: not HTTP)
        if self._owed == "head" and heads == self._heads:
            # All of this read is an unfinished head, which the parser holds: count it.
            self._head_raw += len(data)
            self._too_large = self._too_large or self._head_raw > self.limits.max_header_bytes
        if self._too_large:
            self._refuse(431, f"request head larger than {self.limits.max_header_bytes} bytes")
        else:
            self._watch()

    # -- parser callbacks: a head too large never reaches the app -------------------------------

    def on_headers_complete(self) -> None:
        if self._too_large:
            return
        limit = self.limits.max_header_bytes
        if self._head_raw + self._read > limit and self._head_size() > limit:
            self._too_large = True  # refused by data_received once the parser returns
            return
        self._heads += 1
        self._owed = "body"
        if self._deadline is not None:
            self._cancel_deadline()
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        if not self._too_large:
            HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        if self._too_large:
            return
        # Answered before its body was in (401, 413, ...): the body's bytes cancelled uvicorn's
        # keep-alive timer, so the wait for the next request is bounded here.
        answered = self.cycle is not None and self.cycle.response_complete
        self._owed = "idle" if answered else None
        if self._deadline is not None:
            self._cancel_deadline()
        HttpToolsProtocol.on_message_complete(self)

    def _head_size(self) -> int:
        """This head's URL and headers, with their ": " and CRLFs."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    # -- deadlines ------------------------------------------------------------------------------

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _watch(self) -> None:
        """Bound the wait for what the peer owes, from (about) when it began to owe it."""
        if self._deadline is not None or self._owed is None:
            return
        if self._owed == "head":
            delay, late = self.limits.header_timeout_s, self._head_late
        elif self._owed == "body":
            delay, late = self.limits.body_timeout_s + BODY_GRACE_S, self._body_late
        else:
            delay, late = float(self.timeout_keep_alive), self.transport.close
        self._deadline = self.loop.call_later(delay, late)

    def _head_late(self) -> None:
        self._deadline = None
        self._refuse(408, f"request head not received within {self.limits.header_timeout_s:g}s")

    def _body_late(self) -> None:
        self._deadline = None
        log.info("%s: body not received in time; connection closed", self._peer())
        self.transport.close()

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` and close; nothing more of this connection is parsed."""
        self._refused = True
        self._cancel_deadline()
        self.limits.on_refusal(status)
        log.info("%s: %d %s", self._peer(), status, detail)
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request is refused while the one before is being answered: that
            # answer is the last; reading stops and the connection closes once it is sent.
            self.cycle.keep_alive = False
            self.transport.pause_reading()
            return
        body = json.dumps({"detail": detail}).encode()
        lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
        lines += [n + b": " + v + b"\r\n" for n, v in self.server_state.default_headers]
        if status == 503:
            lines.append(b"retry-after: %d\r\n" % self.limits.retry_after_s)
        lines.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        self.transport.write(b"".join(lines) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_S, self.transport.close)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "client"
