"""Settings of the loadgen CLI: the shared AMQP ones plus where the gateway listens."""

from __future__ import annotations

from pydantic import Field, SecretStr

from messaging.settings import AmqpSettings

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8000"


class LoadgenSettings(AmqpSettings):
    gateway_url: str = Field(
        default=DEFAULT_GATEWAY_URL, description="Base URL of the gateway's HTTP API."
    )
    # From the environment only: a key on the command line shows in `ps`.
    api_key: SecretStr | None = Field(
        default=None,
        description="Sent as X-API-Key to a gateway that asks for one. Environment only: a key "
        "on the command line would show in ps.",
    )
