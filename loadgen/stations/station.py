"""One simulated charging station's connection: the ``ocpp`` package's own
``ocpp.v201.ChargePoint`` (the station side) over one WebSocket, acting on the station's
``StationState`` (its EVSEs, profiles and outbox, which outlive the connection).

It boots, reports each EVSE, sends what was kept while offline, heartbeats at the interval the
CSMS answered, and follows the CSMS: RequestStartTransaction brings a car to the EVSE (the one
named, else the first free one) and starts a transaction; a TxProfile (SetChargingProfile, or
the one in the start) caps its power, a TxDefaultProfile caps a transaction without its own, a
ChargingStationMaxProfile caps the station's sum; RequestStopTransaction ends it; TriggerMessage
sends the transactions or statuses again. Energy is metered in simulated time (the clock);
message timestamps are wall-clock UTC.

Every message the station sends goes through the outbox, sent in order by one task: the
package's receive loop must never wait on a call of ours (its answer comes through that same
loop), and a TransactionEvent must follow the answer that started it (``@after`` handlers).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any

from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import (
    Action,
    ChargingProfilePurposeEnumType,
    ChargingProfileStatusEnumType,
    ClearChargingProfileStatusEnumType,
    MessageTriggerEnumType,
    ReadingContextEnumType,
    ReasonEnumType,
    RegistrationStatusEnumType,
    RequestStartStopStatusEnumType,
    TransactionEventEnumType,
    TriggerMessageStatusEnumType,
    TriggerReasonEnumType,
)

from loadgen.stations.evse import Car
from loadgen.stations.state import (
    SimClock,
    StationConfig,
    StationState,
    StoredProfile,
    meter_value,
    now_utc,
    profile_limit_w,
    status_notification,
    transaction_event,
)

__all__ = [
    "SimClock",
    "SimStation",
    "StationConfig",
    "StationState",
    "cancel_all",
    "now_utc",
    "profile_limit_w",
]

log = logging.getLogger(__name__)

# Heartbeat interval when the CSMS answers 0 or none, seconds.
FALLBACK_HEARTBEAT_S = 60.0
# Periodic meter reports are skipped while this many messages wait to be sent (a slow CSMS):
# they are samples, superseded by the next; transaction starts and ends are never skipped.
OUTBOX_SAMPLES_MAX = 100
# Stopping a connection's tasks takes at most CANCEL_ROUNDS x CANCEL_ROUND_S.
CANCEL_ROUNDS = 20
CANCEL_ROUND_S = 0.1


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


def _stored(profile: dict[str, Any]) -> StoredProfile:
    return StoredProfile(
        int(profile.get("id", 0)), int(profile.get("stack_level", 0)), profile_limit_w(profile)
    )


class SimStation(ChargePoint):  # type: ignore[misc]
    def __init__(self, state: StationState, websocket: Any) -> None:
        super().__init__(
            state.station_id, websocket, response_timeout=state.config.response_timeout_s
        )
        self.state = state
        self.config = state.config
        self.evses = state.evses
        self.heartbeat_s = FALLBACK_HEARTBEAT_S
        self.booted = asyncio.Event()
        # Sent by the @after handler of the call being answered (after its answer).
        self._after_answer: list[Any] = []

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
        evse = self.state.free_evse(evse_id)
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
        tx, started = self.state.start(
            evse,
            Car(self.config.car_need_wh, self.config.car_max_w),
            TriggerReasonEnumType.remote_start,
            id_token,
            remote_start_id=remote_start_id,
            limit_w=limit,
        )
        self._after_answer += [started, status_notification(evse)]
        return call_result.RequestStartTransaction(
            status=RequestStartStopStatusEnumType.accepted, transaction_id=tx.transaction_id
        )

    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        purpose = charging_profile.get("charging_profile_purpose")
        rejected = call_result.SetChargingProfile(status=ChargingProfileStatusEnumType.rejected)
        accepted = call_result.SetChargingProfile(status=ChargingProfileStatusEnumType.accepted)
        if purpose == ChargingProfilePurposeEnumType.charging_station_max_profile:
            if evse_id != 0:
                return rejected  # K01.FR.38: a station max is for evse 0
            self.state.set_station_max(_stored(charging_profile))
            return accepted
        if purpose == ChargingProfilePurposeEnumType.tx_default_profile:
            if evse_id != 0 and self.state.evse(evse_id) is None:
                return rejected
            self.state.set_tx_default(evse_id, _stored(charging_profile))
            return accepted
        if purpose != ChargingProfilePurposeEnumType.tx_profile:
            return rejected
        evse = self.state.evse(evse_id)
        tx = evse.transaction if evse is not None else None
        wanted = charging_profile.get("transaction_id")
        if evse is None or tx is None or (wanted is not None and wanted != tx.transaction_id):
            return rejected  # K01.FR.09: a TxProfile without its transaction
        self.state.set_tx_limit(evse, profile_limit_w(charging_profile))
        self._after_answer.append(
            transaction_event(
                evse,
                tx,
                TransactionEventEnumType.updated,
                TriggerReasonEnumType.charging_rate_changed,
            )
        )
        return accepted

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        criteria = charging_profile_criteria or {}
        cleared = self.state.clear_profiles(
            charging_profile_id,
            criteria.get("evse_id"),
            criteria.get("charging_profile_purpose"),
            criteria.get("stack_level"),
        )
        return call_result.ClearChargingProfile(
            status=ClearChargingProfileStatusEnumType.accepted
            if cleared
            else ClearChargingProfileStatusEnumType.unknown
        )

    @on(Action.request_stop_transaction)
    def on_request_stop_transaction(
        self, transaction_id: str, **_: Any
    ) -> call_result.RequestStopTransaction:
        for evse in self.evses:
            if evse.transaction is not None and evse.transaction.transaction_id == transaction_id:
                self._after_answer += self.state.end(
                    evse,
                    ReasonEnumType.remote,
                    TriggerReasonEnumType.remote_stop,
                    self.state.clock(),
                )
                return call_result.RequestStopTransaction(
                    status=RequestStartStopStatusEnumType.accepted
                )
        return call_result.RequestStopTransaction(status=RequestStartStopStatusEnumType.rejected)

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        """F06: TransactionEvent, StatusNotification, MeterValues and Heartbeat are sent again;
        BootNotification is Rejected once accepted (F06.FR.17); the rest NotImplemented."""
        evses = self.evses
        if evse is not None:
            one = self.state.evse(evse.get("id"))
            if one is None:
                return call_result.TriggerMessage(status=TriggerMessageStatusEnumType.rejected)
            evses = [one]
        ongoing = [(e, e.transaction) for e in evses if e.transaction is not None]
        msgs: list[Any]
        if requested_message == MessageTriggerEnumType.transaction_event:
            msgs = [
                transaction_event(
                    e,
                    tx,
                    TransactionEventEnumType.updated,
                    TriggerReasonEnumType.trigger,
                    with_id_token=True,
                )
                for e, tx in ongoing
            ]
        elif requested_message == MessageTriggerEnumType.meter_values:
            msgs = [
                call.MeterValues(
                    evse_id=e.evse_id, meter_value=meter_value(tx, ReadingContextEnumType.trigger)
                )
                for e, tx in ongoing
            ]
        elif requested_message == MessageTriggerEnumType.status_notification:
            msgs = [status_notification(e) for e in evses]
        elif requested_message == MessageTriggerEnumType.heartbeat:
            msgs = [call.Heartbeat()]
        elif requested_message == MessageTriggerEnumType.boot_notification:
            return call_result.TriggerMessage(status=TriggerMessageStatusEnumType.rejected)
        else:
            return call_result.TriggerMessage(status=TriggerMessageStatusEnumType.not_implemented)
        self._after_answer += msgs
        return call_result.TriggerMessage(status=TriggerMessageStatusEnumType.accepted)

    @after(Action.request_start_transaction)
    def after_request_start_transaction(self, **_: Any) -> None:
        self._flush_after_answer()

    @after(Action.set_charging_profile)
    def after_set_charging_profile(self, **_: Any) -> None:
        self._flush_after_answer()

    @after(Action.request_stop_transaction)
    def after_request_stop_transaction(self, **_: Any) -> None:
        self._flush_after_answer()

    @after(Action.trigger_message)
    def after_trigger_message(self, **_: Any) -> None:
        self._flush_after_answer()

    # -- running ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Boot, report, then heartbeat and meter until ``stop`` or the connection ends; the
        outbox then keeps only its TransactionEvents (offline)."""
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
            # After the send loop ended: a message it just had answered must not be kept.
            await cancel_all([stopping, *tasks])
            self.state.outbox.go_offline()

    async def _serve(self, stop: asyncio.Event) -> None:
        await self._boot(stop)
        # Online: each EVSE's status, then the TransactionEvents kept while offline.
        self.state.outbox.go_online([status_notification(e) for e in self.evses])
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
        outbox = self.state.outbox
        while True:
            payload = await outbox.head()
            try:
                await self.call(payload)
            except TimeoutError:
                log.warning("station %s: no answer to %s", self.id, type(payload).__name__)
            outbox.sent(payload)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self.state.outbox.put(call.Heartbeat())

    async def _meter_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.meter_interval_s)
            self._report_meters()

    def _report_meters(self) -> None:
        if len(self.state.outbox) >= OUTBOX_SAMPLES_MAX:
            return
        for evse in self.evses:
            tx = evse.transaction
            if tx is None:
                continue
            self.state.outbox.put(
                call.MeterValues(
                    evse_id=evse.evse_id,
                    meter_value=meter_value(tx, ReadingContextEnumType.sample_periodic),
                )
            )
            self.state.outbox.put(
                transaction_event(
                    evse,
                    tx,
                    TransactionEventEnumType.updated,
                    TriggerReasonEnumType.meter_value_periodic,
                )
            )

    # -- helpers ------------------------------------------------------------------------

    def _flush_after_answer(self) -> None:
        """Queue what follows the answer just sent. An Updated event made for a transaction
        that ended meanwhile (its car filled up while the answer went out) is dropped: a
        station never reports a transaction after its Ended."""
        running = {e.transaction.transaction_id for e in self.state.evses if e.transaction}
        for msg in self._after_answer:
            if (
                isinstance(msg, call.TransactionEvent)
                and msg.event_type == TransactionEventEnumType.updated
                and msg.transaction_info["transaction_id"] not in running
            ):
                continue
            self.state.outbox.put(msg)
        self._after_answer.clear()
