"""Gateway settings: the shared AMQP ones plus HTTP, body limit and confirm timing."""

from __future__ import annotations

from pydantic import Field

from messaging.settings import AmqpSettings


class GatewaySettings(AmqpSettings):
    """``SMARTGRID_*`` environment variables of the gateway (CLI options override them)."""

    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(default=8000, ge=1, le=65535, description="Port of the HTTP API.")
    max_body_bytes: int = Field(
        default=16_384,
        ge=256,
        le=10_000_000,
        description="Largest request body accepted; larger ones get 413 without being read.",
    )
    confirm_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="How long a request waits for the broker's confirm before it gets 503.",
    )
    retry_after_s: int = Field(
        default=1, ge=1, le=3600, description="Retry-After (seconds) sent with every 503."
    )
