"""The worker's settings: SMARTGRID_* environment variables, CLI values on top."""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import Field, PrivateAttr, model_validator

from contracts.messages import SubstationId
from messaging.settings import AmqpSettings, MetricsHost, MetricsPort, is_loopback_host
from substation_worker.ocpp.credentials import (
    StationsFile,
    StationsFileError,
    load_stations_file,
    server_tls_context,
)
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
        description="Address the OCPP listener listens on. Without a stations file it accepts "
        "any station id unauthenticated, so it must then be a loopback address.",
    )
    ocpp_stations_file: Path | None = Field(
        default=None,
        description="JSON file of the stations allowed to connect: id, password hash, EVSEs "
        "and their max kW. With it, a station must log in with HTTP Basic (OCPP security "
        "profile 1; 2 with TLS) and the listener may face a network. See docs/ocpp.md.",
    )
    ocpp_tls_cert: Path | None = Field(
        default=None,
        description="OCPP listener's certificate chain (PEM): with ocpp_tls_key, stations "
        "connect over wss:// (TLS 1.2 or later; OCPP security profile 2 with a stations file).",
    )
    ocpp_tls_key: Path | None = Field(
        default=None, description="Private key (PEM, unencrypted) of ocpp_tls_cert."
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

    _ocpp_stations: StationsFile | None = PrivateAttr(default=None)
    _ocpp_ssl: ssl.SSLContext | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _ocpp_security(self) -> WorkerSettings:
        # Read once here so that a bad file or key stops the worker before anything starts.
        if self.ocpp_stations_file is not None:
            try:
                self._ocpp_stations = load_stations_file(self.ocpp_stations_file)
            except StationsFileError as exc:
                raise ValueError(f"SMARTGRID_OCPP_STATIONS_FILE: {exc}") from None
        if (self.ocpp_tls_cert is None) != (self.ocpp_tls_key is None):
            raise ValueError(
                "SMARTGRID_OCPP_TLS_CERT and SMARTGRID_OCPP_TLS_KEY go together: set both "
                "(wss://) or neither (ws://)"
            )
        if self.ocpp_tls_cert is not None and self.ocpp_tls_key is not None:
            try:
                self._ocpp_ssl = server_tls_context(self.ocpp_tls_cert, self.ocpp_tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"SMARTGRID_OCPP_TLS_CERT={self.ocpp_tls_cert}, SMARTGRID_OCPP_TLS_KEY="
                    f"{self.ocpp_tls_key}: cannot load them ({exc})"
                ) from None
        # Without a stations file any station id is accepted and none authenticates: on another
        # address anyone who reaches the port could pose as a station.
        if self.ocpp_port and self._ocpp_stations is None and not is_loopback_host(self.ocpp_host):
            raise ValueError(
                f"SMARTGRID_OCPP_HOST={self.ocpp_host}: without a stations file "
                "(SMARTGRID_OCPP_STATIONS_FILE) the OCPP listener accepts any station id and "
                "authenticates none, so it listens on a loopback address only "
                "(127.0.0.1, ::1, localhost)"
            )
        return self

    @property
    def ocpp_stations(self) -> StationsFile | None:
        """The stations file, read and validated; None without one (no authentication)."""
        return self._ocpp_stations

    @property
    def ocpp_ssl(self) -> ssl.SSLContext | None:
        """The listener's TLS context (wss://); None without a certificate (ws://)."""
        return self._ocpp_ssl
