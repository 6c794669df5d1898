"""The smartgrid wire contract: message models, topology names, JSON Schema. No I/O here."""

from contracts.messages import (
    SCHEMA_VERSION,
    Assignment,
    ChargeEvent,
    ChargeRequest,
    DispatchIntent,
    EventKind,
    Heartbeat,
    LoadSnapshot,
    Release,
    Route,
    SessionOutcome,
    Spare,
)
from contracts.topology import DEFAULT_NAMESPACE, Topology

__all__ = [
    "DEFAULT_NAMESPACE",
    "SCHEMA_VERSION",
    "Assignment",
    "ChargeEvent",
    "ChargeRequest",
    "DispatchIntent",
    "EventKind",
    "Heartbeat",
    "LoadSnapshot",
    "Release",
    "Route",
    "SessionOutcome",
    "Spare",
    "Topology",
]
