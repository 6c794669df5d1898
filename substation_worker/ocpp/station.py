"""One connected station: its frames in, the ``ocpp`` package's answers out.

The ``ocpp`` package validates every call and every answer against the OCPP 2.0.1 JSON schemas:
a schema-invalid call gets a CallError (FormationViolation, TypeConstraintViolation, ...), an
action without an ``@on`` handler here gets NotImplemented (a 2.0.1 action) or NotSupported
(anything else). A frame that is not an OCPP message at all (not JSON, not a list, no message
type) cannot be answered, since it has no message id: it is logged and dropped. No frame ends
the connection or touches another station.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from ocpp.exceptions import NotImplementedError as NotImplementedError_
from ocpp.exceptions import OCPPError, PropertyConstraintViolationError
from ocpp.messages import Call, MessageType, unpack
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call_result
from ocpp.v201.enums import (
    Action,
    AuthorizationStatusEnumType,
    NotifyEVChargingNeedsStatusEnumType,
    RegistrationStatusEnumType,
)
from websockets.exceptions import ConnectionClosed

from substation_worker.ocpp.registry import EvseOutOfRange, StationRegistry, UnknownStation

log = logging.getLogger(__name__)

# Seconds between the station's Heartbeats, told at boot. The WebSocket's own pings (every 20 s)
# notice a dead link sooner; the Heartbeat keeps the station's clock in step with ours.
HEARTBEAT_INTERVAL_S = 60
# Labels of the messages counter, kept bounded whatever a station sends: an action is one of
# OCPP 2.0.1's, else "unknown"; frames that are no call are "response" or "invalid".
_ACTIONS = frozenset(a.value for a in Action)
_LOGGED_FRAME_CHARS = 200

Count = Callable[[str, str], None]  # (action, result)


class StationEvents(Protocol):
    """Where a station's reports go (``csms.StationBays``); None: the listener only tracks
    connections and status."""

    def connected(self, caller: Any) -> None: ...
    def disconnected(self, caller: Any) -> None: ...
    def booted(self, caller: Any) -> None: ...
    def transaction_event(self, station_id: str, payload: dict[str, Any]) -> None: ...
    def meter_values(self, station_id: str, evse_id: int, meter_value: list[Any]) -> None: ...
    def charging_needs(self, station_id: str, evse_id: int, needs: dict[str, Any]) -> bool: ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _PackageLog(logging.LoggerAdapter[logging.Logger]):
    """The ``ocpp`` package logs every frame at INFO: here they are DEBUG. It logs each call it
    answers with a CallError with a traceback: a station's invalid call is one WARNING line (a
    station repeating it must not flood the log with tracebacks); our handler's bug keeps its
    traceback."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OCPPError):
            # The package's text holds the whole call: cut, a frame may be 256 kB.
            text = str(msg) % args if args else str(msg)
            self.warning(
                "station %s: %s: %s",
                self.extra["station"] if self.extra else "?",
                text[:_LOGGED_FRAME_CHARS],
                str(error)[:_LOGGED_FRAME_CHARS],
            )
        else:
            super().exception(msg, *args, **kwargs)


class StationHandler(ChargePoint):  # type: ignore[misc]
    """The CSMS side of one station's connection ``connection`` (a registry token)."""

    def __init__(
        self,
        station_id: str,
        websocket: Any,
        registry: StationRegistry,
        connection: int,
        count: Count,
        events: StationEvents | None = None,
        response_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(
            station_id,
            websocket,
            response_timeout=response_timeout_s,
            logger=_PackageLog(log, {"station": station_id}),
        )
        self.registry = registry
        self.connection = connection
        self.events = events
        self._count = count
        self._answered: int | None = None  # the MessageType of the answer sent
        self._calls_waiting = 0  # our calls awaiting the station's answer

    async def call(self, payload: Any, suppress: bool = True) -> Any:
        """A call to the station (``ocpp``'s), its answer routed by ``handle_frame``."""
        self._calls_waiting += 1
        try:
            return await super().call(payload, suppress=suppress)
        finally:
            self._calls_waiting -= 1

    async def handle_frame(self, raw: str | bytes) -> None:
        """Route one frame; count it by action and result (ok, call_error, dropped)."""
        if isinstance(raw, bytes):  # OCPP-J is text frames only
            self._drop(raw, "a binary frame")
            return
        try:
            message = unpack(raw)
        except OCPPError as exc:
            self._drop(raw, exc.description)
            return
        if not isinstance(message, Call):
            # An answer to a call of ours; with none waiting, ocpp's queue would only grow.
            if self._calls_waiting:
                await self.route_message(raw)
                self._count("response", "ok")
            else:
                self._count("response", "dropped")
            return
        action = message.action if message.action in _ACTIONS else "unknown"
        self._answered = None
        try:
            await self.route_message(raw)
        except ConnectionClosed:
            raise
        except Exception:  # a bug of ours or of the package: this frame only, not the link
            log.exception("station %s: %s call not handled", self.id, action)
        result = {MessageType.CallResult: "ok", MessageType.CallError: "call_error"}
        self._count(action, result.get(self._answered or 0, "dropped"))

    def _drop(self, raw: str | bytes, why: str) -> None:
        log.warning("station %s: frame dropped (%s): %r", self.id, why, raw[:_LOGGED_FRAME_CHARS])
        self._count("invalid", "dropped")

    async def _send(self, message: str) -> None:
        # The package answers each call with exactly one frame: which kind it was is the result.
        kind = int(json.loads(message)[0])
        if kind != MessageType.Call:
            self._answered = kind
        await super()._send(message)

    @on(Action.boot_notification)
    def on_boot_notification(
        self, charging_station: dict[str, Any], reason: str, **_: Any
    ) -> call_result.BootNotification:
        self.registry.boot(
            self.id,
            self.connection,
            vendor=str(charging_station.get("vendor_name", "")),
            model=str(charging_station.get("model", "")),
        )
        log.info(
            "station %s booted (%s %s, %s)",
            self.id,
            charging_station.get("vendor_name"),
            charging_station.get("model"),
            reason,
        )
        return call_result.BootNotification(
            current_time=_now(),
            interval=HEARTBEAT_INTERVAL_S,
            status=RegistrationStatusEnumType.accepted,
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)
    def on_status_notification(
        self, evse_id: int, connector_id: int, connector_status: str, **_: Any
    ) -> call_result.StatusNotification:
        try:
            self.registry.record_status(
                self.id, self.connection, evse_id, connector_id, connector_status
            )
        except (EvseOutOfRange, ValueError) as exc:
            raise PropertyConstraintViolationError(details={"cause": str(exc)}) from exc
        except UnknownStation:
            # Replaced by a newer connection of the same station: this one's report is stale.
            log.info("station %s: status on a replaced connection ignored", self.id)
        return call_result.StatusNotification()

    @after(Action.boot_notification)
    def after_boot_notification(self, **_: Any) -> None:
        if self.events is not None:
            self.events.booted(self)

    @on(Action.authorize)
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> call_result.Authorize:
        # Any driver may charge here: the substation shares power, it does not bill.
        return call_result.Authorize(id_token_info={"status": AuthorizationStatusEnumType.accepted})

    @on(Action.transaction_event)
    def on_transaction_event(self, **payload: Any) -> call_result.TransactionEvent:
        self._require_events()
        assert self.events is not None
        self.events.transaction_event(self.id, payload)
        if payload.get("id_token"):
            return call_result.TransactionEvent(
                id_token_info={"status": AuthorizationStatusEnumType.accepted}
            )
        return call_result.TransactionEvent()

    @on(Action.meter_values)
    def on_meter_values(
        self, evse_id: int, meter_value: list[Any], **_: Any
    ) -> call_result.MeterValues:
        self._require_events()
        assert self.events is not None
        self.events.meter_values(self.id, evse_id, meter_value)
        return call_result.MeterValues()

    @on(Action.notify_ev_charging_needs)
    def on_notify_ev_charging_needs(
        self, evse_id: int, charging_needs: dict[str, Any], **_: Any
    ) -> call_result.NotifyEVChargingNeeds:
        self._require_events()
        assert self.events is not None
        known = self.events.charging_needs(self.id, evse_id, charging_needs)
        status = (
            NotifyEVChargingNeedsStatusEnumType.accepted
            if known
            else NotifyEVChargingNeedsStatusEnumType.rejected
        )
        return call_result.NotifyEVChargingNeeds(status=status)

    def _require_events(self) -> None:
        if self.events is None:
            raise NotImplementedError_("this substation runs no sessions on stations")
