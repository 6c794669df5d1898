"""amqps against a real broker with a TLS listener (a private node): the broker is verified, a
wrong CA or a wrong name is refused, a client certificate is accepted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from messaging import AmqpSettings, FatalBrokerError, Session
from tests.helpers import wait_until_sync
from tests.private_broker import PrivateBroker, private_broker


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def broker(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    d = tmp_path_factory.mktemp("tls")
    server = ca.issue_cert("localhost")  # the name only: 127.0.0.1 is not in it
    paths = (d / "ca.pem", d / "server.pem", d / "server.key")
    ca.cert_pem.write_to_path(str(paths[0]))
    server.cert_chain_pems[0].write_to_path(str(paths[1]))
    server.private_key_pem.write_to_path(str(paths[2]))
    with private_broker(tls=paths) as b:

        def amqps_open() -> bool:
            socket.create_connection(("127.0.0.1", b.amqps_port), 0.5).close()
            return True

        wait_until_sync(
            amqps_open,
            f"the private broker's AMQPS port {b.amqps_port}",
            timeout=30,
            poll=0.2,
            ignore=(OSError,),
        )
        yield b


def _settings(broker: PrivateBroker, host: str, ca_file: Path, **kw: object) -> AmqpSettings:
    return AmqpSettings(
        amqp_url=f"amqps://guest:guest@{host}:{broker.amqps_port}/%2F",
        amqp_ca_file=ca_file,
        connect_timeout_s=3,
        **kw,  # type: ignore[arg-type]
    )


async def _roundtrip(settings: AmqpSettings) -> None:
    session = await Session.open(settings, "smartgrid-tests-tls")
    try:
        # A confirmed publish to the default exchange proves the channel works end to end.
        from contracts.topology import QueueSpec

        await session.declare_queue(QueueSpec("tls-probe", durable=False, exclusive=True))
        await session.publish("", "tls-probe", b"{}")
        assert await session.queue_depth("tls-probe") == 1
    finally:
        await session.close()


def _ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def test_amqps_with_the_right_ca_and_name_works(
    broker: PrivateBroker, ca: trustme.CA, tmp_path: Path
) -> None:
    asyncio.run(_roundtrip(_settings(broker, "localhost", _ca_file(ca, tmp_path))))


def test_a_client_certificate_is_presented(
    broker: PrivateBroker, ca: trustme.CA, tmp_path: Path
) -> None:
    client = ca.issue_cert("smartgrid-worker")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    settings = _settings(
        broker, "localhost", _ca_file(ca, tmp_path), amqp_cert_file=cert, amqp_key_file=key
    )
    asyncio.run(_roundtrip(settings))


def test_an_unknown_ca_is_refused(broker: PrivateBroker, tmp_path: Path) -> None:
    stranger = _ca_file(trustme.CA(), tmp_path)
    with pytest.raises(FatalBrokerError, match="self-signed certificate"):
        asyncio.run(_roundtrip(_settings(broker, "localhost", stranger)))


def test_a_certificate_for_another_name_is_refused(
    broker: PrivateBroker, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = _ca_file(ca, tmp_path)
    with pytest.raises(FatalBrokerError, match=r"not valid for .127\.0\.0\.1"):
        asyncio.run(_roundtrip(_settings(broker, "127.0.0.1", ca_file)))
    # Switched off on purpose, the same connection is accepted
    asyncio.run(_roundtrip(_settings(broker, "127.0.0.1", ca_file, amqp_tls_verify_hostname=False)))
