"""Loopback tests need no broker but open sockets on 127.0.0.1 / ::1 (a listener and its
clients in the same process). They run in ``make test-unit``; any connection to an address that
is not loopback fails at once, naming it."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from messaging.settings import is_loopback_host

INET = (socket.AF_INET, socket.AF_INET6)


class NetworkBeyondLoopback(AssertionError):
    pass


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def refuse(sock: socket.socket, address: Any) -> None:
        if sock.family in INET and not is_loopback_host(str(address[0])):
            raise NetworkBeyondLoopback(
                f"a loopback test connected to {address!r}: these tests talk to 127.0.0.1 or "
                "::1 only; one that needs more belongs in tests/integration"
            )

    def connect(sock: socket.socket, address: Any) -> None:
        refuse(sock, address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        refuse(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
