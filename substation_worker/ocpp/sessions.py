"""A substation's charging sessions on its OCPP stations, and the limits the stations are given.
Pure: no I/O, no clock (simulated seconds are passed in).

A session is a dispatched request (an assignment) or a walk-in (a transaction a station started
by itself). A dispatched one waits for a free EVSE, then is ``starting`` (RequestStartTransaction
sent), ``charging`` (the station's TransactionEvent Started came), ``stopping``
(RequestStopTransaction sent: its energy is delivered or its departure came) and ends with the
station's TransactionEvent Ended, metered.

**Capacity rule.** Every session counts a ``granted_kw``: the highest limit its station may be
following now. The sum over all sessions never exceeds the capacity:

- a start counts its TxProfile's limit from when it is sent; a raise counts from when it is sent;
- a lowered limit counts only once the station has accepted it (until then the station may still
  follow the old one), and a lower that is refused or unanswered leaves the old one counted;
- so ``commands`` sends lowers first and lets raises and starts through only as far as what is
  counted leaves room; the station's answers (``answered``) free the room for the rest;
- a transaction the worker did not limit (a walk-in before its first TxProfile, or one found
  after a restart) counts its EVSE's maximum, and the stations' TxDefaultProfile is 0 W, so such
  a car draws nothing until the worker gives it a TxProfile (``DEFAULT_LIMIT_KW``);
- a session whose station is disconnected keeps what it counts: the car is still there, drawing
  under its last limit, until the station reconnects and reports.

Energy is what the station meters (``Energy.Active.Import.Register``, from its value when the
transaction started). Between meter values the worker estimates it from the last reading and the
power then (at most the limit), and stops a car once the estimate reaches its energy: the
``completed`` energy is the Ended event's meter value, a hair above the request at most.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from uuid import NAMESPACE_URL, UUID, uuid5

from contracts import SessionOutcome
from contracts.promises import promised_kw
from substation_worker.ocpp.registry import Bay
from substation_worker.sharing import Car, Fair, Sharing
from substation_worker.simulation import (
    SECONDS_PER_HOUR,
    ChargingSession,
    PredictedRelease,
    Step,
    releases_of,
)

# The limit of the TxDefaultProfile every station gets at boot: a transaction the worker has not
# limited yet draws nothing, so an unplanned car can never take power the plan gave another.
DEFAULT_LIMIT_KW = 0.0
# A limit is sent again only when it moves by more than this (kW, or share of the limit): a plan
# re-made every half second must not flood the stations with profiles that change nothing.
LIMIT_DEADBAND_KW = 0.1
LIMIT_DEADBAND_REL = 0.02
# A car within this much of its energy (kWh) is full: the stop is sent.
FULL_TOLERANCE_KWH = 1e-3
# Walk-in request ids: uuid5 of the station and transaction id under this namespace, so a
# station's retried TransactionEvent never makes a second session.
WALK_IN_NAMESPACE = uuid5(NAMESPACE_URL, "smartgrid:ocpp:walk-in")
# TxProfile ids start here: below are the station-wide profiles sent at boot (``csms``).
FIRST_TX_PROFILE_ID = 100
# OCPP's integers are 32-bit signed.
MAX_REMOTE_START_ID = 2**31 - 1
# Ended transactions of requests not known here, kept until their request is offered again.
MAX_ENDED_UNKNOWN = 10_000
# Transactions remembered as ended, to drop a station's events of them that come late.
MAX_ENDED_KEPT = 10_000


class Phase(Enum):
    WAITING = "waiting"  # dispatched, no EVSE yet
    STARTING = "starting"  # RequestStartTransaction sent (or accepted), no Started event yet
    CHARGING = "charging"
    STOPPING = "stopping"  # RequestStopTransaction sent (or accepted), no Ended event yet


@dataclass(eq=False)
class StationSession(ChargingSession):
    """A ``ChargingSession`` on a station's EVSE (the service reads the base fields)."""

    phase: Phase = Phase.WAITING
    walk_in: bool = False
    # The request's demand is not known yet: a dispatched transaction found on a station after a
    # restart, before its assignment is redelivered. It is charged, never stopped, until then.
    demand_known: bool = True
    station_id: str | None = None
    evse_id: int | None = None
    evse_max_kw: float = 0.0
    remote_start_id: int | None = None
    transaction_id: str | None = None
    profile_id: int = 0  # its TxProfile's id: each update replaces the last (K01)
    granted_kw: float = 0.0  # counted against the capacity (module docstring)
    sent_kw: float | None = None  # the last limit the station accepted or was sent (a raise)
    target_kw: float = 0.0  # what the plan gives it
    # The highest limit sent since the last accepted one whose answer never came: the station
    # may be following it.
    unsure_kw: float = 0.0
    # No new limit before this (simulated s): the station refused the last one. Some stations
    # refuse a TxProfile until the car has sent its charging needs (errata K15.FR.17).
    limit_after_s: float = -math.inf
    # The command to its station awaiting an answer; an answer to any other is stale (it
    # was sent on a connection since lost) and changes nothing.
    in_flight: Start | Limit | Stop | None = None
    register_base_wh: float | None = None  # the register when the transaction started
    metered_kwh: float = 0.0
    metered_at_s: float = 0.0
    metered_power_kw: float | None = None

    def estimated_kwh(self, now_s: float) -> float:
        """Metered energy plus what the car drew since, at its last power (at most its limit)."""
        since_s = max(0.0, now_s - self.metered_at_s)
        return self.metered_kwh + self.drawing_kw() * since_s / SECONDS_PER_HOUR

    def drawing_kw(self) -> float:
        power = self.metered_power_kw
        limit = self.sent_kw if self.sent_kw is not None else self.granted_kw
        return max(0.0, limit if power is None else min(power, limit))

    @property
    def bay(self) -> Bay | None:
        if self.station_id is None or self.evse_id is None:
            return None
        return Bay(self.station_id, self.evse_id)


@dataclass(frozen=True, slots=True)
class Start:
    key: str
    station_id: str
    evse_id: int
    remote_start_id: int
    profile_id: int
    limit_kw: float


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    station_id: str
    evse_id: int
    transaction_id: str
    profile_id: int
    limit_kw: float


@dataclass(frozen=True, slots=True)
class Stop:
    key: str
    station_id: str
    transaction_id: str


Command = Start | Limit | Stop


@dataclass(frozen=True, slots=True)
class WalkInDefaults:
    """A walk-in's demand until (or unless) its car sends NotifyEVChargingNeeds."""

    energy_kwh: float = 20.0
    # Parking time, simulated seconds; None: it stays until full or unplugged.
    parking_s: float | None = None


@dataclass
class Reading:
    """A meter reading from a TransactionEvent or MeterValues."""

    energy_wh: float | None = None
    power_w: float | None = None


@dataclass
class _Outbox:
    started: list[StationSession] = field(default_factory=list)
    completed: list[StationSession] = field(default_factory=list)


def remote_start_id_of(key: str) -> int:
    """The remoteStartId of a request's start: derived from its id, so that a worker that
    restarted can tell which request a transaction that ended meanwhile was (its Ended event
    names the remoteStartId, not the request)."""
    try:
        number = UUID(key).int
    except ValueError:
        number = int.from_bytes(key.encode()[:16].ljust(16, b"\0"), "big")
    return number % MAX_REMOTE_START_ID + 1


def walk_in_key(station_id: str, transaction_id: str) -> str:
    return str(uuid5(WALK_IN_NAMESPACE, f"{station_id}/{transaction_id}"))


def request_id_of(token_type: str | None, token: str | None) -> str | None:
    """The request id a ``Central`` id token carries (the worker's remote starts), else None."""
    if token_type != "Central" or not token:
        return None
    try:
        return str(UUID(token))
    except ValueError:
        return None


class StationSessions:
    """Every session of one substation's stations, and the commands that keep them in line."""

    def __init__(
        self,
        capacity_kw: float,
        *,
        sharing: Sharing | None = None,
        replan_s: float = 60.0,
        evse_max_kw: Callable[[Bay], float],
        walk_ins: WalkInDefaults | None = None,
        refused_retry_s: float = 300.0,
    ) -> None:
        if capacity_kw <= 0:
            raise ValueError("capacity_kw must be > 0")
        self.capacity_kw = float(capacity_kw)
        self.sharing: Sharing = sharing if sharing is not None else Fair()
        self.replan_s = float(replan_s)
        self._evse_max_kw = evse_max_kw
        self.walk_ins = walk_ins or WalkInDefaults()
        self.refused_retry_s = refused_retry_s
        self._sessions: dict[str, StationSession] = {}
        self._waiting: list[str] = []  # FIFO of keys
        self._by_tx: dict[tuple[str, str], str] = {}  # (station, transaction) -> key
        self._by_remote: dict[tuple[str, int], str] = {}  # (station, remote start id) -> key
        # Transactions that ended on a station while this worker did not know them (it had
        # restarted), by remote start id: their request completes when it is offered again.
        self._ended_unknown: OrderedDict[int, tuple[str, float]] = OrderedDict()
        # Transactions that ended here, most recent last (bounded): what a station sends of
        # them later is out of order.
        self._ended: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._next_profile = FIRST_TX_PROFILE_ID
        self._dirty = True
        self._replan_at = -math.inf
        self._out = _Outbox()
        self.offline: set[str] = set()  # stations whose sessions are held while disconnected
        # Walk-ins plugged in (a Started event) while this worker ran (a metric counts them).
        self.walk_ins_seen = 0

    # -- state ---------------------------------------------------------------------------

    @property
    def granted_kw(self) -> float:
        return sum(s.granted_kw for s in self._sessions.values())

    @property
    def load_kw(self) -> float:
        """What the cars draw: each one's last metered power, at most what it is granted."""
        total = 0.0
        for s in self._sessions.values():
            if s.phase in (Phase.CHARGING, Phase.STOPPING):
                power = s.metered_power_kw if s.metered_power_kw is not None else s.granted_kw
                total += min(power, s.granted_kw)
        return total

    def committed_kw(self, now_s: float) -> float:
        return sum(self.promised_kw(s, now_s) for s in self._sessions.values())

    def promised_kw(self, s: StationSession, now_s: float) -> float:
        left_s = None if s.departure_s is None else s.departure_s - now_s
        remaining = max(0.0, s.energy_kwh - s.estimated_kwh(now_s))
        return promised_kw(remaining, s.max_power_kw, left_s)

    @property
    def active_count(self) -> int:
        return len(self._sessions) - len(self._waiting)

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    def holds(self, key: str) -> bool:
        return key in self._sessions

    def session(self, key: str) -> StationSession | None:
        return self._sessions.get(key)

    def sessions(self) -> list[StationSession]:
        return list(self._sessions.values())

    def occupied(self) -> set[Bay]:
        return {b for s in self._sessions.values() if (b := s.bay) is not None}

    def predicted_releases(self, now_s: float, horizon_s: float) -> list[PredictedRelease]:
        """Only departures are stated (a car leaves by its departure whatever it got): the
        stations, not the worker, decide when a car is full."""
        ends = sorted(
            (max(0.0, s.departure_s - now_s), i)
            for i, s in enumerate(self._sessions.values())
            if s.departure_s is not None and s.departure_s - now_s <= horizon_s
        )
        kws = [self.promised_kw(s, now_s) for s in self._sessions.values()]
        return releases_of(ends, kws)

    def next_due_s(self, now_s: float) -> float:
        """Simulated seconds until something is due without a message from a station: a car
        estimated full, a departure, a periodic re-plan (inf: nothing)."""
        due = self._replan_at - now_s if self.sharing.periodic and self._sessions else math.inf
        for s in self._sessions.values():
            # Only what a pump can act on now: a stop or a limit in flight waits its answer.
            if s.phase not in (Phase.WAITING, Phase.CHARGING) or s.in_flight:
                continue
            if s.departure_s is not None:
                due = min(due, s.departure_s - now_s)
            drawing = s.drawing_kw()
            if s.phase is Phase.CHARGING and s.demand_known and drawing > 0:
                left_kwh = s.energy_kwh - FULL_TOLERANCE_KWH - s.estimated_kwh(now_s)
                due = min(due, left_kwh / drawing * SECONDS_PER_HOUR)
        return max(0.0, due)

    def knows_transaction(self, station_id: str, transaction_id: str) -> bool:
        return (station_id, transaction_id) in self._by_tx

    def has_ended(self, station_id: str, transaction_id: str) -> bool:
        """The transaction ended here (its Ended event came): a later event of it is out of
        order and must not make a session again."""
        return (station_id, transaction_id) in self._ended

    def take_events(self) -> Step:
        """The sessions that started and ended since the last call."""
        out, self._out = self._out, _Outbox()
        return Step(started=list(out.started), completed=list(out.completed))

    # -- dispatched requests -------------------------------------------------------------

    def offer(
        self,
        key: str,
        energy_kwh: float,
        max_power_kw: float,
        now_s: float,
        *,
        departure_s: float | None = None,
        priority: int = 0,
    ) -> StationSession:
        """A dispatched request: it waits (FIFO) for a free EVSE."""
        if key in self._sessions:
            raise ValueError(f"session {key!r} is already held")
        if energy_kwh <= 0 or max_power_kw <= 0:
            raise ValueError("energy_kwh and max_power_kw must be > 0")
        s = StationSession(
            key=key,
            energy_kwh=float(energy_kwh),
            max_power_kw=float(max_power_kw),
            offered_at_s=now_s,
            departure_s=departure_s,
            priority=priority,
        )
        self._sessions[key] = s
        self._waiting.append(key)
        self._dirty = True
        ended = self._ended_unknown.pop(remote_start_id_of(key), None)
        if ended is not None:
            station_id, energy_wh = ended
            self.transaction_ended(
                station_id,
                "",
                Reading(energy_wh=energy_wh),
                now_s,
                remote_start_id=remote_start_id_of(key),
            )
        return s

    def learn_demand(
        self,
        key: str,
        energy_kwh: float,
        max_power_kw: float,
        *,
        departure_s: float | None,
        priority: int = 0,
    ) -> None:
        """The demand of a session found on a station before its assignment came back."""
        s = self._sessions[key]
        s.energy_kwh, s.departure_s, s.priority = float(energy_kwh), departure_s, priority
        s.max_power_kw = min(float(max_power_kw), s.evse_max_kw or max_power_kw)
        s.demand_known = True
        self._dirty = True

    def take_waiting(self) -> list[StationSession]:
        """Remove and return the dispatched sessions that have no EVSE yet."""
        taken = [self._sessions.pop(k) for k in self._waiting]
        self._waiting.clear()
        return taken

    # -- the station's reports -----------------------------------------------------------

    def transaction_started(
        self,
        station_id: str,
        evse_id: int | None,
        transaction_id: str,
        now_s: float,
        *,
        remote_start_id: int | None,
        token_type: str | None,
        token: str | None,
        reading: Reading,
        limit_kw: float | None = None,
        begins: bool = True,
    ) -> StationSession | None:
        """A TransactionEvent (Started, or Updated for a transaction not known here: one found
        after a restart). Returns the session, new or known; None when it cannot be placed
        (no EVSE named for a transaction never seen). ``limit_kw``: the limit the station
        holds a transaction this worker did not start to (its TxDefaultProfile, accepted);
        None: not known, so it counts its EVSE's maximum. ``begins``: a Started event (its meter
        value is the transaction's start)."""
        known = self._by_tx.get((station_id, transaction_id))
        if known is not None:
            session = self._sessions[known]
            request = request_id_of(token_type, token)
            if session.walk_in and request is not None and request != session.key:
                # Taken for a walk-in from an event without its token (after a restart, one
                # the station had not sent yet): its token says which request it is.
                session = self._rekey(session, request)
            self._meter(session, reading, now_s)
            return session
        key = None
        if remote_start_id is not None:
            key = self._by_remote.get((station_id, remote_start_id))
        if key is None:
            key = request_id_of(token_type, token)
        s = self._sessions.get(key) if key is not None else None
        if s is None and evse_id is None:
            return None
        if s is None:
            s = self._adopt(station_id, evse_id or 0, transaction_id, key, now_s)
            # A car plugged in now; one found running may be a request not told yet.
            self.walk_ins_seen += s.walk_in and begins
            if limit_kw is not None:
                s.granted_kw = s.sent_kw = min(limit_kw, s.granted_kw)
        else:
            if key in self._waiting:
                self._waiting.remove(key)  # found on a station before it was given an EVSE
            if s.station_id is None or s.evse_id is None:
                s.station_id, s.evse_id = station_id, evse_id
                s.evse_max_kw = self._evse_max_kw(Bay(station_id, evse_id or 0))
                s.granted_kw = s.evse_max_kw  # not limited by this worker: counted at its max
                s.phase, s.profile_id = Phase.CHARGING, self._profile_id()
        s.transaction_id = transaction_id
        self._by_tx[(station_id, transaction_id)] = s.key
        if s.phase in (Phase.WAITING, Phase.STARTING):
            s.phase = Phase.CHARGING
        if s.started_at_s is None:
            s.started_at_s = now_s
            self._out.started.append(s)
        if s.register_base_wh is None:
            # The register at the transaction's start is its zero; for one first seen running
            # (after a restart) that value is gone, and the register counts from 0 (as the
            # stations that report the transaction's own energy do).
            begin = reading.energy_wh if begins and reading.energy_wh is not None else 0.0
            s.register_base_wh = begin
            s.metered_at_s = now_s
        self._meter(s, reading, now_s)
        self._dirty = True
        return s

    def _rekey(self, s: StationSession, key: str) -> StationSession:
        """``s`` is the transaction of request ``key``: it takes that key and, if the request
        is held here (its assignment came back), its demand; that waiting copy goes."""
        del self._sessions[s.key]
        held = self._sessions.pop(key, None)
        if held is not None:
            if key in self._waiting:
                self._waiting.remove(key)
            if held.station_id is not None and held.remote_start_id is not None:
                self._by_remote.pop((held.station_id, held.remote_start_id), None)
            s.energy_kwh, s.departure_s, s.priority = (
                held.energy_kwh,
                held.departure_s,
                held.priority,
            )
            s.max_power_kw = min(held.max_power_kw, s.evse_max_kw or held.max_power_kw)
            s.offered_at_s = held.offered_at_s
        s.key, s.walk_in, s.demand_known = key, False, held is not None
        self._sessions[key] = s
        assert s.station_id is not None
        assert s.transaction_id is not None
        self._by_tx[(s.station_id, s.transaction_id)] = key
        self._out.started.append(s)  # its start, under its request
        self._dirty = True
        return s

    def _adopt(
        self, station_id: str, evse_id: int, transaction_id: str, key: str | None, now_s: float
    ) -> StationSession:
        """A transaction this worker did not start, or started before it restarted."""
        bay = Bay(station_id, evse_id)
        evse_max = self._evse_max_kw(bay)
        walk_in = key is None
        key = key or walk_in_key(station_id, transaction_id)
        departure = None
        if walk_in and self.walk_ins.parking_s is not None:
            departure = now_s + self.walk_ins.parking_s
        s = StationSession(
            key=key,
            energy_kwh=self.walk_ins.energy_kwh,
            max_power_kw=evse_max,
            offered_at_s=now_s,
            departure_s=departure,
            walk_in=walk_in,
            demand_known=walk_in,
            station_id=station_id,
            evse_id=evse_id,
            evse_max_kw=evse_max,
            # Its limit is unknown (the default, or one set before a restart): counted at most.
            granted_kw=evse_max,
            phase=Phase.CHARGING,
            profile_id=self._profile_id(),
        )
        self._sessions[key] = s
        return s

    def charging_needs(
        self,
        station_id: str,
        evse_id: int,
        now_s: float,
        *,
        energy_kwh: float | None,
        max_kw: float | None,
        departure_s: float | None,
    ) -> StationSession | None:
        """NotifyEVChargingNeeds: the demand of the walk-in on that EVSE (a dispatched car's
        demand is its request's). None if no walk-in is there."""
        bay = Bay(station_id, evse_id)
        s = next((s for s in self._sessions.values() if s.bay == bay and s.walk_in), None)
        if s is None:
            return None
        if energy_kwh is not None and energy_kwh > 0:
            s.energy_kwh = max(energy_kwh, s.metered_kwh)
        if max_kw is not None and max_kw > 0:
            s.max_power_kw = min(max_kw, s.evse_max_kw)
        if departure_s is not None and departure_s > now_s:
            s.departure_s = departure_s
        s.limit_after_s = -math.inf  # its needs are known: a refused limit may pass now
        self._dirty = True
        return s

    def meter(
        self,
        station_id: str,
        transaction_id: str | None,
        evse_id: int | None,
        reading: Reading,
        now_s: float,
    ) -> StationSession | None:
        """A meter reading (TransactionEvent Updated, MeterValues) for a known session."""
        s = None
        if transaction_id is not None:
            key = self._by_tx.get((station_id, transaction_id))
            s = self._sessions.get(key) if key is not None else None
        elif evse_id is not None:
            bay = Bay(station_id, evse_id)
            s = next((s for s in self._sessions.values() if s.bay == bay), None)
        if s is not None and s.transaction_id is not None:
            self._meter(s, reading, now_s)
        return s

    def _meter(self, s: StationSession, reading: Reading, now_s: float) -> None:
        if reading.energy_wh is not None:
            base = s.register_base_wh or 0.0
            s.metered_kwh = max(s.metered_kwh, (reading.energy_wh - base) / 1000.0)
            s.delivered_kwh = s.metered_kwh
            s.metered_at_s = now_s
        if reading.power_w is not None:
            s.metered_power_kw = max(0.0, reading.power_w / 1000.0)
            s.power_kw = s.metered_power_kw

    def transaction_ended(
        self,
        station_id: str,
        transaction_id: str,
        reading: Reading,
        now_s: float,
        *,
        remote_start_id: int | None = None,
    ) -> StationSession | None:
        """TransactionEvent Ended: the session is completed with what was metered. One not
        known here with a remote start id (it ended while this worker restarted) completes its
        request when that is offered, or now if it waits for an EVSE."""
        key = self._by_tx.pop((station_id, transaction_id), None)
        s = self._sessions.get(key) if key is not None else None
        if s is not None:
            self._ended[(station_id, transaction_id)] = None
            while len(self._ended) > MAX_ENDED_KEPT:
                self._ended.popitem(last=False)
        if s is None and remote_start_id is not None:
            waiting = [k for k in self._waiting if remote_start_id_of(k) == remote_start_id]
            if not waiting:
                self._ended_unknown[remote_start_id] = (station_id, reading.energy_wh or 0.0)
                while len(self._ended_unknown) > MAX_ENDED_UNKNOWN:
                    self._ended_unknown.popitem(last=False)
                return None
            s = self._sessions[waiting[0]]
            self._waiting.remove(s.key)
            s.station_id = station_id
        if s is None:
            return None
        del self._sessions[s.key]
        self._meter(s, reading, now_s)
        if s.remote_start_id is not None:
            self._by_remote.pop((station_id, s.remote_start_id), None)
        s.granted_kw, s.power_kw = 0.0, 0.0
        s.completed_at_s = now_s
        if s.metered_kwh >= s.energy_kwh - FULL_TOLERANCE_KWH:
            s.outcome = SessionOutcome.FULL
        else:
            s.outcome = SessionOutcome.DEPARTED if s.metered_kwh > 0 else SessionOutcome.UNSERVED
        if s.outcome is SessionOutcome.UNSERVED:
            s.delivered_kwh = 0.0
        self._out.completed.append(s)
        self._dirty = True
        return s

    def station_lost(self, station_id: str) -> None:
        """The station disconnected: its sessions stay, counted at what they hold (the cars
        are there, under their last limits); a start not answered may have happened, so it
        stays counted too; a stop not known to have arrived is asked again once it is back."""
        self.offline.add(station_id)
        for s in self._sessions.values():
            if s.station_id == station_id:
                if isinstance(s.in_flight, Limit):
                    s.unsure_kw = max(s.unsure_kw, s.in_flight.limit_kw)
                s.in_flight = None
                if s.phase is Phase.STOPPING:
                    s.phase = Phase.CHARGING

    def station_back(self, station_id: str) -> None:
        """The station reconnected and has reported what it runs: a start it never answered
        and never reported did not happen, so that request waits for an EVSE again."""
        self.offline.discard(station_id)
        for s in list(self._sessions.values()):
            if s.station_id == station_id and s.phase is Phase.STARTING and not s.in_flight:
                self._unplace(s)
        self._dirty = True

    def _unplace(self, s: StationSession) -> None:
        if s.station_id is not None and s.remote_start_id is not None:
            self._by_remote.pop((s.station_id, s.remote_start_id), None)
        s.phase, s.station_id, s.evse_id = Phase.WAITING, None, None
        s.granted_kw, s.sent_kw = 0.0, None
        self._waiting.insert(0, s.key)

    # -- answers to our commands ---------------------------------------------------------

    def answered(self, command: Command, accepted: bool | None, now_s: float = 0.0) -> None:
        """The station's answer to ``command``: True accepted, False refused, None no answer
        (timed out, or the station went away). A refused limit is not sent again for
        ``refused_retry_s``, or until the car sends its charging needs."""
        s = self._sessions.get(command.key)
        if s is None or s.in_flight is not command:
            return
        s.in_flight = None
        self._dirty = True
        if isinstance(command, Start):
            if accepted is not False or s.phase is not Phase.STARTING:
                # Accepted, or unanswered: the station may have started it, so it stays
                # counted, as starting, until its Started event comes (or it reconnects
                # without reporting it: ``station_back``).
                return
            # Refused: no transaction was made, so the EVSE draws nothing for it.
            self._unplace(s)
        elif isinstance(command, Limit):
            if accepted:
                s.granted_kw = s.sent_kw = command.limit_kw
                s.unsure_kw = 0.0
            elif accepted is False:
                s.limit_after_s = now_s + self.refused_retry_s
                if s.sent_kw is not None and command.limit_kw > s.sent_kw:
                    # A refused raise: the station keeps the limit it had, or one unanswered.
                    # (A refused lower was never counted: the old limit still is.)
                    s.granted_kw = max(s.sent_kw, s.unsure_kw)
            elif accepted is None:
                s.unsure_kw = max(s.unsure_kw, command.limit_kw)  # it may have been applied
        elif accepted is None and s.phase is Phase.STOPPING:
            s.phase = Phase.CHARGING  # unanswered: asked again at the next pass
        # A refused stop: the station has no such transaction running; its Ended is on the
        # way (a station queues them while offline), so it is not asked again.

    # -- the plan ------------------------------------------------------------------------

    def commands(
        self, now_s: float, free_bays: Iterable[Bay], *, starts: bool = True
    ) -> list[Command]:
        """What to send now: stops, then lowers, then raises and starts as far as the room
        counted allows (module docstring). ``free_bays``: EVSEs free by their status; those a
        session holds are skipped. ``starts`` False: no new transaction (a worker that has
        just started waits for its stations to report theirs first)."""
        out: list[Command] = []
        self._end_unserved(now_s)
        out.extend(self._stops(now_s))
        if starts:
            self._place(now_s, free_bays)
        if self._dirty or now_s >= self._replan_at:
            self._plan(now_s)
        room = self.capacity_kw - self.granted_kw
        raises: list[StationSession] = []
        for s in self._controllable(now_s):
            if s.phase is Phase.STARTING:
                raises.append(s)
                continue
            current = s.sent_kw if s.sent_kw is not None else s.granted_kw
            band = max(LIMIT_DEADBAND_KW, LIMIT_DEADBAND_REL * current)
            if s.target_kw < current - band or (s.sent_kw is None and s.target_kw < current):
                out.append(self._limit(s, s.target_kw))  # counted once accepted
            elif s.target_kw > current + band:
                raises.append(s)
        for s in raises:
            if s.phase is Phase.STARTING:
                # Started at what the room allows now (perhaps 0 W): raised once it charges.
                limit = _floor_w(min(s.target_kw, max(0.0, room)))
                assert s.station_id is not None
                assert s.evse_id is not None
                s.granted_kw = s.sent_kw = limit
                room -= limit
                start = Start(
                    s.key, s.station_id, s.evse_id, s.remote_start_id or 0, s.profile_id, limit
                )
                s.in_flight = start
                out.append(start)
                continue
            current = s.sent_kw if s.sent_kw is not None else s.granted_kw
            limit = _floor_w(min(s.target_kw, room + s.granted_kw))
            if limit <= current + 1e-9:
                continue  # no room yet: the lowers' answers make it
            # A raise counts from when it is sent; never less than an earlier limit the
            # station may still follow (one unanswered), until this one is accepted.
            room -= max(0.0, limit - s.granted_kw)
            s.granted_kw = max(s.granted_kw, limit)
            out.append(self._limit(s, limit))
        return out

    def _controllable(self, now_s: float) -> list[StationSession]:
        return [
            s
            for s in self._sessions.values()
            if s.phase in (Phase.STARTING, Phase.CHARGING)
            and not s.in_flight
            and s.station_id not in self.offline
            and now_s >= s.limit_after_s
            # a start not sent yet; a transaction the station has reported
            and (s.sent_kw is None if s.phase is Phase.STARTING else s.transaction_id is not None)
        ]

    def _limit(self, s: StationSession, limit_kw: float) -> Limit:
        assert s.station_id is not None
        assert s.evse_id is not None
        assert s.transaction_id
        limit = Limit(
            s.key, s.station_id, s.evse_id, s.transaction_id, s.profile_id, _floor_w(limit_kw)
        )
        s.in_flight = limit
        return limit

    def _end_unserved(self, now_s: float) -> None:
        for key in list(self._waiting):
            s = self._sessions[key]
            if s.departure_s is not None and s.departure_s <= now_s:
                self._waiting.remove(key)
                del self._sessions[key]
                s.completed_at_s, s.outcome = now_s, SessionOutcome.UNSERVED
                self._out.completed.append(s)

    def _stops(self, now_s: float) -> list[Command]:
        out: list[Command] = []
        for s in self._sessions.values():
            if (
                s.phase is not Phase.CHARGING
                or s.in_flight
                or s.transaction_id is None
                or s.station_id is None
                or s.station_id in self.offline
                or not s.demand_known
            ):
                continue
            full = s.estimated_kwh(now_s) >= s.energy_kwh - FULL_TOLERANCE_KWH
            leaving = s.departure_s is not None and s.departure_s <= now_s
            if not (full or leaving):
                continue  # the outcome is told by the Ended event's meter value
            stop = Stop(s.key, s.station_id, s.transaction_id)
            s.phase, s.in_flight, s.target_kw = Phase.STOPPING, stop, 0.0
            self._dirty = True
            out.append(stop)
        return out

    def _place(self, now_s: float, free_bays: Iterable[Bay]) -> None:
        taken = self.occupied()
        for bay in free_bays:
            if not self._waiting:
                return
            if bay in taken or bay.station_id in self.offline:
                continue
            s = self._sessions[self._waiting.pop(0)]
            s.phase, s.station_id, s.evse_id = Phase.STARTING, bay.station_id, bay.evse_id
            s.evse_max_kw = self._evse_max_kw(bay)
            s.max_power_kw = min(s.max_power_kw, s.evse_max_kw)
            s.remote_start_id = self._free_remote_id(bay.station_id, s.key)
            self._by_remote[(bay.station_id, s.remote_start_id)] = s.key
            s.profile_id = self._profile_id()
            s.sent_kw = None
            self._dirty = True

    def _free_remote_id(self, station_id: str, key: str) -> int:
        remote = remote_start_id_of(key)
        while (station_id, remote) in self._by_remote:  # 31 bits: a clash is rare, and local
            remote = remote % MAX_REMOTE_START_ID + 1
        return remote

    def _profile_id(self) -> int:
        self._next_profile = self._next_profile % (2**31 - 1) + 1
        return max(FIRST_TX_PROFILE_ID, self._next_profile)

    def _plan(self, now_s: float) -> None:
        """Targets for the sessions the worker can limit, within what the others hold."""
        self._dirty = False
        self._replan_at = now_s + self.replan_s if self.sharing.periodic else math.inf
        planned = self._controllable_or_busy()
        fixed = sum(s.granted_kw for s in self._sessions.values() if s not in planned)
        cars = [
            Car(
                key=s.key,
                max_kw=s.max_power_kw,
                remaining_kwh=max(0.0, s.energy_kwh - s.estimated_kwh(now_s)),
                departure_s=s.departure_s,
                priority=s.priority,
                arrival_s=now_s if s.started_at_s is None else min(s.started_at_s, now_s),
            )
            for s in planned
        ]
        capacity = max(0.0, self.capacity_kw - fixed)
        try:
            shares = self.sharing.share(capacity, cars, now_s)
        except RuntimeError:
            shares = Fair().share(capacity, cars, now_s)  # no plan from the solver
        for s, kw in zip(planned, shares, strict=True):
            s.target_kw = kw

    def _controllable_or_busy(self) -> list[StationSession]:
        """Sessions the plan shares among: starting and charging ones on connected stations
        (one with a command in flight keeps its place; its next command follows the plan)."""
        return [
            s
            for s in self._sessions.values()
            if s.phase in (Phase.STARTING, Phase.CHARGING) and s.station_id not in self.offline
        ]


def _floor_w(kw: float) -> float:
    """A limit in whole W, rounded down: never above what the plan gave."""
    return math.floor(max(0.0, kw) * 1000.0 + 1e-6) / 1000.0
