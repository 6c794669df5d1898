"""The stations file of OCPP security profiles 1 and 2: which stations may connect, the hash of
each one's HTTP Basic password, and its EVSEs with their highest power (docs/ocpp.md).

The file is JSON, written by the operator::

    {"stations": [{"id": "cs-001",
                   "password_hash": "pbkdf2_sha256$600000$<salt-b64>$<hash-b64>",
                   "evses": {"1": 22.0, "2": 22.0}}]}

Passwords are stored as PBKDF2-HMAC-SHA256 hashes (hashlib, no extra dependency); the line
carries its iteration count, so a test can write a cheap one. ``python -m
substation_worker.ocpp.credentials hash`` reads a password on stdin and prints its line.
Loading and verifying are pure apart from reading the file; the listener verifies off its event
loop, as one verification costs about 0.3 s at the default count.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import json
import os
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from pydantic import model_validator as _model_validator

from contracts import ocpp as ocpp_contract
from substation_worker.ocpp.registry import MAX_EVSES_PER_STATION

SCHEME = "pbkdf2_sha256"
# OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
DEFAULT_ITERATIONS = 600_000
# One handshake must not cost the listener more than a few seconds of CPU, whatever the file says.
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 16
_MIN_SALT_BYTES = 8
_DIGEST_BYTES = 32
# OCPP 2.0.1 BasicAuthPassword: 16 to 40 characters (A00.FR.205).
MIN_PASSWORD, MAX_PASSWORD = 16, 40
# A file of a worker's stations is small; a bigger one is a mistake, not a fleet.
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_EVSE_KW = 1_000_000.0

StationId = Annotated[
    str,
    Field(
        pattern=rf"^[{ocpp_contract.STATION_ID_CHARS}]{{1,{ocpp_contract.MAX_STATION_ID}}}$",
        description="The station's OCPP identity: the last part of its URL and its Basic user.",
    ),
]


class StationsFileError(ValueError):
    """A stations file that cannot be read or is not valid; the message names the file."""


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """One parsed ``pbkdf2_sha256$<iterations>$<salt-b64>$<hash-b64>`` line."""

    iterations: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, line: str) -> PasswordHash:
        parts = line.split("$")
        if len(parts) != 4 or parts[0] != SCHEME:
            raise ValueError(f"not {SCHEME}$<iterations>$<salt-b64>$<hash-b64>")
        if not parts[1].isdigit() or not 1 <= int(parts[1]) <= MAX_ITERATIONS:
            raise ValueError(f"iterations must be a whole number in 1..{MAX_ITERATIONS}")
        try:
            salt = base64.b64decode(parts[2], validate=True)
            digest = base64.b64decode(parts[3], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"salt and hash must be base64 ({exc})") from None
        if len(salt) < _MIN_SALT_BYTES:
            raise ValueError(f"the salt must be at least {_MIN_SALT_BYTES} bytes")
        if len(digest) != _DIGEST_BYTES:
            raise ValueError(f"the hash must be {_DIGEST_BYTES} bytes (SHA-256)")
        return cls(int(parts[1]), salt, digest)

    def matches(self, password: str) -> bool:
        computed = _pbkdf2(password, self.salt, self.iterations)
        return hmac.compare_digest(computed, self.digest)


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, _DIGEST_BYTES)


def check_password_length(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(
            f"an OCPP 2.0.1 BasicAuthPassword has {MIN_PASSWORD} to {MAX_PASSWORD} characters, "
            f"this one {len(password)}"
        )


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """The stations file's line for ``password``; ValueError if OCPP would not take it."""
    check_password_length(password)
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be in 1..{MAX_ITERATIONS}")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    if len(salt) < _MIN_SALT_BYTES:
        raise ValueError(f"the salt must be at least {_MIN_SALT_BYTES} bytes")
    digest = _pbkdf2(password, salt, iterations)
    b64 = base64.b64encode
    return f"{SCHEME}${iterations}${b64(salt).decode()}${b64(digest).decode()}"


class StationEntry(BaseModel):
    """One station the worker lets in."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: StationId
    password_hash: str = Field(description=f"{SCHEME}$<iterations>$<salt-b64>$<hash-b64>")
    evse_max_kw: dict[int, float] = Field(
        alias="evses",
        min_length=1,
        description=f"EVSE id (1..{MAX_EVSES_PER_STATION}) to the highest power it delivers, kW.",
    )
    _hash: PasswordHash = PrivateAttr()

    @field_validator("password_hash")
    @classmethod
    def _hash_shape(cls, v: str) -> str:
        PasswordHash.parse(v)
        return v

    @field_validator("evse_max_kw", mode="before")
    @classmethod
    def _evse_ids(cls, v: Any) -> Any:
        # JSON keys are strings: "1" is EVSE 1, but "01" or " 1" would silently merge with it.
        if not isinstance(v, dict):
            return v
        out: dict[int, Any] = {}
        for key, kw in v.items():
            text = str(key)
            if not (text.isascii() and text.isdigit() and text == str(int(text))):
                raise ValueError(f"EVSE id {key!r} is not a whole number written plainly")
            evse = int(text)
            if not 1 <= evse <= MAX_EVSES_PER_STATION:
                raise ValueError(f"EVSE id {evse} is outside 1..{MAX_EVSES_PER_STATION}")
            if isinstance(kw, bool) or not isinstance(kw, int | float):
                raise ValueError(f"EVSE {evse}: the max kW must be a number, not {kw!r}")
            if not 0 < kw <= MAX_EVSE_KW:  # also refuses NaN
                raise ValueError(f"EVSE {evse}: the max kW must be in (0, {MAX_EVSE_KW:g}]")
            out[evse] = float(kw)
        return out

    def model_post_init(self, context: Any, /) -> None:
        self._hash = PasswordHash.parse(self.password_hash)


class StationsFile(BaseModel):
    """The stations file: ``station(id)`` finds one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stations: list[StationEntry] = Field(min_length=1)
    _by_id: dict[str, StationEntry] = PrivateAttr(default_factory=dict)

    @_model_validator(mode="after")
    def _unique_ids(self) -> StationsFile:
        seen: set[str] = set()
        for entry in self.stations:
            if entry.id in seen:
                raise ValueError(f"station {entry.id!r} is listed twice")
            seen.add(entry.id)
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._by_id = {entry.id: entry for entry in self.stations}

    def station(self, station_id: str) -> StationEntry | None:
        return self._by_id.get(station_id)

    @property
    def most_iterations(self) -> int:
        """The dearest hash's count: what an unknown station's refusal costs, so that its time
        does not tell which ids exist."""
        return max(entry._hash.iterations for entry in self.stations)


def verify_password(entry: StationEntry, password: str) -> bool:
    """Whether ``password`` is ``entry``'s, compared in constant time. A password OCPP would not
    take (not 16..40 characters) is refused without hashing. CPU-bound: call it off the loop."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        return False
    return entry._hash.matches(password)


def burn_verification(iterations: int) -> None:
    """Spend what one verification costs, for a station that does not exist."""
    _pbkdf2("x" * MIN_PASSWORD, b"\0" * SALT_BYTES, iterations)


def server_tls_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    """The listener's TLS context (security profile 2): TLS 1.2 or later, as OCPP 2.0.1
    requires; OSError or ssl.SSLError if the files cannot be loaded or do not match."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise ValueError(f"key {dup!r} appears twice in one object")
    return dict(pairs)


def load_stations_file(path: str | os.PathLike[str]) -> StationsFile:
    """Read and validate the stations file; StationsFileError naming it and the fault."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise StationsFileError(f"stations file {path}: cannot read it ({exc.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise StationsFileError(f"stations file {path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StationsFileError(f"stations file {path}: not valid JSON ({exc})") from None
    try:
        return StationsFile.model_validate(data)
    except ValidationError as exc:
        raise StationsFileError(f"stations file {path}: {_faults(exc, data)}") from None


def _faults(exc: ValidationError, data: Any) -> str:
    """Each fault at its place, stations named by id where the file gives one."""
    faults = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error["loc"])
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "stations" and isinstance(loc[1], int):
            try:
                sid = data["stations"][loc[1]]["id"]
            except (KeyError, IndexError, TypeError):
                sid = None
            rest = ".".join(str(p) for p in loc[2:])
            label = f"station #{loc[1] + 1}"
            label += f" ({sid!r})" if isinstance(sid, str) else ""
            where = f"{label}, {rest}" if rest else label
        message = str(error["msg"]).removeprefix("Value error, ")
        faults.append(f"{where}: {message}" if where else message)
    return "; ".join(faults)


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m substation_worker.ocpp.credentials",
        description="Make the password_hash of a station in the OCPP stations file.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    hashing = commands.add_parser(
        "hash",
        help="read a password (16..40 characters) on stdin, print its password_hash line",
        description="Read a station's password on stdin (not echoed on a terminal), print its "
        "password_hash line.",
    )
    hashing.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    args = parser.parse_args(argv)
    try:
        line = hash_password(_read_password(), iterations=args.iterations)
    except (ValueError, EOFError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
