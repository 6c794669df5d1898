"""TLS settings: verification on by default, inconsistent settings refused (no broker)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError

from messaging import AmqpSettings
from messaging.tls import ssl_context, ssl_options


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def test_amqps_verifies_the_broker_and_its_name(ca_file: Path) -> None:
    settings = AmqpSettings(
        amqp_url="amqps://app:s3cret-pass@broker.example:5671/%2F", amqp_ca_file=ca_file
    )
    options = ssl_options(settings)
    assert options is not None
    assert options.server_hostname == "broker.example"
    ctx = options.context
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert len(ctx.get_ca_certs()) == 1  # exactly the CA given, not the system's


def test_hostname_check_can_be_switched_off_but_not_verification(ca_file: Path) -> None:
    settings = AmqpSettings(
        amqp_url="amqps://localhost/%2F", amqp_ca_file=ca_file, amqp_tls_verify_hostname=False
    )
    ctx = ssl_context(settings)
    assert ctx.check_hostname is False
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_plain_amqp_has_no_tls() -> None:
    assert ssl_options(AmqpSettings()) is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"amqp_url": "amqp://localhost/%2F", "amqp_ca_file": "CA"}, "is amqp://"),
        ({"amqp_url": "amqps://localhost/%2F", "amqp_cert_file": "CA"}, "go together"),
        ({"amqp_url": "amqps://localhost/%2F", "amqp_ca_file": "/nonexistent.pem"}, "path"),
        ({"amqp_url": "http://localhost/"}, "amqp:// or amqps://"),
        ({"amqp_url": "amqps://guest:guest@broker.example/%2F"}, "placeholder credentials"),
    ],
)
def test_inconsistent_settings_are_refused(
    ca_file: Path, overrides: dict[str, str], message: str
) -> None:
    values = {k: (str(ca_file) if v == "CA" else v) for k, v in overrides.items()}
    with pytest.raises(ValidationError, match=message):
        AmqpSettings(**values)  # type: ignore[arg-type]
