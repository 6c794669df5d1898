"""The OCPP listener's settings: off by default, and on a loopback address only."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from substation_worker.settings import WorkerSettings

BASE: dict[str, Any] = {"substation_id": "s1", "capacity_kw": 100, "bays": 2}


def test_off_by_default() -> None:
    settings = WorkerSettings(**BASE)
    assert settings.ocpp_port == 0
    assert settings.ocpp_host == "127.0.0.1"


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTGRID_OCPP_PORT", "9000")
    monkeypatch.setenv("SMARTGRID_OCPP_HOST", "::1")
    settings = WorkerSettings(**BASE)
    assert (settings.ocpp_port, settings.ocpp_host) == (9000, "::1")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_listener_accepted(host: str) -> None:
    assert WorkerSettings(**BASE, ocpp_port=9000, ocpp_host=host).ocpp_host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "stations.example"])
def test_listener_off_loopback_refused(host: str) -> None:
    with pytest.raises(ValidationError, match="loopback address only"):
        WorkerSettings(**BASE, ocpp_port=9000, ocpp_host=host)


def test_any_host_while_off() -> None:
    assert WorkerSettings(**BASE, ocpp_host="0.0.0.0").ocpp_port == 0


@pytest.mark.parametrize("port", [-1, 65536])
def test_port_bounds(port: int) -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(**BASE, ocpp_port=port)
