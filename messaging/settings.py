"""Settings every process shares: the broker, the namespace, the connection's timeouts."""

from __future__ import annotations

import ipaddress
from typing import Annotated
from urllib.parse import unquote, urlparse

from pydantic import Field, FilePath, PositiveFloat, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.topology import DEFAULT_NAMESPACE, NAMESPACE_PATTERN

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/%2F"
# Credentials that are fine on a developer's loopback broker and nowhere else.
_PLACEHOLDER_PASSWORDS = {"guest", "changeme", "password", "secret", ""}

# The Prometheus endpoint of a process that serves one (the dispatcher, a worker): the same
# setting in each, only the default port differs.
MetricsHost = Annotated[
    str, Field(description="Address the Prometheus /metrics endpoint listens on.")
]
MetricsPort = Annotated[int, Field(ge=0, le=65535, description="Port of /metrics; 0 disables it.")]
# The largest charge request taken, bytes: the gateway's body and the dispatcher's message are
# the same JSON, so both limits have the same bounds and default.
RequestBytes = Annotated[int, Field(ge=256, le=10_000_000)]
MAX_REQUEST_BYTES = 16_384


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AmqpSettings(BaseSettings):
    """``SMARTGRID_*`` environment variables common to every smartgrid process."""

    model_config = SettingsConfigDict(env_prefix="SMARTGRID_", extra="ignore")

    amqp_url: SecretStr = Field(
        default=SecretStr(DEFAULT_AMQP_URL),
        description="amqp:// or amqps:// (TLS) URL of the broker, user and password included; a "
        "placeholder or empty password (guest, changeme, ...) is refused unless the host is "
        "loopback.",
    )
    namespace: str = Field(
        default=DEFAULT_NAMESPACE,
        description="Prefix of every exchange and queue name: a letter or digit, then up to 100 "
        "letters, digits, '_', '.' or '-'.",
    )
    amqp_heartbeat_s: int = Field(
        default=30,
        ge=0,
        le=600,
        description="AMQP heartbeat timeout asked of the broker (it wins the negotiation), s; 0 "
        "disables heartbeats.",
    )
    blocked_connection_timeout_s: PositiveFloat = Field(
        default=30.0,
        description="Give up a connection the broker blocks (memory/disk alarm) this long, s.",
    )
    connect_timeout_s: PositiveFloat = Field(
        default=5.0, description="Give up one connection attempt after this long, s."
    )
    reconnect_max_s: PositiveFloat = Field(
        default=15.0,
        description="Longest wait between reconnect attempts (the cap of the jittered exponential "
        "backoff), s.",
    )
    log_level: str = Field(default="INFO", description="Log level: DEBUG, INFO, WARNING or ERROR.")
    amqp_ca_file: FilePath | None = Field(
        default=None,
        description="amqps: CA bundle (PEM) to verify the broker with; the system's if unset.",
    )
    amqp_cert_file: FilePath | None = Field(
        default=None,
        description="amqps: client certificate (PEM), for brokers that ask for one; set together "
        "with SMARTGRID_AMQP_KEY_FILE.",
    )
    amqp_key_file: FilePath | None = Field(
        default=None,
        description="amqps: the client certificate's private key (PEM); set together with "
        "SMARTGRID_AMQP_CERT_FILE.",
    )
    amqp_tls_verify_hostname: bool = Field(
        default=True,
        description="amqps: check that the broker's certificate names the URL's host.",
    )

    @field_validator("namespace")
    @classmethod
    def _namespace_shape(cls, v: str) -> str:
        if not NAMESPACE_PATTERN.match(v):
            raise ValueError(f"must match {NAMESPACE_PATTERN.pattern}")
        return v

    @model_validator(mode="after")
    def _no_placeholder_secrets_off_loopback(self) -> AmqpSettings:
        url = urlparse(self.amqp_url.get_secret_value())
        if url.scheme not in {"amqp", "amqps"}:
            raise ValueError("SMARTGRID_AMQP_URL must start with amqp:// or amqps://")
        tls_files = (self.amqp_ca_file, self.amqp_cert_file, self.amqp_key_file)
        if url.scheme == "amqp" and any(tls_files):
            raise ValueError("TLS files are set but SMARTGRID_AMQP_URL is amqp://, not amqps://")
        if (self.amqp_cert_file is None) != (self.amqp_key_file is None):
            raise ValueError("SMARTGRID_AMQP_CERT_FILE and SMARTGRID_AMQP_KEY_FILE go together")
        password = unquote(url.password or "")
        if not is_loopback_host(url.hostname) and password in _PLACEHOLDER_PASSWORDS:
            raise ValueError(
                f"SMARTGRID_AMQP_URL points at {url.hostname!r} with a default or empty password;"
                " placeholder credentials are only accepted for a loopback broker"
            )
        return self

    def amqp_user(self) -> str | None:
        """The user named in ``amqp_url`` (None if it names none, e.g. TLS client-certificate
        login): what the broker checks a message's ``user_id`` property against."""
        url = urlparse(self.amqp_url.get_secret_value())
        if url.username is None or "auth_mechanism=external" in url.query.lower():
            return None
        return unquote(url.username)

    def redacted_url(self) -> str:
        url = urlparse(self.amqp_url.get_secret_value())
        netloc = url.hostname or ""
        if url.port:
            netloc += f":{url.port}"
        if url.username:
            netloc = f"{unquote(url.username)}:***@{netloc}"
        return url._replace(netloc=netloc).geturl()
