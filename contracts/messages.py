"""The wire contract: every message smartgrid puts on RabbitMQ, as frozen pydantic v2 models.

Clients outside this project publish and read these, so field names and bounds are the contract:
change them only together with ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from uuid import UUID, uuid4, uuid5

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1

# Generous for passenger and light commercial EVs; refuses the absurd (zero, negative, 10 MW cars).
MAX_ENERGY_KWH = 300.0
MAX_VEHICLE_POWER_KW = 500.0
MIN_VEHICLE_POWER_KW = 1.0

SUBSTATION_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SubstationId = Annotated[
    str,
    Field(
        pattern=SUBSTATION_ID_PATTERN.pattern,
        description="Lower-case id; it becomes part of the queue name <ns>.substation.<id>.",
        examples=["s1", "north-300"],
    ),
]


def utcnow() -> datetime:
    return datetime.now(UTC)


# What the published JSON Schemas say is what passes: no NaN or infinity (JSON has neither), and
# from the wire no string for a number, no number for a date-time, no bool for an integer.
_WIRE = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class _Message(BaseModel):
    model_config = ConfigDict(**_WIRE, str_strip_whitespace=True)

    schema_version: Literal[1] = Field(
        default=1, description="Contract version (SCHEMA_VERSION); only 1 exists."
    )

    @classmethod
    def model_validate_json(
        cls, json_data: str | bytes | bytearray, *, strict: bool | None = True, **kwargs: Any
    ) -> Self:
        """Parse a message off the wire: strict unless asked otherwise (pydantic's lax mode
        would take ``"30"`` for a number, which the JSON Schema refuses)."""
        return super().model_validate_json(json_data, strict=strict, **kwargs)


class ChargeRequest(_Message):
    """A vehicle asks for energy. Published by the gateway or any AMQP client to <ns>.requests."""

    request_id: UUID = Field(
        default_factory=uuid4,
        description="Idempotency key: a retry with the same id never charges twice.",
    )
    vehicle_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        examples=["EV-0042"],
    )
    energy_kwh: float = Field(
        gt=0, le=MAX_ENERGY_KWH, description="Energy the vehicle needs, kWh.", examples=[32.5]
    )
    max_power_kw: float = Field(
        ge=MIN_VEHICLE_POWER_KW,
        le=MAX_VEHICLE_POWER_KW,
        description="Highest charging power the vehicle accepts, kW.",
        examples=[11.0, 150.0],
    )
    departure: AwareDatetime | None = Field(
        default=None, description="When the vehicle leaves (deadline), with a UTC offset."
    )
    priority: int = Field(default=0, ge=0, le=9, description="0 (normal) to 9 (most urgent).")
    requested_at: AwareDatetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _departure_after_request(self) -> ChargeRequest:
        if self.departure is not None and self.departure <= self.requested_at:
            raise ValueError("departure must be later than requested_at")
        return self

    def fingerprint(self) -> int:
        """What a retry with this ``request_id`` must repeat: its vehicle, energy, power,
        departure and priority, hashed. Not ``requested_at``: a gateway sets it when the client
        did not, so two copies of one request may differ there. The hash is this process's
        own (Python's string hashing is salted per process): compare it only with fingerprints
        the same process computed."""
        return hash(
            (self.vehicle_id, self.energy_kwh, self.max_power_kw, self.departure, self.priority)
        )


# At most this many predicted releases ride on one heartbeat (a worker merges beyond it).
MAX_RELEASES = 64
MAX_RELEASE_IN_S = 3600.0
# At most this many pieces of spare power ride on one heartbeat (a worker merges beyond it),
# stated at most this far ahead (a week of wall time: a real substation's plan spans a day).
MAX_SPARE = 32
MAX_SPARE_UNTIL_S = 7 * 24 * 3600.0


# A ChargeRequest published without a request_id gets one derived from what a redelivery keeps.
DERIVED_REQUEST_ID_NAMESPACE = UUID("0b6f6f1e-3c7a-4f37-9a52-6a3f5c2d8e41")


def derived_request_id(body: bytes, message_id: str | None) -> UUID:
    """The request_id of a ChargeRequest that came without one: from the AMQP ``message_id``
    when the publisher set one, else from the body's bytes. A fresh uuid4 per delivery would
    make every redelivery (a dispatcher crash before its ack) a new request, charged twice."""
    if message_id:
        return uuid5(DERIVED_REQUEST_ID_NAMESPACE, f"message-id:{message_id}")
    return uuid5(DERIVED_REQUEST_ID_NAMESPACE, f"body:{hashlib.sha256(body).hexdigest()}")


# A request_id as it appears in a ChargeRequest's JSON (an Assignment's first is its request's).
_REQUEST_ID = re.compile(rb'"request_id"\s*:\s*"([0-9A-Fa-f-]{32,36})"')
# How much of an unreadable message is searched for its request_id.
READABLE_PREFIX_BYTES = 65_536


def readable_request_id(body: bytes) -> UUID | None:
    """Best effort: the request_id in a message that is not a valid one (so that its sender can
    learn its fate), or None. A pattern over the first bytes, not a JSON parser: the message may
    be anything (deeply nested, huge, not JSON at all), and reading it must not fail."""
    found = _REQUEST_ID.search(body, 0, READABLE_PREFIX_BYTES)
    if found is None:
        return None
    try:
        return UUID(found.group(1).decode())
    except ValueError:
        return None


class Release(BaseModel):
    """Committed power a worker expects to free: sessions predicted to end by ``in_s``."""

    model_config = _WIRE

    in_s: float = Field(
        ge=0,
        le=MAX_RELEASE_IN_S,
        description="Wall seconds after sent_at by which these sessions will have ended (a "
        "conservative estimate: never earlier than the worker expects them to end).",
    )
    kw: float = Field(
        ge=0,
        description="Committed power released: what was promised to them (see "
        "Heartbeat.committed_kw), summed, kW.",
    )
    sessions: int = Field(default=1, ge=1, le=100_000, description="How many sessions end.")


class Spare(BaseModel):
    """Power a substation's plan leaves unused: ``kw`` from the previous piece's end (``sent_at``
    for the first) until ``until_s``."""

    model_config = _WIRE

    until_s: float = Field(
        gt=0, le=MAX_SPARE_UNTIL_S, description="Wall seconds after sent_at this piece ends."
    )
    kw: float = Field(
        ge=0,
        description="Power left unused by the cars it holds, as planned: what one more car "
        "could draw there without taking from them, kW.",
    )


class Heartbeat(_Message):
    """A substation's load, published every interval to the <ns>.heartbeats fanout exchange."""

    substation_id: SubstationId
    capacity_kw: float = Field(gt=0, le=1_000_000, description="Transformer capacity, kW.")
    bays: int = Field(ge=1, le=100_000, description="Charging bays (concurrent sessions).")
    load_kw: float = Field(ge=0, description="Power drawn right now, kW.")
    committed_kw: float = Field(
        default=0.0,
        ge=0,
        description="Sum of the power promised to the sessions it holds (active or waiting "
        "for a bay), kW: each vehicle's max power, or for one with a departure the power that "
        "fills it by then (at most its max). What it has promised, as opposed to what it draws.",
    )
    active_sessions: int = Field(ge=0)
    queued: int = Field(
        ge=0, description="Requests assigned to it that have not started (its queue + held)."
    )
    status: Literal["up", "draining"] = "up"
    seq: int = Field(ge=0, description="Increases by one per heartbeat of this worker process.")
    incarnation: UUID | None = Field(
        default=None,
        description="Random id of the worker process, new at every start. Heartbeats of one "
        "incarnation are ordered by seq; one of another incarnation is a restart, taken if it "
        "is not older than the last. Without it (an older worker), by seq and sent_at.",
    )
    assignments_received: int = Field(ge=0, description="Assignments received since it started.")
    interval_s: float = Field(default=1.0, gt=0, le=300, description="Heartbeat period, s.")
    sent_at: AwareDatetime = Field(default_factory=utcnow)
    time_scale: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="Simulated seconds per wall second (1 for a real substation): with "
        "charger_max_kw, lets the dispatcher estimate when what it assigns will end. None: "
        "unknown (e.g. an older worker), no estimate.",
    )
    charger_max_kw: float | None = Field(
        default=None, gt=0, le=1_000_000, description="Highest power one bay delivers, kW."
    )
    keeps_sessions: bool = Field(
        default=False,
        description="Its sessions run on real charging stations (OCPP) and outlive the worker "
        "process: when it is stale or draining, a dispatcher sends it nothing new but does not "
        "take back its queue, where an assignment may be a car charging on a station that the "
        "worker's next process picks up again.",
    )
    releases: tuple[Release, ...] = Field(
        default=(),
        max_length=MAX_RELEASES,
        description="Charging sessions predicted to end within the next few intervals, in time "
        "order, assuming no further assignment: the dispatcher may count their committed power "
        "as free from then on. Empty when unknown (e.g. an older worker).",
    )
    spare: tuple[Spare, ...] | None = Field(
        default=None,
        max_length=MAX_SPARE,
        description="What its plan leaves of its capacity over time (the smartgrid sharing): "
        "pieces in time order, each the least spare power over its stretch; the last one "
        "lasts. The dispatcher reads it to place a car with a departure where it can get the "
        "most energy by then. None: no plan (another sharing or an older worker), read as "
        "capacity less committed_kw throughout.",
    )


class LoadSnapshot(BaseModel):
    """What the dispatcher believed about the chosen substation when it chose it."""

    model_config = _WIRE

    load_kw: float = Field(ge=0)
    capacity_kw: float = Field(gt=0)
    committed_kw: float = Field(ge=0)
    pending_kw: float = Field(ge=0, description="Assigned since its last heartbeat, kW.")
    heartbeat_seq: int = Field(ge=0)
    heartbeat_age_s: float = Field(ge=0)


class Assignment(_Message):
    """A ChargeRequest routed to one substation: published to <ns>.substations with key <id>."""

    request: ChargeRequest
    substation_id: SubstationId
    dispatched_at: AwareDatetime = Field(default_factory=utcnow)
    snapshot: LoadSnapshot
    policy: str = Field(min_length=1, max_length=64)
    attempt: int = Field(default=1, ge=1, description="1, then +1 each time it is redispatched.")


class EventKind(StrEnum):
    ACCEPTED = "accepted"
    DISPATCHED = "dispatched"
    REDISPATCHED = "redispatched"
    STARTED = "started"
    COMPLETED = "completed"
    REJECTED = "rejected"
    DEAD_LETTERED = "dead_lettered"


class SessionOutcome(StrEnum):
    """How a charging session ended (a ``completed`` event's ``outcome``)."""

    FULL = "full"  # the requested energy was delivered
    DEPARTED = "departed"  # the car left at its departure with part of it
    UNSERVED = "unserved"  # the car left at its departure with nothing (never got a bay)


# Event ids only need to be unique: a generator seeded once from the OS costs far less than
# uuid4's system call per id, and events are published once per step of every request.
# (Request ids, which a client could race for, stay uuid4.) A forked child reseeds, or it would
# draw the very ids its parent draws.
_EVENT_IDS = random.Random()
os.register_at_fork(after_in_child=_EVENT_IDS.seed)


def _event_id() -> UUID:
    return UUID(int=_EVENT_IDS.getrandbits(128), version=4)


class ChargeEvent(_Message):
    """A step in a request's life, on the <ns>.events topic exchange as event.<kind>."""

    event_id: UUID = Field(default_factory=_event_id)
    request_id: UUID
    kind: EventKind
    substation_id: SubstationId | None = None
    at: AwareDatetime = Field(default_factory=utcnow)
    energy_kwh: float | None = Field(
        default=None, ge=0, le=MAX_ENERGY_KWH, description="completed: energy delivered, kWh."
    )
    energy_requested_kwh: float | None = Field(
        default=None,
        gt=0,
        le=MAX_ENERGY_KWH,
        description="completed: energy the request asked for, kWh.",
    )
    outcome: SessionOutcome | None = Field(
        default=None,
        description="completed: full (all requested energy delivered), departed (left at its "
        "departure with part of it) or unserved (left at its departure with nothing).",
    )
    demand_met: bool | None = Field(
        default=None, description="completed: the requested energy was delivered (outcome full)."
    )
    reason: str | None = Field(
        default=None, max_length=2000, description="rejected / dead_lettered: why."
    )
    attempt: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _outcome_agrees(self) -> ChargeEvent:
        met = self.outcome is SessionOutcome.FULL
        if self.outcome is not None and self.demand_met is not None and self.demand_met != met:
            raise ValueError("demand_met must be true exactly when outcome is full")
        if self.outcome is SessionOutcome.UNSERVED and self.energy_kwh:
            raise ValueError("an unserved session delivered no energy")
        return self


# Routes per DispatchIntent: a dispatcher splits a larger batch (107 bytes a route).
MAX_INTENT_ROUTES = 1000


class Route(BaseModel):
    """One request of a DispatchIntent: the substation it is sent to, and the how-many-th try."""

    model_config = _WIRE

    request_id: UUID
    substation_id: SubstationId
    # Plain strings: pydantic serialises a Literal of enum members four times slower.
    kind: Literal["dispatched", "redispatched"] = "dispatched"
    attempt: int = Field(default=1, ge=1)


class DispatchIntent(_Message):
    """Where a dispatcher is sending a batch of requests, on <ns>.events as intent.dispatched.

    Published, and confirmed by the broker, before any of the batch's assignments: a standby
    that takes over after a crash knows where a copy of each request may already wait, and sends
    it there again (the worker drops the copy) instead of charging it somewhere else too. One
    message per batch rather than one ChargeEvent per request: the intent is on the hot path.
    """

    intent_id: UUID = Field(default_factory=_event_id)
    dispatcher: str = Field(min_length=1, max_length=255, description="Its instance name.")
    at: AwareDatetime = Field(default_factory=utcnow)
    routes: tuple[Route, ...] = Field(min_length=1, max_length=MAX_INTENT_ROUTES)

    def events(self) -> list[ChargeEvent]:
        """The per-request ``dispatched`` / ``redispatched`` events this intent stands for, each
        with an id derived from the intent's (a redelivered intent gives the same ids)."""
        return [
            ChargeEvent(
                event_id=uuid5(self.intent_id, str(r.request_id)),
                request_id=r.request_id,
                kind=EventKind(r.kind),
                substation_id=r.substation_id,
                at=self.at,
                attempt=r.attempt,
            )
            for r in self.routes
        ]


MESSAGES: dict[str, type[BaseModel]] = {
    "ChargeRequest": ChargeRequest,
    "Heartbeat": Heartbeat,
    "Assignment": Assignment,
    "ChargeEvent": ChargeEvent,
    "DispatchIntent": DispatchIntent,
}
