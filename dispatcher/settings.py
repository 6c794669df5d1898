from __future__ import annotations

from pydantic import Field, PositiveFloat, field_validator

from dispatcher.policies import POLICIES
from messaging.settings import (
    MAX_REQUEST_BYTES,
    AmqpSettings,
    MetricsHost,
    MetricsPort,
    RequestBytes,
)


class DispatcherSettings(AmqpSettings):
    policy: str = Field(default="headroom", description=f"Dispatch policy: {', '.join(POLICIES)}.")
    hold_factor: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="headroom policy: hold requests once every substation has this many times "
        "its capacity promised (vehicles' max power, or sessions per bay); 1: never promise a "
        "substation more than its capacity. Above 1, predicted releases are not used.",
    )
    prefetch: int = Field(
        default=1000,
        ge=1,
        le=65535,
        description="Requests held unacked at once (the AMQP prefetch); ~1000 is fastest on a "
        "small machine.",
    )
    stale_after_intervals: float = Field(
        default=3.0, gt=1, description="A substation silent this many heartbeat intervals is out."
    )
    backlog_poll_s: PositiveFloat = Field(
        default=1.0,
        description="How often the depth of <ns>.requests is read (the backlog gauge), s.",
    )
    dispatch_events: bool = Field(
        default=False,
        description="Also publish a ChargeEvent per request (event.dispatched or "
        "event.redispatched) once its assignment is confirmed, for observers that follow only "
        "event.#; off, the intent.dispatched messages (one per batch) say the same for less.",
    )
    forget_after_s: PositiveFloat = Field(
        default=300.0,
        description="A substation silent this long (or twice its stale window, if longer) is "
        "dropped from the table, once its queue holds nothing to take back, s.",
    )
    max_substations: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Substations the table holds at most; heartbeats of further ids are refused.",
    )
    admit_per_s: PositiveFloat = Field(
        default=100.0,
        description="New substation ids admitted per second at most (a burst of twice that): "
        "each costs a probe of its queue; heartbeats of ids beyond are refused until later.",
    )
    max_clock_skew_s: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="A heartbeat whose sent_at is later than this dispatcher's clock by more "
        "than this is refused, s.",
    )
    heartbeat_user: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="If set, a heartbeat counts only if its broker-validated AMQP user_id is "
        "this, with {substation_id} replaced by the substation's id (e.g. "
        "'substation-{substation_id}'): for brokers where every substation has its own user.",
    )
    max_request_bytes: RequestBytes = Field(
        default=MAX_REQUEST_BYTES,
        description="A message on <ns>.requests larger than this is dead-lettered unread.",
    )
    seed: int | None = Field(
        default=None,
        description="Seed for the policy's random choices (tie-breaks); unset: a fresh one at "
        "each start.",
    )
    fault_exit_after_confirms: int = Field(
        default=0,
        ge=0,
        description="Testing only (chaos tests): exit abruptly after this many confirmed "
        "assignments, between the confirm and the ack. 0: never.",
    )
    metrics_host: MetricsHost = "127.0.0.1"
    metrics_port: MetricsPort = 9100

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(f"unknown policy {v!r}; choose from {', '.join(POLICIES)}")
        return v
