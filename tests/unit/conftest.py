"""Unit tests need no broker and no network (``make test-unit`` runs them against a closed
port): any TCP or UDP connection a unit test opens fails at once, naming the address. A test
that needs the network belongs in tests/integration."""

from __future__ import annotations

import pytest

from tests.helpers import refuse_connections


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_connections(
        monkeypatch,
        lambda address: False,
        "unit tests run without a network or broker; move it to tests/integration",
    )
