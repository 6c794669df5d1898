"""The OCPP listener's settings: off by default; on a loopback address only without a stations
file; the stations file and the TLS files read and checked at start."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from messaging.runtime import settings_problems
from substation_worker.ocpp.credentials import hash_password
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


def stations_file(tmp_path: Path, hash_line: str | None = None) -> Path:
    line = hash_line or hash_password("correct-horse-42", iterations=1_000)
    path = tmp_path / "stations.json"
    path.write_text(
        json.dumps({"stations": [{"id": "cs-001", "password_hash": line, "evses": {"1": 22}}]})
    )
    return path


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_a_stations_file_lets_the_listener_face_a_network(tmp_path: Path, host: str) -> None:
    path = stations_file(tmp_path)
    settings = WorkerSettings(**BASE, ocpp_port=9000, ocpp_host=host, ocpp_stations_file=path)
    assert settings.ocpp_stations is not None
    entry = settings.ocpp_stations.station("cs-001")
    assert entry is not None
    assert entry.evse_max_kw == {1: 22.0}
    assert settings.ocpp_ssl is None


def test_the_stations_file_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTGRID_OCPP_STATIONS_FILE", str(stations_file(tmp_path)))
    settings = WorkerSettings(**BASE, ocpp_port=9000)
    assert settings.ocpp_stations is not None
    assert settings.ocpp_stations.station("cs-001") is not None


def test_no_stations_file_no_authentication() -> None:
    settings = WorkerSettings(**BASE, ocpp_port=9000)
    assert settings.ocpp_stations is None
    assert settings.ocpp_ssl is None


def test_a_bad_stations_file_is_a_settings_error(tmp_path: Path) -> None:
    path = stations_file(tmp_path, hash_line="plain-text-password")
    with pytest.raises(ValidationError) as refused:
        WorkerSettings(**BASE, ocpp_port=9000, ocpp_stations_file=path)
    problems = settings_problems(refused.value, WorkerSettings)
    assert problems == [
        f"SMARTGRID_OCPP_STATIONS_FILE: stations file {path}: station #1 ('cs-001'), "
        "password_hash: not pbkdf2_sha256$<iterations>$<salt-b64>$<hash-b64>"
    ]


def test_a_missing_stations_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read it"):
        WorkerSettings(**BASE, ocpp_port=9000, ocpp_stations_file=tmp_path / "none.json")


def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    leaf = trustme.CA().issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def test_tls_files_give_a_tls_context(tmp_path: Path) -> None:
    cert, key = tls_files(tmp_path)
    settings = WorkerSettings(
        **BASE,
        ocpp_port=9000,
        ocpp_host="0.0.0.0",
        ocpp_stations_file=stations_file(tmp_path),
        ocpp_tls_cert=cert,
        ocpp_tls_key=key,
    )
    assert settings.ocpp_ssl is not None
    assert settings.ocpp_ssl.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("given", ["ocpp_tls_cert", "ocpp_tls_key"])
def test_a_certificate_and_its_key_go_together(tmp_path: Path, given: str) -> None:
    cert, key = tls_files(tmp_path)
    files: dict[str, Any] = {given: cert if given == "ocpp_tls_cert" else key}
    with pytest.raises(ValidationError, match="go together: set both"):
        WorkerSettings(**BASE, ocpp_port=9000, **files)


def test_unloadable_tls_files_are_a_settings_error(tmp_path: Path) -> None:
    cert, _ = tls_files(tmp_path)
    with pytest.raises(ValidationError, match="cannot load them"):
        WorkerSettings(**BASE, ocpp_port=9000, ocpp_tls_cert=cert, ocpp_tls_key=cert)


def test_tls_without_a_stations_file_stays_on_loopback(tmp_path: Path) -> None:
    cert, key = tls_files(tmp_path)
    with pytest.raises(ValidationError, match="without a stations file"):
        WorkerSettings(
            **BASE, ocpp_port=9000, ocpp_host="0.0.0.0", ocpp_tls_cert=cert, ocpp_tls_key=key
        )
