"""Broker addresses: the comma-separated URLs of ``SMARTGRID_AMQP_URL`` and the order to try them.

Pure: parsing and ordering do no I/O, so both are unit-tested without a broker. A URL's
password never leaves a ``BrokerAddress`` except through ``secret_url`` (which pika needs):
its repr, ``redacted`` and ``node`` leave it out.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


class AddressError(ValueError):
    """A broker URL that cannot be used; the message names it without its password."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """One broker URL: where it points and who it logs in as."""

    secret_url: str = field(repr=False)  # holds the password
    scheme: str
    host: str  # "" when the URL names none
    port: int
    user: str | None  # None when the URL names no user or logs in by TLS certificate
    password: str = field(repr=False)
    vhost: str
    redacted: str  # the URL with its password replaced by ***

    @property
    def node(self) -> str:
        """``host:port`` (``[v6]:port``): how logs, health and metrics name the node."""
        host = self.host or "localhost"  # pika's default when the URL names no host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"BrokerAddress({self.redacted!r})"


def _redact(text: str) -> str:
    """The URL with ``***`` for its password, as logged since smartgrid had one URL."""
    url = urlsplit(text)
    netloc = url.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    try:
        port = url.port
    except ValueError:
        port = None
    if port:
        netloc += f":{port}"
    if url.username:
        netloc = f"{unquote(url.username)}:***@{netloc}"
    return url._replace(netloc=netloc).geturl()


def parse_address(text: str) -> BrokerAddress:
    """One URL; AddressError (naming it, redacted) if it is not amqp:// or amqps://."""
    url = urlsplit(text)
    redacted = _redact(text)
    if url.scheme not in DEFAULT_PORTS:
        raise AddressError(f"{redacted!r} must start with amqp:// or amqps://")
    try:
        port = url.port or DEFAULT_PORTS[url.scheme]
    except ValueError as exc:
        raise AddressError(f"{redacted!r} has no valid port") from exc
    if url.username is None or "auth_mechanism=external" in url.query.lower():
        user = None
    else:
        user = unquote(url.username)
    path = url.path
    return BrokerAddress(
        secret_url=text,
        scheme=url.scheme,
        host=url.hostname or "",
        port=port,
        user=user,
        password=unquote(url.password or ""),
        vhost=unquote(path[1:]) if len(path) > 1 else "/",
        redacted=redacted,
    )


def parse_addresses(text: str) -> tuple[BrokerAddress, ...]:
    """Every URL of a comma-separated list (spaces around each ignored), in the order given.

    One URL is one address, exactly as before lists existed. An empty entry (``a,,b``, a
    trailing comma) is refused: it is a typo more often than a wish.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        return (parse_address(parts[0]),)
    found: list[BrokerAddress] = []
    for n, part in enumerate(parts, start=1):
        if not part:
            raise AddressError(f"address {n} of {len(parts)} is empty")
        try:
            found.append(parse_address(part))
        except AddressError as exc:
            raise AddressError(f"address {n} of {len(parts)}: {exc}") from None
    return tuple(found)


def redacted_list(addresses: Sequence[BrokerAddress]) -> str:
    return ",".join(a.redacted for a in addresses)


def process_rng() -> random.Random:
    """A generator seeded from the OS, so that processes started together differ."""
    return random.Random(os.urandom(16))


class NodeOrder:
    """The order in which one process tries the broker addresses.

    The addresses are shuffled once per process (so clients spread over the nodes). A round
    tries each address once, from a start position; after a connection to one address is lost,
    the next round starts at the address after it, so the process moves to another node. A
    round that connected nowhere leaves the start where it was: the caller backs off and tries
    the same full round again.
    """

    def __init__(self, count: int, rng: random.Random | None = None) -> None:
        if count < 1:
            raise ValueError("at least one address")
        self._order = list(range(count))
        (rng or process_rng()).shuffle(self._order)
        self._start = 0

    @property
    def order(self) -> list[int]:
        """The shuffled indexes, from position 0."""
        return list(self._order)

    def round(self) -> list[int]:
        """Indexes of the addresses to try next, each once, in order."""
        return self._order[self._start :] + self._order[: self._start]

    def lost(self, index: int) -> None:
        """The connection to address ``index`` was lost: the next round starts after it."""
        self._start = (self._order.index(index) + 1) % len(self._order)
