"""A simulated station's state that outlives its connections: its EVSEs and cars, the profiles
it was given, the log of its limits, and its outbox (TransactionEvents kept while offline).
The OCPP side (``station.SimStation``, one per connection) acts on it.

Station max (ChargingStationMaxProfile): when the sum of what the cars want (each min(limit,
EVSE max, car max)) exceeds it, every car draws the same share of what it wants, so the sum is
the station max.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp.v201 import call
from ocpp.v201.enums import (
    ChargingProfilePurposeEnumType,
    ChargingRateUnitEnumType,
    ChargingStateEnumType,
    ConnectorStatusEnumType,
    IdTokenEnumType,
    MeasurandEnumType,
    ReadingContextEnumType,
    ReasonEnumType,
    TransactionEventEnumType,
    TriggerReasonEnumType,
)

from loadgen.stations.evse import Car, Evse, EvseStatus, Transaction
from loadgen.stations.limits import STATION, LimitLog
from loadgen.stations.walkins import WalkInCar, charging_needs

CONNECTOR_ID = 1
# A limit in A becomes W at this voltage per phase (3 phases unless the period says).
VOLTS_PER_PHASE = 230.0
DEFAULT_PHASES = 3
# TransactionEvents kept while offline (E04); beyond, the oldest periodic sample goes first.
OUTBOX_OFFLINE_MAX = 1000


def now_utc(after_s: float = 0.0) -> str:
    at = datetime.now(UTC) + timedelta(seconds=after_s)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SimClock:
    """Simulated seconds since the clock was made: wall seconds x ``time_scale``."""

    def __init__(self, time_scale: float, wall: Callable[[], float] = time.monotonic) -> None:
        self.time_scale = time_scale
        self._wall = wall
        self._t0 = wall()

    def __call__(self) -> float:
        return (self._wall() - self._t0) * self.time_scale


@dataclass(frozen=True)
class StationConfig:
    evses: int = 2
    evse_max_w: float = 22_000.0
    # The car a remote start brings: what it needs (large: the CSMS, which knows the request's
    # energy, stops it), and the most it draws.
    car_need_wh: float = 100_000.0
    car_max_w: float = 11_000.0
    meter_interval_s: float = 1.0  # wall seconds between MeterValues / TransactionEvent Updated
    tick_s: float = 0.02  # wall seconds between checks for full cars and departures
    response_timeout_s: float = 10.0
    vendor: str = "smartgrid"
    model: str = "loadgen-sim"
    # HTTP Basic (security profiles 1 and 2), the user being the station id; never in a repr.
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None  # for wss://


def profile_limit_w(profile: dict[str, Any]) -> float | None:
    """The first period's limit of a (snake_case) charging profile, in W; None if it has none.
    Later periods are not followed: the CSMS replaces the whole profile when the limit moves."""
    for schedule in profile.get("charging_schedule", []):
        for period in schedule.get("charging_schedule_period", []):
            limit = float(period["limit"])
            if schedule.get("charging_rate_unit") == ChargingRateUnitEnumType.amps:
                limit *= VOLTS_PER_PHASE * int(period.get("number_phases", DEFAULT_PHASES))
            return limit
    return None


def meter_value(tx: Transaction, context: ReadingContextEnumType) -> list[dict[str, Any]]:
    return [
        {
            "timestamp": now_utc(),
            "sampled_value": [
                {
                    "value": round(tx.meter.energy_wh, 3),
                    "context": context,
                    "measurand": MeasurandEnumType.energy_active_import_register,
                    "unit_of_measure": {"unit": "Wh"},
                },
                {
                    "value": round(tx.meter.power_w, 3),
                    "context": context,
                    "measurand": MeasurandEnumType.power_active_import,
                    "unit_of_measure": {"unit": "W"},
                },
            ],
        }
    ]


def status_notification(evse: Evse) -> call.StatusNotification:
    status = (
        ConnectorStatusEnumType.available
        if evse.status is EvseStatus.AVAILABLE
        else ConnectorStatusEnumType.occupied
    )
    return call.StatusNotification(
        timestamp=now_utc(),
        connector_status=status,
        evse_id=evse.evse_id,
        connector_id=CONNECTOR_ID,
    )


_CONTEXTS = {
    TriggerReasonEnumType.charging_rate_changed: ReadingContextEnumType.trigger,
    TriggerReasonEnumType.trigger: ReadingContextEnumType.trigger,
    TriggerReasonEnumType.remote_start: ReadingContextEnumType.transaction_begin,
    TriggerReasonEnumType.cable_plugged_in: ReadingContextEnumType.transaction_begin,
}


def transaction_event(
    evse: Evse,
    tx: Transaction,
    event_type: TransactionEventEnumType,
    trigger: TriggerReasonEnumType,
    stopped_reason: ReasonEnumType | None = None,
    with_id_token: bool = False,
) -> call.TransactionEvent:
    ended = event_type == TransactionEventEnumType.ended
    info: dict[str, Any] = {
        "transaction_id": tx.transaction_id,
        "charging_state": (
            ChargingStateEnumType.charging
            if tx.meter.power_w > 0
            else ChargingStateEnumType.suspended_evse
            if not tx.meter.full
            else ChargingStateEnumType.suspended_ev
        ),
    }
    if ended:
        info["charging_state"] = ChargingStateEnumType.idle
        info["stopped_reason"] = stopped_reason
    if tx.remote_start_id is not None:
        info["remote_start_id"] = tx.remote_start_id
    context = (
        ReadingContextEnumType.transaction_end
        if ended
        else _CONTEXTS.get(trigger, ReadingContextEnumType.sample_periodic)
    )
    return call.TransactionEvent(
        event_type=event_type,
        timestamp=now_utc(),
        trigger_reason=trigger,
        seq_no=tx.next_seq_no(),
        transaction_info=info,
        meter_value=meter_value(tx, context),
        evse={"id": evse.evse_id, "connector_id": CONNECTOR_ID},
        id_token=tx.id_token if with_id_token else None,
    )


def _periodic(msg: Any) -> bool:
    return (
        isinstance(msg, call.TransactionEvent)
        and msg.trigger_reason == TriggerReasonEnumType.meter_value_periodic
    )


class Outbox:
    """What the station sends, in order, one at a time. Online everything is queued; offline
    only TransactionEvents (marked ``offline``), at most ``offline_max`` of them, and the rest is
    dropped (E04: MeterValues and status may be). The message being sent stays at the head until
    answered, so one cut off by a disconnection is sent again."""

    def __init__(self, offline_max: int = OUTBOX_OFFLINE_MAX) -> None:
        self.offline_max = offline_max
        self.online = False
        self.dropped = 0
        self._items: deque[Any] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[Any]:
        return list(self._items)

    def put(self, msg: Any) -> None:
        if not self.online:
            if not isinstance(msg, call.TransactionEvent):
                self.dropped += 1
                return
            msg = replace(msg, offline=True)
            if len(self._items) >= self.offline_max:
                self._drop_one()
        self._items.append(msg)
        self._ready.set()

    def _drop_one(self) -> None:
        victim = next((m for m in self._items if _periodic(m)), self._items[0])
        self._items.remove(victim)
        self.dropped += 1

    def go_offline(self) -> None:
        self.online = False
        tx_events = [m for m in self._items if isinstance(m, call.TransactionEvent)]
        kept = [replace(m, offline=True) for m in tx_events]
        self.dropped += len(self._items) - len(kept)
        self._items = deque(kept)
        while len(self._items) > self.offline_max:
            self._drop_one()

    def go_online(self, first: list[Any]) -> None:
        """Online again: ``first`` (the statuses), then what was kept."""
        self._items.extendleft(reversed(first))
        self.online = True
        self._ready.set()

    async def head(self) -> Any:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items[0]

    def sent(self, msg: Any) -> None:
        if self._items and self._items[0] is msg:
            self._items.popleft()


@dataclass(frozen=True)
class StoredProfile:
    profile_id: int
    stack_level: int
    limit_w: float | None


class StationState:
    def __init__(
        self,
        station_id: str,
        config: StationConfig,
        evses: list[Evse] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.station_id = station_id
        self.config = config
        self.clock: Callable[[], float] = clock or SimClock(1.0)
        self.evses = evses or [Evse(i, config.evse_max_w) for i in range(1, config.evses + 1)]
        self.station_max: StoredProfile | None = None
        self.tx_defaults: dict[int, StoredProfile] = {}  # evse id (0: every EVSE): profile
        self.limits = LimitLog(station_id, {e.evse_id: e.max_w for e in self.evses})
        self.outbox = Outbox()
        # Transaction ids: unique across connections and runs, within OCPP's 36 characters
        # whatever the station id: a random token per station, the EVSE, a count.
        self._tx_token = secrets.token_hex(4)
        self._tx_numbers = itertools.count(1)

    # -- lookups --------------------------------------------------------------------------

    def evse(self, evse_id: int | None) -> Evse | None:
        return next((e for e in self.evses if e.evse_id == evse_id), None)

    def free_evse(self, evse_id: int | None = None) -> Evse | None:
        if evse_id is None:
            return next((e for e in self.evses if e.status is EvseStatus.AVAILABLE), None)
        evse = self.evse(evse_id)
        return evse if evse is not None and evse.status is EvseStatus.AVAILABLE else None

    def metered_wh(self, transaction_id: str) -> float | None:
        """Wh metered by an ended transaction (the last 10 000 per EVSE); None if unknown."""
        for evse in self.evses:
            if transaction_id in evse.ended:
                return evse.ended[transaction_id]
        return None

    def ended_transactions(self) -> dict[str, float]:
        return {tx: wh for evse in self.evses for tx, wh in evse.ended.items()}

    # -- cars -----------------------------------------------------------------------------

    def start(
        self,
        evse: Evse,
        car: Car,
        trigger: TriggerReasonEnumType,
        id_token: dict[str, Any],
        remote_start_id: int | None = None,
        limit_w: float | None = None,
        departure_s: float | None = None,
    ) -> tuple[Transaction, call.TransactionEvent]:
        """Start a transaction on the free ``evse``: it and its TransactionEvent Started."""
        tx_id = f"{self._tx_token}-{evse.evse_id}-{next(self._tx_numbers)}"
        now = self.clock()
        tx = evse.start(
            tx_id,
            car,
            now,
            remote_start_id=remote_start_id,
            limit_w=limit_w,
            id_token=id_token,
            departure_s=departure_s,
        )
        self.rebalance(now)
        started = transaction_event(
            evse, tx, TransactionEventEnumType.started, trigger, with_id_token=True
        )
        return tx, started

    def walk_in(self, evse: Evse, car: WalkInCar) -> Transaction:
        """A car plugs into the free ``evse``: Occupied, Started, NotifyEVChargingNeeds."""
        now = self.clock()
        time_scale = getattr(self.clock, "time_scale", 1.0)
        token = {"id_token": f"walkin-{car.number}", "type": IdTokenEnumType.local}
        tx, started = self.start(
            evse,
            Car(car.need_wh, car.max_w),
            TriggerReasonEnumType.cable_plugged_in,
            token,
            departure_s=now + car.parking_s,
        )
        self.outbox.put(status_notification(evse))
        self.outbox.put(started)
        self.outbox.put(
            call.NotifyEVChargingNeeds(
                evse_id=evse.evse_id,
                charging_needs=charging_needs(car, now_utc(car.parking_s / time_scale)),
            )
        )
        return tx

    def end(
        self, evse: Evse, reason: ReasonEnumType, trigger: TriggerReasonEnumType, at_s: float
    ) -> list[Any]:
        """End the EVSE's transaction at ``at_s``: its TransactionEvent Ended, then Available."""
        tx = evse.stop(at_s)
        if tx is None:
            return []
        self.rebalance(max(at_s, self.clock()))
        return [
            transaction_event(evse, tx, TransactionEventEnumType.ended, trigger, reason),
            status_notification(evse),
        ]

    def tick(self) -> None:
        """Meter up to now; the driver of a full car unplugs it, and one leaves at departure."""
        now = self.clock()
        for evse in self.evses:
            tx = evse.transaction
            if tx is None:
                continue
            leaves = tx.departure_s is not None and now >= tx.departure_s
            # Metered up to the departure at most: a car full before it ends as full.
            full = evse.advance(min(now, tx.departure_s) if tx.departure_s is not None else now)
            if leaves and not full and tx.departure_s is not None:
                msgs = self.end(
                    evse,
                    ReasonEnumType.ev_disconnected,
                    TriggerReasonEnumType.ev_departed,
                    tx.departure_s,
                )
            elif full:
                msgs = self.end(
                    evse,
                    ReasonEnumType.ev_disconnected,
                    TriggerReasonEnumType.ev_communication_lost,
                    now,
                )
            else:
                continue
            for msg in msgs:
                self.outbox.put(msg)

    # -- limits ---------------------------------------------------------------------------

    def rebalance(self, at_s: float) -> None:
        """Every car draws the same share of what it wants, so their sum stays within the
        station max; then the log of limits is brought up to date."""
        share = 1.0
        if self.station_max is not None and self.station_max.limit_w is not None:
            wanted = sum(e.wanted_w() for e in self.evses)
            if wanted > self.station_max.limit_w:
                share = max(0.0, self.station_max.limit_w) / wanted
        for evse in self.evses:
            evse.draw(at_s, share)
        self.record_limits()

    def record_limits(self) -> None:
        at = time.monotonic()
        self.limits.record(
            STATION, None if self.station_max is None else self.station_max.limit_w, at
        )
        for evse in self.evses:
            self.limits.record(evse.evse_id, evse.limit_w, at)

    def set_tx_limit(self, evse: Evse, limit_w: float | None) -> None:
        evse.set_limit(limit_w, self.clock())
        self.rebalance(self.clock())

    def set_station_max(self, profile: StoredProfile | None) -> None:
        self.station_max = profile
        self.rebalance(self.clock())

    def set_tx_default(self, evse_id: int, profile: StoredProfile | None) -> None:
        if profile is None:
            self.tx_defaults.pop(evse_id, None)
        else:
            self.tx_defaults[evse_id] = profile
        for evse in self.evses:
            default = self.tx_defaults.get(evse.evse_id, self.tx_defaults.get(0))
            evse.default_limit_w = None if default is None else default.limit_w
        self.rebalance(self.clock())

    def clear_profiles(
        self,
        profile_id: int | None,
        evse_id: int | None,
        purpose: str | None,
        stack_level: int | None,
    ) -> bool:
        """ClearChargingProfile (K10): by id, or by every criterion given; True if any went."""

        def matches(p: StoredProfile, p_purpose: str, p_evse: int) -> bool:
            if profile_id is not None:
                return p.profile_id == profile_id
            return (
                (purpose is None or purpose == p_purpose)
                and (evse_id is None or evse_id == p_evse)
                and (stack_level is None or stack_level == p.stack_level)
            )

        cleared = False
        if self.station_max is not None and matches(
            self.station_max, ChargingProfilePurposeEnumType.charging_station_max_profile, 0
        ):
            self.station_max = None
            cleared = True
        for evse_id_, p in list(self.tx_defaults.items()):
            if matches(p, ChargingProfilePurposeEnumType.tx_default_profile, evse_id_):
                self.set_tx_default(evse_id_, None)
                cleared = True
        if cleared:
            self.rebalance(self.clock())
        return cleared
