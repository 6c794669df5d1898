"""OCPP security profiles 1 (HTTP Basic) and 2 (Basic over TLS) on a loopback listener with a
stations file; the station is the ``ocpp`` package's own ocpp.v201.ChargePoint."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from ocpp.v201 import ChargePoint
from ocpp.v201.enums import RegistrationStatusEnumType
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from substation_worker.metrics import OCPP_REFUSALS, OcppMetrics
from substation_worker.ocpp import listener as listener_module
from substation_worker.ocpp.credentials import (
    StationEntry,
    StationsFile,
    hash_password,
    load_stations_file,
    verify_password,
)
from substation_worker.ocpp.listener import OcppListener
from substation_worker.ocpp.registry import StationRegistry
from substation_worker.service import WorkerService
from substation_worker.settings import WorkerSettings
from tests.fakes import FakeBroker
from tests.loopback.ocpp_client import boot, charge_point
from tests.loopback.ocpp_client import station_url as url

pytestmark = pytest.mark.timeout(30)
SID = "s1"
PASSWORD = "correct-horse-42"
OTHER_PASSWORD = "a-much-longer-password-of-32-chr"
REFUSED = "smartgrid_substation_ocpp_handshakes_refused_total"


def write_stations(tmp_path: Path) -> Path:
    # A low iteration count keeps the tests fast; the line carries it, the code is the same.
    stations = [
        {
            "id": "cs-001",
            "password_hash": hash_password(PASSWORD, iterations=1_000),
            "evses": {"1": 22.0, "2": 22.0},
        },
        {
            "id": "cs-002",
            "password_hash": hash_password(OTHER_PASSWORD, iterations=1_000),
            "evses": {"1": 11.0},
        },
    ]
    path = tmp_path / "stations.json"
    path.write_text(json.dumps({"stations": stations}))
    return path


@pytest.fixture
def stations(tmp_path: Path) -> StationsFile:
    return load_stations_file(write_stations(tmp_path))


@pytest.fixture
def metrics_registry() -> CollectorRegistry:
    return CollectorRegistry()


@asynccontextmanager
async def running(
    stations: StationsFile, metrics: CollectorRegistry, tls: ssl.SSLContext | None = None
) -> AsyncIterator[OcppListener]:
    lis = OcppListener(
        "127.0.0.1",
        0,
        StationRegistry(),
        OcppMetrics(metrics, SID),
        stations=stations,
        ssl=tls,
    )
    await lis.start()
    try:
        yield lis
    finally:
        await lis.stop()


@pytest.fixture
async def listener(
    stations: StationsFile, metrics_registry: CollectorRegistry
) -> AsyncIterator[OcppListener]:
    async with running(stations, metrics_registry) as lis:
        yield lis


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def station(
    lis: OcppListener, station_id: str, headers: dict[str, str], **kwargs: Any
) -> AbstractAsyncContextManager[ChargePoint]:
    return charge_point(url(lis, station_id), station_id, additional_headers=headers, **kwargs)


def refused(reg: CollectorRegistry, reason: str) -> float:
    return reg.get_sample_value(REFUSED, {"substation": SID, "reason": reason}) or 0.0


async def test_the_right_password_boots(
    listener: OcppListener, metrics_registry: CollectorRegistry
) -> None:
    async with station(listener, "cs-001", basic("cs-001", PASSWORD)) as cp:
        assert (await boot(cp)).status == RegistrationStatusEnumType.accepted
        assert listener.registry.connected_count == 1
    async with station(listener, "cs-002", basic("cs-002", OTHER_PASSWORD)) as cp:
        assert (await boot(cp)).status == RegistrationStatusEnumType.accepted
    assert all(refused(metrics_registry, r) == 0 for r in OCPP_REFUSALS)


@pytest.mark.parametrize(
    ("path_id", "headers", "reason"),
    [
        ("cs-001", basic("cs-001", "wrong-password-000"), "bad_password"),
        ("cs-001", basic("cs-001", OTHER_PASSWORD), "bad_password"),  # another station's
        ("cs-001", basic("cs-001", "short"), "bad_password"),
        ("cs-001", basic("cs-001", PASSWORD + "x"), "bad_password"),
        ("cs-009", basic("cs-009", PASSWORD), "unknown_station"),
        ("cs-009", basic("cs-009", "short"), "unknown_station"),
        ("cs-001", {}, "no_credentials"),
        ("cs-001", {"Authorization": "Basic !!!"}, "no_credentials"),
        ("cs-001", {"Authorization": "Bearer abc"}, "no_credentials"),
        ("cs-001", basic("cs-002", OTHER_PASSWORD), "user_mismatch"),  # cs-002 poses as cs-001
    ],
)
async def test_bad_credentials_get_401_before_any_frame(
    listener: OcppListener,
    metrics_registry: CollectorRegistry,
    path_id: str,
    headers: dict[str, str],
    reason: str,
) -> None:
    with pytest.raises(InvalidStatus) as refusal:
        async with station(listener, path_id, headers):
            pass
    response = refusal.value.response
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="smartgrid"'
    assert response.body == b"authentication failed\n"  # the same whatever the reason
    assert refused(metrics_registry, reason) == 1
    assert sum(refused(metrics_registry, r) for r in OCPP_REFUSALS) == 1
    assert listener.registry.connected_count == 0


async def test_passwords_are_verified_off_the_event_loop(
    listener: OcppListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []

    def recording(entry: StationEntry, password: str) -> bool:
        threads.append(threading.current_thread().name)
        return verify_password(entry, password)

    monkeypatch.setattr(listener_module, "verify_password", recording)
    async with station(listener, "cs-001", basic("cs-001", PASSWORD)) as cp:
        assert (await boot(cp)).status == RegistrationStatusEnumType.accepted
    assert len(threads) == 1
    assert threads[0].startswith("ocpp-auth")
    assert threads[0] != threading.main_thread().name


async def test_the_handshake_checks_come_before_the_password(
    listener: OcppListener, metrics_registry: CollectorRegistry
) -> None:
    good = basic("cs-001", PASSWORD)
    with pytest.raises(InvalidStatus) as refusal:
        async with connect(f"ws://127.0.0.1:{listener.port}/x", additional_headers=good):
            pass
    assert refusal.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as refusal:
        async with connect(url(listener, "cs-001"), additional_headers=good):  # no subprotocol
            pass
    assert refusal.value.response.status_code == 400
    assert refused(metrics_registry, "bad_path") == 1
    assert refused(metrics_registry, "no_subprotocol") == 1


def tls_pair(tmp_path: Path) -> tuple[Path, Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 from a CA made here, its key, and a client that trusts it."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return cert, key, client


async def test_profile_2_is_basic_over_tls(
    tmp_path: Path, metrics_registry: CollectorRegistry
) -> None:
    cert, key, client = tls_pair(tmp_path)
    settings = WorkerSettings(
        substation_id=SID,
        capacity_kw=100,
        bays=2,
        ocpp_port=1,
        ocpp_stations_file=write_stations(tmp_path),
        ocpp_tls_cert=cert,
        ocpp_tls_key=key,
    )
    assert settings.ocpp_stations is not None
    async with running(settings.ocpp_stations, metrics_registry, settings.ocpp_ssl) as lis:
        assert url(lis, "cs-001").startswith("wss://")
        async with station(lis, "cs-001", basic("cs-001", PASSWORD), ssl=client) as cp:
            assert (await boot(cp)).status == RegistrationStatusEnumType.accepted
            assert cp._connection.transport.get_extra_info("ssl_object").version() in {
                "TLSv1.2",
                "TLSv1.3",
            }
        with pytest.raises(InvalidStatus) as refusal:
            async with station(lis, "cs-001", basic("cs-001", OTHER_PASSWORD), ssl=client):
                pass
        assert refusal.value.response.status_code == 401
        assert refused(metrics_registry, "bad_password") == 1
        # A client that does not trust the certificate gets no further than TLS.
        with pytest.raises(ssl.SSLCertVerificationError):
            async with station(lis, "cs-001", basic("cs-001", PASSWORD), ssl=True):
                pass
        assert lis.registry.connected_count == 0


async def test_the_worker_passes_its_stations_file_and_tls_to_the_listener(
    tmp_path: Path,
) -> None:
    cert, key, _ = tls_pair(tmp_path)
    settings = WorkerSettings(
        substation_id=SID,
        capacity_kw=100,
        bays=2,
        ocpp_port=9000,
        metrics_port=0,
        ocpp_stations_file=write_stations(tmp_path),
        ocpp_tls_cert=cert,
        ocpp_tls_key=key,
    )
    service = WorkerService(settings, CollectorRegistry(), connect=FakeBroker().connect)
    assert service.ocpp is not None
    assert service.ocpp.stations is settings.ocpp_stations
    assert service.ocpp.ssl is settings.ocpp_ssl
    assert service.ocpp.scheme == "wss"
