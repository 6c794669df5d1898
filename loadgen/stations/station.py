"""One simulated charging station: the ``ocpp`` package's own ``ocpp.v201.ChargePoint`` (the
station side) over one WebSocket, with M EVSEs of one connector each.

It boots, reports each EVSE Available, heartbeats at the interval the CSMS answered, and follows
the CSMS: RequestStartTransaction brings a car to the EVSE (the one named, else the first free
one) and starts a transaction; a TxProfile (SetChargingProfile, or the one in the start) caps
its power; RequestStopTransaction ends it. A car that holds what it came for is unplugged: its
transaction ends by itself (EVDisconnected). Energy is metered in simulated time (the clock);
message timestamps are wall-clock UTC.

Every message the station sends goes through one queue, sent in order by one task: the
package's receive loop must never wait on a call of ours (its answer comes through that same
loop), and a TransactionEvent must follow the answer that started it (``@after`` handlers).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import (
    Action,
    ChargingProfilePurposeEnumType,
    ChargingProfileStatusEnumType,
    ChargingRateUnitEnumType,
    ChargingStateEnumType,
    ConnectorStatusEnumType,
    MeasurandEnumType,
    ReadingContextEnumType,
    ReasonEnumType,
    RegistrationStatusEnumType,
    RequestStartStopStatusEnumType,
    TransactionEventEnumType,
    TriggerReasonEnumType,
)

from loadgen.stations.evse import Car, Evse, EvseStatus, Transaction

log = logging.getLogger(__name__)

CONNECTOR_ID = 1
# A limit in A becomes W at this voltage per phase (3 phases unless the period says).
VOLTS_PER_PHASE = 230.0
DEFAULT_PHASES = 3
# Heartbeat interval when the CSMS answers 0 or none, seconds.
FALLBACK_HEARTBEAT_S = 60.0
# Periodic meter reports are skipped while this many messages wait to be sent (a slow CSMS):
# they are samples, superseded by the next; transaction starts and ends are never skipped.
OUTBOX_SAMPLES_MAX = 100
# Stopping a connection's tasks takes at most CANCEL_ROUNDS x CANCEL_ROUND_S.
CANCEL_ROUNDS = 20
CANCEL_ROUND_S = 0.1


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    # The car a remote start brings: what it needs, and the most it draws.
    car_need_wh: float = 40_000.0
    car_max_w: float = 11_000.0
    meter_interval_s: float = 1.0  # wall seconds between MeterValues / TransactionEvent Updated
    tick_s: float = 0.02  # wall seconds between checks for full cars
    response_timeout_s: float = 10.0
    vendor: str = "smartgrid"
    model: str = "loadgen-sim"


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


def _meter_value(tx: Transaction, context: ReadingContextEnumType) -> list[dict[str, Any]]:
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


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them, again while one is still running: Python 3.11's
    wait_for (inside the package's ``call``) swallows a cancel that meets its answer."""
    for _ in range(CANCEL_ROUNDS):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_ROUND_S)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # seen: no "exception never retrieved" at exit


class SimStation(ChargePoint):  # type: ignore[misc]
    def __init__(
        self,
        station_id: str,
        websocket: Any,
        config: StationConfig,
        clock: Callable[[], float],
        evses: list[Evse] | None = None,
    ) -> None:
        super().__init__(station_id, websocket, response_timeout=config.response_timeout_s)
        self.config = config
        self.clock = clock
        self.evses = evses or [Evse(i, config.evse_max_w) for i in range(1, config.evses + 1)]
        self.heartbeat_s = FALLBACK_HEARTBEAT_S
        self.booted = asyncio.Event()
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        # Sent by the @after handler of the call being answered (after its answer).
        self._after_answer: list[Any] = []
        # Transaction ids: unique across connections and runs, within OCPP's 36 characters
        # whatever the station id: a random token per connection, the EVSE, a count.
        self._tx_token = secrets.token_hex(4)
        self._tx_numbers = itertools.count(1)

    # -- what the CSMS asks ---------------------------------------------------------------

    @on(Action.request_start_transaction)
    def on_request_start_transaction(
        self,
        id_token: dict[str, Any],
        remote_start_id: int,
        evse_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.RequestStartTransaction:
        evse = self._free_evse(evse_id)
        limit = None
        if charging_profile is not None:
            if charging_profile.get("charging_profile_purpose") != (
                ChargingProfilePurposeEnumType.tx_profile
            ):
                evse = None  # F01.FR.07: only a TxProfile may come with a start
            limit = profile_limit_w(charging_profile)
        if evse is None:
            return call_result.RequestStartTransaction(
                status=RequestStartStopStatusEnumType.rejected
            )
        car = Car(self.config.car_need_wh, self.config.car_max_w)
        tx_id = f"{self._tx_token}-{evse.evse_id}-{next(self._tx_numbers)}"
        tx = evse.start(tx_id, car, self.clock(), remote_start_id=remote_start_id, limit_w=limit)
        self._after_answer.append(
            call.TransactionEvent(
                event_type=TransactionEventEnumType.started,
                timestamp=now_utc(),
                trigger_reason=TriggerReasonEnumType.remote_start,
                seq_no=tx.next_seq_no(),
                transaction_info={
                    "transaction_id": tx_id,
                    "charging_state": ChargingStateEnumType.charging,
                    "remote_start_id": remote_start_id,
                },
                meter_value=_meter_value(tx, ReadingContextEnumType.transaction_begin),
                evse={"id": evse.evse_id, "connector_id": CONNECTOR_ID},
                id_token=id_token,
            )
        )
        self._after_answer.append(self._status(evse))
        return call_result.RequestStartTransaction(
            status=RequestStartStopStatusEnumType.accepted, transaction_id=tx_id
        )

    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        purpose = charging_profile.get("charging_profile_purpose")
        if purpose != ChargingProfilePurposeEnumType.tx_profile:
            # Station-wide and default profiles are taken, not applied (yet): the CSMS's
            # TxProfile is what this simulator follows.
            return call_result.SetChargingProfile(status=ChargingProfileStatusEnumType.accepted)
        evse = self._evse(evse_id)
        tx = evse.transaction if evse is not None else None
        wanted = charging_profile.get("transaction_id")
        if evse is None or tx is None or (wanted is not None and wanted != tx.transaction_id):
            # K01.FR.09: a TxProfile without its transaction is rejected.
            return call_result.SetChargingProfile(status=ChargingProfileStatusEnumType.rejected)
        evse.set_limit(profile_limit_w(charging_profile), self.clock())
        self._after_answer.append(
            self._tx_event(evse, tx, TransactionEventEnumType.updated, "charging_rate_changed")
        )
        return call_result.SetChargingProfile(status=ChargingProfileStatusEnumType.accepted)

    @on(Action.request_stop_transaction)
    def on_request_stop_transaction(
        self, transaction_id: str, **_: Any
    ) -> call_result.RequestStopTransaction:
        for evse in self.evses:
            if evse.transaction is not None and evse.transaction.transaction_id == transaction_id:
                self._after_answer.extend(self._end(evse, ReasonEnumType.remote, "remote_stop"))
                return call_result.RequestStopTransaction(
                    status=RequestStartStopStatusEnumType.accepted
                )
        return call_result.RequestStopTransaction(status=RequestStartStopStatusEnumType.rejected)

    @after(Action.request_start_transaction)
    def after_request_start_transaction(self, **_: Any) -> None:
        self._flush_after_answer()

    @after(Action.set_charging_profile)
    def after_set_charging_profile(self, **_: Any) -> None:
        self._flush_after_answer()

    @after(Action.request_stop_transaction)
    def after_request_stop_transaction(self, **_: Any) -> None:
        self._flush_after_answer()

    # -- running ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Boot, report, then heartbeat and meter until ``stop`` or the connection ends."""
        stopping = asyncio.create_task(stop.wait())
        tasks = [
            asyncio.create_task(self.start(), name=f"{self.id}-read"),
            asyncio.create_task(self._serve(stop), name=f"{self.id}-serve"),
        ]
        try:
            done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            await cancel_all([stopping, *tasks])

    async def _serve(self, stop: asyncio.Event) -> None:
        await self._boot(stop)
        for evse in self.evses:
            self._outbox.put_nowait(self._status(evse))
        await asyncio.gather(self._send_loop(), self._heartbeat_loop(), self._meter_loop())

    async def _boot(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            answer = await self.call(
                call.BootNotification(
                    charging_station={
                        "model": self.config.model,
                        "vendor_name": self.config.vendor,
                    },
                    reason="PowerUp",
                )
            )
            interval = float(answer.interval) if answer is not None else 0.0
            self.heartbeat_s = interval if interval > 0 else FALLBACK_HEARTBEAT_S
            if answer is not None and answer.status == RegistrationStatusEnumType.accepted:
                self.booted.set()
                return
            # B02/B03: Pending or Rejected: boot again after the interval.
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.heartbeat_s)

    async def _send_loop(self) -> None:
        while True:
            payload = await self._outbox.get()
            try:
                await self.call(payload)
            except TimeoutError:
                log.warning("station %s: no answer to %s", self.id, type(payload).__name__)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self._outbox.put_nowait(call.Heartbeat())

    async def _meter_loop(self) -> None:
        next_report = time.monotonic() + self.config.meter_interval_s
        while True:
            await asyncio.sleep(self.config.tick_s)
            now = self.clock()
            for evse in self.evses:
                if evse.advance(now):
                    # The car is full: its driver unplugs it.
                    for msg in self._end(
                        evse, ReasonEnumType.ev_disconnected, "ev_communication_lost"
                    ):
                        self._outbox.put_nowait(msg)
            if time.monotonic() >= next_report:
                next_report += self.config.meter_interval_s
                self._report_meters()

    def _report_meters(self) -> None:
        if self._outbox.qsize() >= OUTBOX_SAMPLES_MAX:
            return
        for evse in self.evses:
            tx = evse.transaction
            if tx is None:
                continue
            self._outbox.put_nowait(
                call.MeterValues(
                    evse_id=evse.evse_id,
                    meter_value=_meter_value(tx, ReadingContextEnumType.sample_periodic),
                )
            )
            self._outbox.put_nowait(
                self._tx_event(evse, tx, TransactionEventEnumType.updated, "meter_value_periodic")
            )

    # -- helpers ------------------------------------------------------------------------

    def _flush_after_answer(self) -> None:
        for msg in self._after_answer:
            self._outbox.put_nowait(msg)
        self._after_answer.clear()

    def _evse(self, evse_id: int | None) -> Evse | None:
        return next((e for e in self.evses if e.evse_id == evse_id), None)

    def _free_evse(self, evse_id: int | None) -> Evse | None:
        if evse_id is None:
            return next((e for e in self.evses if e.status is EvseStatus.AVAILABLE), None)
        evse = self._evse(evse_id)
        return evse if evse is not None and evse.status is EvseStatus.AVAILABLE else None

    def _status(self, evse: Evse) -> call.StatusNotification:
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

    def _tx_event(
        self,
        evse: Evse,
        tx: Transaction,
        event_type: TransactionEventEnumType,
        trigger: str,
        stopped_reason: ReasonEnumType | None = None,
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
            else ReadingContextEnumType.sample_periodic
        )
        if trigger == "charging_rate_changed":
            context = ReadingContextEnumType.trigger
        return call.TransactionEvent(
            event_type=event_type,
            timestamp=now_utc(),
            trigger_reason=TriggerReasonEnumType[trigger],
            seq_no=tx.next_seq_no(),
            transaction_info=info,
            meter_value=_meter_value(tx, context),
            evse={"id": evse.evse_id, "connector_id": CONNECTOR_ID},
        )

    def _end(self, evse: Evse, reason: ReasonEnumType, trigger: str) -> list[Any]:
        """End the EVSE's transaction now: its TransactionEvent Ended, then Available."""
        tx = evse.stop(self.clock())
        if tx is None:
            return []
        return [
            self._tx_event(evse, tx, TransactionEventEnumType.ended, trigger, reason),
            self._status(evse),
        ]
