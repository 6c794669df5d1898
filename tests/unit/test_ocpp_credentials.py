"""The OCPP stations file and its password hashes: parsing, validation, hashing, verifying.
No I/O beyond files in tmp_path."""

from __future__ import annotations

import io
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from substation_worker.ocpp.credentials import (
    PasswordHash,
    StationsFileError,
    hash_password,
    load_stations_file,
    main,
    server_tls_context,
    verify_password,
)
from substation_worker.ocpp.listener import basic_credentials, passwords_in_clear

PASSWORD = "correct-horse-42"  # 16 characters, OCPP's shortest
CHEAP = 1_000  # iterations: fast tests, the same code path as the default


def line(password: str = PASSWORD) -> str:
    return hash_password(password, iterations=CHEAP)


def station(sid: str = "cs-001", **changes: Any) -> dict[str, Any]:
    return {"id": sid, "password_hash": line(), "evses": {"1": 22.0, "2": 11}, **changes}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "stations.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_hash_line_verifies_its_password_only() -> None:
    text = line()
    scheme, iterations, _, _ = text.split("$")
    assert (scheme, iterations) == ("pbkdf2_sha256", str(CHEAP))
    parsed = PasswordHash.parse(text)
    assert parsed.matches(PASSWORD)
    assert not parsed.matches(PASSWORD + "x")
    assert not parsed.matches(PASSWORD.upper())
    assert line() != text  # a fresh salt each time


def test_the_hash_is_pbkdf2_hmac_sha256() -> None:
    # RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1), its first 32 bytes.
    digest = bytes.fromhex("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc")
    assert PasswordHash(1, b"salt", digest).matches("passwd")
    assert not PasswordHash(2, b"salt", digest).matches("passwd")


@pytest.mark.parametrize("length", [16, 40])
def test_ocpp_password_lengths_are_hashed(length: int) -> None:
    assert PasswordHash.parse(line("p" * length)).matches("p" * length)


@pytest.mark.parametrize("length", [0, 15, 41])
def test_other_lengths_are_refused(length: int) -> None:
    with pytest.raises(ValueError, match="16 to 40 characters"):
        hash_password("p" * length, iterations=CHEAP)


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("md5$1000$c2FsdHNhbHQ=$" + "A" * 44, "not pbkdf2_sha256"),
        ("pbkdf2_sha256$1000$c2FsdHNhbHQ=", "not pbkdf2_sha256"),
        ("pbkdf2_sha256$0$c2FsdHNhbHQ=$" + "A" * 43 + "=", "iterations"),
        ("pbkdf2_sha256$-5$c2FsdHNhbHQ=$" + "A" * 43 + "=", "iterations"),
        ("pbkdf2_sha256$99999999$c2FsdHNhbHQ=$" + "A" * 43 + "=", "iterations"),
        ("pbkdf2_sha256$1000$not base64!$" + "A" * 43 + "=", "base64"),
        ("pbkdf2_sha256$1000$c2FsdA==$" + "A" * 43 + "=", "salt must be at least 8"),
        ("pbkdf2_sha256$1000$c2FsdHNhbHQ=$AAAA", "32 bytes"),
    ],
)
def test_malformed_hash_lines(text: str, fault: str) -> None:
    with pytest.raises(ValueError, match=fault):
        PasswordHash.parse(text)


def test_a_valid_file(tmp_path: Path) -> None:
    stations = load_stations_file(write(tmp_path, {"stations": [station(), station("B.2_~")]}))
    entry = stations.station("cs-001")
    assert entry is not None
    assert entry.evse_max_kw == {1: 22.0, 2: 11.0}
    assert stations.station("B.2_~") is not None
    assert stations.station("cs-002") is None
    assert stations.station("CS-001") is None  # ids are case-sensitive, as in the URL
    assert verify_password(entry, PASSWORD)
    assert not verify_password(entry, "wrong-password-00")
    assert stations.most_iterations == CHEAP


def test_a_password_ocpp_would_not_take_never_verifies(tmp_path: Path) -> None:
    entry = load_stations_file(write(tmp_path, {"stations": [station()]})).station("cs-001")
    assert entry is not None
    assert not verify_password(entry, "")
    assert not verify_password(entry, PASSWORD + "x" * 30)


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        ({"stations": []}, "stations: List should have at least 1 item"),
        ({"stations": [station("cs 1")]}, r"station #1 \('cs 1'\), id: String should match"),
        ({"stations": [station("x" * 49)]}, "id: String should match"),
        ({"stations": [station("é")]}, "id: String should match"),
        ({"stations": [station(), station()]}, "station 'cs-001' is listed twice"),
        ({"stations": [station(evses={})]}, "evses: Dictionary should have at least 1 item"),
        ({"stations": [station(evses={"0": 1})]}, "EVSE id 0 is outside 1..64"),
        ({"stations": [station(evses={"65": 1})]}, "EVSE id 65 is outside 1..64"),
        ({"stations": [station(evses={"01": 1})]}, "'01' is not a whole number"),
        ({"stations": [station(evses={"one": 1})]}, "'one' is not a whole number"),
        ({"stations": [station(evses={"1": 0})]}, r"EVSE 1: the max kW must be in \(0"),
        ({"stations": [station(evses={"1": -22})]}, r"EVSE 1: the max kW must be in \(0"),
        ({"stations": [station(evses={"1": "22"})]}, "must be a number"),
        ({"stations": [station(evses={"1": True})]}, "must be a number"),
        ({"stations": [station(password_hash="plain")]}, "password_hash: not pbkdf2_sha256"),
        ({"stations": [station(pasword="typo")]}, "pasword: Extra inputs are not permitted"),
        ({"stations": [{"id": "cs-001"}]}, "password_hash: Field required"),
        ({"station": []}, "stations: Field required"),
        ('{"stations": [], "stations": []}', "key 'stations' appears twice"),
        ('{"stations": [{"id": "a", "id": "b"}]}', "key 'id' appears twice"),
        ('{"stations": [', "not valid JSON"),
        ("[1]", "Input should be a valid dictionary"),
    ],
)
def test_a_bad_file_names_itself_and_the_fault(tmp_path: Path, data: Any, fault: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(StationsFileError, match=fault) as refused:
        load_stations_file(path)
    assert str(refused.value).startswith(f"stations file {path}: ")


def test_an_infinite_kw_is_refused(tmp_path: Path) -> None:
    text = json.dumps({"stations": [station(evses={"1": 1})]}).replace('"1": 1', '"1": Infinity')
    with pytest.raises(StationsFileError, match="max kW must be in"):
        load_stations_file(write(tmp_path, text))


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StationsFileError, match="cannot read it"):
        load_stations_file(tmp_path / "nowhere.json")


def test_the_hash_command_reads_stdin_and_prints_a_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["hash", "--iterations", str(CHEAP)]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    assert out.count("\n") == 1
    assert PasswordHash.parse(out.strip()).matches(PASSWORD)


def test_the_hash_command_refuses_a_short_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["hash", "--iterations", str(CHEAP)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "16 to 40 characters" in captured.err


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (["Basic Y3MtMDAxOnBhc3M6d29yZA=="], ("cs-001", "pass:word")),  # ':' in the password
        (["basic Y3MtMDAxOnBhc3M6d29yZA=="], ("cs-001", "pass:word")),
        ([], None),
        (["Basic Y3MtMDAxOnBhc3M6d29yZA==", "Basic Y3MtMDAxOnBhc3M6d29yZA=="], None),
        (["Bearer Y3MtMDAxOnBhc3M6d29yZA=="], None),
        (["Basic not-base64"], None),
        (["Basic Y3MtMDAx"], None),  # no ':'
        (["Basic //79"], None),  # not UTF-8
    ],
)
def test_basic_credentials(headers: list[str], expected: tuple[str, str] | None) -> None:
    assert basic_credentials(headers) == expected


def test_only_profile_1_off_loopback_sends_passwords_in_clear(tmp_path: Path) -> None:
    stations = load_stations_file(write(tmp_path, {"stations": [station()]}))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert passwords_in_clear("0.0.0.0", stations, None)
    assert passwords_in_clear("192.168.1.10", stations, None)
    assert not passwords_in_clear("0.0.0.0", stations, ctx)
    assert not passwords_in_clear("127.0.0.1", stations, None)
    assert not passwords_in_clear("127.0.0.1", None, None)


def test_the_tls_context_takes_tls_1_2_or_later(tmp_path: Path) -> None:
    leaf = trustme.CA().issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ctx = server_tls_context(cert, key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(key))
    with pytest.raises(ssl.SSLError):
        server_tls_context(cert, key)  # a key that is not the certificate's
