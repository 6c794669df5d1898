"""Unit tests need no broker and no network (``make test-unit`` runs them against a closed
port): any TCP or UDP connection a unit test opens fails at once, naming the address. A test
that needs the network belongs in tests/integration."""

from __future__ import annotations

import socket
from typing import Any

import pytest

INET = (socket.AF_INET, socket.AF_INET6)


class NetworkInUnitTest(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def refuse(sock: socket.socket, address: Any) -> None:
        if sock.family in INET:
            raise NetworkInUnitTest(
                f"a unit test connected to {address!r}: unit tests run without a network "
                "or broker; move it to tests/integration"
            )

    def connect(sock: socket.socket, address: Any) -> None:
        refuse(sock, address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        refuse(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
