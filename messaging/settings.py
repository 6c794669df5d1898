"""Settings every process shares: the broker, the namespace, the connection's timeouts."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Self

from pydantic import Field, FilePath, PositiveFloat, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.topology import DEFAULT_NAMESPACE, MAX_REPLICAS, NAMESPACE_PATTERN, Topology
from messaging.addresses import AddressError, BrokerAddress, parse_addresses, redacted_list

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

    # Inputs stay out of a ValidationError's text: the URL in them holds its password.
    model_config = SettingsConfigDict(
        env_prefix="SMARTGRID_", extra="ignore", hide_input_in_errors=True
    )

    amqp_url: SecretStr = Field(
        default=SecretStr(DEFAULT_AMQP_URL),
        description="amqp:// or amqps:// (TLS) URL of the broker, user and password included; a "
        "placeholder or empty password (guest, changeme, ...) is refused unless the host is "
        "loopback. Several URLs separated by commas name the nodes of one cluster: each "
        "process connects to one of them (in its own shuffled order) and to another when it "
        "loses it; all must use the same scheme, user and vhost, and the TLS settings apply to "
        "each.",
    )
    namespace: str = Field(
        default=DEFAULT_NAMESPACE,
        description="Prefix of every exchange and queue name: a letter or digit, then up to 100 "
        "letters, digits, '_', '.' or '-'.",
    )
    quorum_replicas: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REPLICAS,
        description="Replicas of each quorum queue the grid declares (x-quorum-initial-group-"
        "size), e.g. 3 on a three-node cluster; unset: the broker's default. Every process of "
        "a grid must have the same value: RabbitMQ refuses to redeclare a queue with another "
        "one (PRECONDITION_FAILED), also where the queue was declared without it.",
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
        try:
            addresses = parse_addresses(self.amqp_url.get_secret_value())
        except AddressError as exc:
            raise ValueError(f"SMARTGRID_AMQP_URL: {exc}") from None
        several = len(addresses) > 1
        tls_files = (self.amqp_ca_file, self.amqp_cert_file, self.amqp_key_file)
        if any(tls_files) and any(a.scheme == "amqp" for a in addresses):
            raise ValueError("TLS files are set but SMARTGRID_AMQP_URL is amqp://, not amqps://")
        if (self.amqp_cert_file is None) != (self.amqp_key_file is None):
            raise ValueError("SMARTGRID_AMQP_CERT_FILE and SMARTGRID_AMQP_KEY_FILE go together")
        for a in addresses:
            if not is_loopback_host(a.host) and a.password in _PLACEHOLDER_PASSWORDS:
                which = f" (in {a.redacted!r})" if several else ""
                raise ValueError(
                    f"SMARTGRID_AMQP_URL points at {a.host!r}{which} with a default or empty "
                    "password; placeholder credentials are only accepted for a loopback broker"
                )
        if several:
            # One process is one identity on one grid, whichever node it is on: the worker
            # stamps its user on heartbeats (the broker refuses any other user_id), and the
            # topology lives in one vhost. TLS settings apply to every address alike.
            for label in ("scheme", "user", "vhost"):
                if len({getattr(a, label) for a in addresses}) > 1:
                    listed = ", ".join(f"{a.node}: {getattr(a, label)!r}" for a in addresses)
                    raise ValueError(
                        f"SMARTGRID_AMQP_URL: every address must have the same {label}; "
                        f"they have {listed}"
                    )
        return self

    def amqp_addresses(self) -> tuple[BrokerAddress, ...]:
        """The broker URLs of ``amqp_url``, in the order given (one, or several)."""
        return parse_addresses(self.amqp_url.get_secret_value())

    def for_address(self, address: BrokerAddress) -> Self:
        """These settings with ``address`` as their only broker URL (itself if it already is)."""
        if self.amqp_addresses() == (address,):
            return self
        return self.model_copy(update={"amqp_url": SecretStr(address.secret_url)})

    def amqp_user(self) -> str | None:
        """The user named in ``amqp_url`` (None if it names none, e.g. TLS client-certificate
        login): what the broker checks a message's ``user_id`` property against. Every address
        of a list names the same user (validated)."""
        return self.amqp_addresses()[0].user

    def amqp_vhost(self) -> str:
        """The vhost of ``amqp_url`` ("/" if it names none); the same in every address."""
        return self.amqp_addresses()[0].vhost

    def topology(self) -> Topology:
        """The grid's names and queue arguments under this namespace."""
        return Topology(self.namespace, self.quorum_replicas)

    def redacted_url(self) -> str:
        """``amqp_url`` without passwords (several URLs: comma-separated), fit for a log."""
        return redacted_list(self.amqp_addresses())
