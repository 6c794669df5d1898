"""The stations connected to this substation and their EVSEs' status. Pure: no I/O, no clock.

An EVSE serves one car at a time through one of its connectors. It is a free bay when its
station is connected and booted, at least one of its connectors is Available and none is
Occupied or Reserved (a Faulted or Unavailable connector beside an Available one does not take
the EVSE out of service; a car plugged into any connector does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ConnectorStatus(StrEnum):
    """OCPP 2.0.1 ConnectorStatusEnumType."""

    AVAILABLE = "Available"
    OCCUPIED = "Occupied"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


# A station reporting ever more EVSEs or connectors must not grow this process without bound.
MAX_EVSES_PER_STATION = 64
MAX_CONNECTORS_PER_EVSE = 8
_BUSY = frozenset({ConnectorStatus.OCCUPIED, ConnectorStatus.RESERVED})


class UnknownStation(KeyError):
    """A report for a station not connected (or connected again since: a stale connection)."""


class EvseOutOfRange(ValueError):
    """An EVSE or connector id below 1 or beyond the per-station bounds."""


@dataclass(frozen=True, slots=True)
class Bay:
    station_id: str
    evse_id: int


@dataclass(slots=True)
class Station:
    station_id: str
    # Which connection this is: a station that reconnects replaces its older connection, and
    # the older one's late reports and disconnect must not touch the new one.
    connection: int
    booted: bool = False
    vendor: str = ""
    model: str = ""
    # EVSE id -> connector id -> last reported status.
    evses: dict[int, dict[int, ConnectorStatus]] = field(default_factory=dict)

    def evse_free(self, evse_id: int) -> bool:
        connectors = self.evses.get(evse_id, {})
        statuses = set(connectors.values())
        return self.booted and ConnectorStatus.AVAILABLE in statuses and not statuses & _BUSY


class StationRegistry:
    """Connected stations by id, each under the connection it arrived on."""

    def __init__(self) -> None:
        self._stations: dict[str, Station] = {}
        self._connections = 0

    def connect(self, station_id: str) -> int:
        """A new connection for ``station_id`` (replacing any older one); returns its token.

        What the older connection reported is forgotten: the station reports again after it
        boots (BootNotification, then StatusNotification for every connector)."""
        self._connections += 1
        self._stations[station_id] = Station(station_id, self._connections)
        return self._connections

    def disconnect(self, station_id: str, connection: int) -> bool:
        """Forget the station if ``connection`` is still its current one; True if it was."""
        station = self._stations.get(station_id)
        if station is None or station.connection != connection:
            return False
        del self._stations[station_id]
        return True

    def boot(self, station_id: str, connection: int, *, vendor: str, model: str) -> None:
        station = self._current(station_id, connection)
        station.booted, station.vendor, station.model = True, vendor, model

    def record_status(
        self,
        station_id: str,
        connection: int,
        evse_id: int,
        connector_id: int,
        status: ConnectorStatus | str,
    ) -> None:
        """A StatusNotification: ``status`` of connector ``connector_id`` of ``evse_id``."""
        station = self._current(station_id, connection)
        if not 1 <= connector_id <= MAX_CONNECTORS_PER_EVSE:
            raise EvseOutOfRange(f"connector id {connector_id} not in 1..{MAX_CONNECTORS_PER_EVSE}")
        known = evse_id in station.evses
        if not 1 <= evse_id <= MAX_EVSES_PER_STATION or (
            not known and len(station.evses) >= MAX_EVSES_PER_STATION
        ):
            raise EvseOutOfRange(f"EVSE id {evse_id} not in 1..{MAX_EVSES_PER_STATION}")
        station.evses.setdefault(evse_id, {})[connector_id] = ConnectorStatus(status)

    def _current(self, station_id: str, connection: int) -> Station:
        station = self._stations.get(station_id)
        if station is None or station.connection != connection:
            raise UnknownStation(station_id)
        return station

    @property
    def connected_count(self) -> int:
        return len(self._stations)

    def station(self, station_id: str) -> Station | None:
        return self._stations.get(station_id)

    def stations(self) -> list[Station]:
        return list(self._stations.values())

    def free_bays(self) -> list[Bay]:
        """Every free EVSE (module docstring), by station id then EVSE id."""
        return [
            Bay(s.station_id, evse_id)
            for s in sorted(self._stations.values(), key=lambda s: s.station_id)
            for evse_id in sorted(s.evses)
            if s.evse_free(evse_id)
        ]
