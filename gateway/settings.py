"""Gateway settings: the shared AMQP ones plus HTTP, its limits and confirm timing."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, model_validator

from messaging.settings import MAX_REQUEST_BYTES, AmqpSettings, RequestBytes, is_loopback_host

# How long a connection may take to send its request head, or its body: the same deadline
# against slow senders, with the same bounds and default.
SlowSenderTimeout = Annotated[float, Field(gt=0, le=300)]
SLOW_SENDER_TIMEOUT_S = 10.0


class GatewaySettings(AmqpSettings):
    """``SMARTGRID_*`` environment variables of the gateway (CLI options override them)."""

    http_host: str = Field(
        default="127.0.0.1",
        description="Address the HTTP API listens on; off loopback it needs SMARTGRID_API_KEY "
        "(or SMARTGRID_ALLOW_NO_API_KEY).",
    )
    http_port: int = Field(default=8000, ge=1, le=65535, description="Port of the HTTP API.")
    max_body_bytes: RequestBytes = Field(
        default=MAX_REQUEST_BYTES,
        description="Largest request body accepted, bytes; a larger one gets 413 without being "
        "read.",
    )
    max_header_bytes: int = Field(
        default=16_384,
        ge=1024,
        le=1_048_576,
        description="Largest request head (request line and headers), bytes; a larger one gets 431 "
        "and its connection is closed.",
    )
    max_idempotency_key_chars: int = Field(
        default=255,
        ge=36,
        le=8192,
        description="Longest Idempotency-Key accepted (a UUID is 36); a longer one gets 400.",
    )
    header_timeout_s: SlowSenderTimeout = Field(
        default=SLOW_SENDER_TIMEOUT_S,
        description="A request head must arrive within this many seconds of the connection "
        "opening (of its first byte, on a kept-alive connection); else 408 and the connection "
        "is closed.",
    )
    body_timeout_s: SlowSenderTimeout = Field(
        default=SLOW_SENDER_TIMEOUT_S,
        description="A request body must arrive within this many seconds (all of it); else "
        "408, nothing is published, and the connection is closed.",
    )
    keep_alive_timeout_s: int = Field(
        default=5,
        ge=1,
        le=300,
        description="An idle kept-alive connection is closed after this many seconds.",
    )
    max_connections: int = Field(
        default=2048,
        ge=1,
        le=1_000_000,
        description="Open HTTP connections at most; one more gets 503 (with Retry-After) and is "
        "closed. The soft open-file limit is raised to fit, up to the hard limit.",
    )
    confirm_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="How long a request waits for the broker's confirm before it gets 503, s.",
    )
    retry_after_s: int = Field(
        default=1, ge=1, le=3600, description="Retry-After (seconds) sent with every 503."
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="If set (16 characters at least), POST /v1/charge-requests needs it in the "
        "X-API-Key header or as Authorization: Bearer, else 401. Required when listening off "
        "loopback.",
    )
    allow_no_api_key: bool = Field(
        default=False,
        description="Accept requests without an API key on a non-loopback address "
        "(behind a proxy that authenticates).",
    )
    rate_limit_per_s: float = Field(
        default=0.0,
        ge=0,
        description="Accepted requests per second at most, over all clients (429 beyond); 0: no "
        "limit.",
    )
    rate_limit_burst: int = Field(
        default=1000,
        ge=1,
        description="Requests admitted at once beyond the rate (the token bucket's size).",
    )
    accepted_events: bool = Field(
        default=False,
        description="Also publish an `accepted` event to <ns>.events for each request. The 202 "
        "already tells the client; the event costs about a quarter of the gateway's CPU per "
        "request (make bench), so it is off unless something follows it.",
    )
    idempotency_memory: int = Field(
        default=100_000,
        ge=0,
        description="Confirmed request ids remembered, each with a fingerprint of its body: a "
        "retry is answered without a second publish, the same id with another body gets 409.",
    )

    @model_validator(mode="after")
    def _api_key_off_loopback(self) -> GatewaySettings:
        if self.api_key is not None and len(self.api_key.get_secret_value()) < 16:
            raise ValueError("SMARTGRID_API_KEY must be at least 16 characters")
        anonymous = self.api_key is None and not self.allow_no_api_key
        if anonymous and not is_loopback_host(self.http_host):
            raise ValueError(
                f"listening on {self.http_host} needs SMARTGRID_API_KEY "
                "(or SMARTGRID_ALLOW_NO_API_KEY=true behind an authenticating proxy)"
            )
        return self
