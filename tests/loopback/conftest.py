"""Loopback tests need no broker but open sockets on 127.0.0.1 / ::1 (a listener and its
clients in the same process). They run in ``make test-unit``; any connection to an address that
is not loopback fails at once, naming it."""

from __future__ import annotations

import pytest

from messaging.settings import is_loopback_host
from tests.helpers import refuse_connections


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_connections(
        monkeypatch,
        lambda address: is_loopback_host(str(address[0])),
        "these tests talk to 127.0.0.1 or ::1 only; one that needs more belongs in "
        "tests/integration",
    )
