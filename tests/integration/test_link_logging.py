"""Newcomer point 2: a process that cannot reach the broker logs one WARNING per connection
attempt, saying what to check, and none of pika's ERROR lines (a closed loopback port, no
broker needed; integration all the same, for it opens real connections)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest

from messaging import AmqpSettings, BrokerLink, Session
from messaging.runtime import PIKA_CONNECT_LOGGERS, configure_logging
from tests.helpers import wait_until

ATTEMPTS = 3


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pika_levels() -> Iterator[None]:
    """Put the pika loggers' levels back as they were after the test."""
    names = ("pika", *PIKA_CONNECT_LOGGERS)
    saved = {n: logging.getLogger(n).level for n in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


async def test_a_closed_port_is_one_warning_per_attempt_and_no_pika_errors(
    caplog: pytest.LogCaptureFixture, pika_levels: None
) -> None:
    port = closed_port()
    configure_logging("INFO")
    settings = AmqpSettings(
        amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/%2F", reconnect_max_s=0.2
    )

    async def setup(_session: Session) -> None:
        raise AssertionError("no connection can be made")

    link = BrokerLink(settings, "smartgrid-tests-closed-port", setup)
    stop = asyncio.Event()
    caplog.set_level(logging.DEBUG, logger="messaging.link")
    task = asyncio.create_task(link.run(stop))

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "messaging.link"]

    await wait_until(lambda: len(warnings()) >= ATTEMPTS, f"{ATTEMPTS} warnings", timeout=10)
    stop.set()
    await asyncio.wait_for(task, 10)
    seen = warnings()
    assert len(seen) >= ATTEMPTS
    url = f"amqp://guest:***@127.0.0.1:{port}/%2F"
    for n, record in enumerate(seen, start=1):
        assert record.levelno == logging.WARNING
        message = record.getMessage()
        assert f"attempt {n}: Connection refused" in message
        assert f"is RabbitMQ running at {url}?" in message
        assert "guest:guest" not in message
    pika = [r for r in caplog.records if r.name.startswith("pika")]
    assert pika == [], [r.getMessage() for r in pika[:3]]
