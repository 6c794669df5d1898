"""The worker's settings: SMARTGRID_* environment variables, CLI values on top."""

from __future__ import annotations

from pydantic import Field

from contracts.messages import SubstationId
from messaging.settings import AmqpSettings, MetricsHost, MetricsPort
from substation_worker.sharing import SharingName

# AMQP's prefetch_count is a 16-bit field and prefetch = bays.
MAX_BAYS = 65_535


class WorkerSettings(AmqpSettings):
    """One substation worker process."""

    substation_id: SubstationId = Field(
        description="Lower-case id; consumes <ns>.substation.<id>, routing key <id>."
    )
    capacity_kw: float = Field(
        gt=0, le=1_000_000, description="Transformer capacity, shared by the sessions, kW."
    )
    bays: int = Field(
        ge=1, le=MAX_BAYS, description="Charging bays: sessions at once, and the consumer prefetch."
    )
    time_scale: float = Field(
        default=60.0, gt=0, le=1_000_000, description="Simulated seconds per wall second."
    )
    heartbeat_interval_s: float = Field(
        default=1.0, gt=0, le=300, description="Time between heartbeats, wall seconds."
    )
    charger_max_kw: float = Field(
        default=350.0, gt=0, le=1_000_000, description="Highest power one charger delivers, kW."
    )
    sharing: SharingName = Field(
        default="smartgrid",
        description="How the capacity is shared among the cars charging: smartgrid (a plan "
        "that delivers the most energy by the departures, re-planned at every change), fair "
        "(max-min fair, departures ignored), edf (earliest departure first) or llf (least "
        "laxity first). See docs/charging.md.",
    )
    drain_timeout_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="On SIGTERM, let active sessions finish this long (wall seconds), then hand "
        "what is left back to the queue.",
    )
    metrics_host: MetricsHost = "127.0.0.1"
    metrics_port: MetricsPort = 9200
