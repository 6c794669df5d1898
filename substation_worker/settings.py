"""The worker's settings: SMARTGRID_* environment variables, CLI values on top."""

from __future__ import annotations

from pydantic import Field, model_validator

from contracts.messages import SubstationId
from messaging.settings import AmqpSettings, MetricsHost, MetricsPort, is_loopback_host
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
    ocpp_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the OCPP 2.0.1 listener real charging stations connect to "
        "(ws://<host>:<port>/ocpp/<station_id>, subprotocol ocpp2.0.1); 0 turns it off, and the "
        "worker only simulates its bays. See docs/ocpp.md.",
    )
    ocpp_host: str = Field(
        default="127.0.0.1",
        description="Address the OCPP listener listens on. It accepts any station id (no "
        "stations file yet), so it must be a loopback address.",
    )
    ocpp_settle_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="After the worker starts, wait this long (wall seconds) before starting "
        "transactions on stations, so that stations reconnecting after a restart report the "
        "transactions they run first and none is started twice.",
    )
    ocpp_walk_in_energy_kwh: float = Field(
        default=20.0,
        gt=0,
        le=1000,
        description="The energy a walk-in car (a transaction a station started by itself) is "
        "charged to, until its car says otherwise (NotifyEVChargingNeeds), kWh.",
    )
    metrics_host: MetricsHost = "127.0.0.1"
    metrics_port: MetricsPort = 9200

    @model_validator(mode="after")
    def _ocpp_on_loopback(self) -> WorkerSettings:
        # Any station id is accepted and nothing authenticates a station yet: on another
        # address anyone who reaches the port could pose as a station.
        if self.ocpp_port and not is_loopback_host(self.ocpp_host):
            raise ValueError(
                f"SMARTGRID_OCPP_HOST={self.ocpp_host}: the OCPP listener accepts any station "
                "id and authenticates none, so it listens on a loopback address only "
                "(127.0.0.1, ::1, localhost)"
            )
        return self
