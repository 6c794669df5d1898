"""The substation's bays when real stations serve them: ``StationSessions`` driven by what the
stations report, its commands sent to them (docs/ocpp.md).

``StationBays`` has the surface the worker's service uses of the simulation (offer, advance,
the load and the counts), so the service runs the same delivery rules over either. Its clock is
the wall clock times the time scale: the stations meter in real (or their simulated) time, and
``advance`` only collects what they reported since the last call; the step it is given is not
used.

Calls to a station go out from tasks, never from inside a handler of that station's messages:
the answer to a call comes through the same receive loop the handler runs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from ocpp.v201 import call
from ocpp.v201.enums import (
    ChargingProfileKindEnumType,
    ChargingProfilePurposeEnumType,
    ChargingRateUnitEnumType,
    MessageTriggerEnumType,
)
from websockets.exceptions import ConnectionClosed

from substation_worker.metrics import OcppMetrics
from substation_worker.ocpp.registry import StationRegistry
from substation_worker.ocpp.sessions import (
    DEFAULT_LIMIT_KW,
    Command,
    Limit,
    Reading,
    Start,
    StationSession,
    StationSessions,
    Stop,
)
from substation_worker.simulation import ChargingSession, PredictedRelease, Step

log = logging.getLogger(__name__)

# Station-wide profiles sent at boot; TxProfiles use ids from sessions.FIRST_TX_PROFILE_ID.
TX_DEFAULT_PROFILE_ID = 1
STATION_MAX_PROFILE_ID = 2
ACCEPTED = "Accepted"
# After a station answers the TriggerMessage, its TransactionEvents come within this long (wall
# seconds); then a start it never reported did not happen (``StationSessions.station_back``).
TRIGGER_GRACE_S = 1.0
# A pump is timed for the next car due (full, leaving) when that is within MAX_WAKE_S wall
# seconds (later ones: the service's tick pumps anyway), never sooner than MIN_WAKE_S apart.
MIN_WAKE_S = 0.005
MAX_WAKE_S = 0.2


class Caller(Protocol):
    """A station's connection, as far as the worker sends it calls (``StationHandler``)."""

    id: str

    async def call(self, payload: Any, suppress: bool = True) -> Any: ...


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def schedule(limit_kw: float) -> list[dict[str, Any]]:
    """A one-period schedule at ``limit_kw``, in W, from now."""
    return [
        {
            "id": 1,
            "start_schedule": now_iso(),
            "charging_rate_unit": ChargingRateUnitEnumType.watts,
            "charging_schedule_period": [{"start_period": 0, "limit": round(limit_kw * 1000, 1)}],
        }
    ]


def tx_profile(profile_id: int, limit_kw: float, transaction_id: str | None) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "id": profile_id,
        "stack_level": 0,
        "charging_profile_purpose": ChargingProfilePurposeEnumType.tx_profile,
        "charging_profile_kind": ChargingProfileKindEnumType.absolute,
        "charging_schedule": schedule(limit_kw),
    }
    if transaction_id is not None:
        profile["transaction_id"] = transaction_id
    return profile


def station_profile(profile_id: int, purpose: str, limit_kw: float) -> dict[str, Any]:
    return {
        "id": profile_id,
        "stack_level": 0,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": ChargingProfileKindEnumType.absolute,
        "charging_schedule": schedule(limit_kw),
    }


def reading_of(meter_value: list[dict[str, Any]] | None) -> Reading:
    """The last energy register (Wh) and total power (W) in an OCPP ``meterValue`` list.

    A sampled value without a measurand is the energy register (OCPP's default); a value for one
    phase is skipped (the total is what counts); kWh and kW, and a unit's multiplier, are
    converted."""
    reading = Reading()
    for mv in meter_value or []:
        for sv in mv.get("sampled_value", []):
            if sv.get("phase"):
                continue
            measurand = sv.get("measurand", "Energy.Active.Import.Register")
            unit = sv.get("unit_of_measure") or {}
            scale = 10.0 ** int(unit.get("multiplier", 0))
            try:
                value = float(sv["value"]) * scale
            except (KeyError, TypeError, ValueError):
                continue
            if measurand == "Energy.Active.Import.Register":
                reading.energy_wh = value * (1000.0 if unit.get("unit") == "kWh" else 1.0)
            elif measurand == "Power.Active.Import":
                reading.power_w = value * (1000.0 if unit.get("unit") == "kW" else 1.0)
    return reading


class StationBays:
    """The bays of a substation whose EVSEs are real stations' (module docstring)."""

    def __init__(
        self,
        sessions: StationSessions,
        registry: StationRegistry,
        *,
        time_scale: float,
        charger_max_kw: float,
        settle_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: OcppMetrics | None = None,
    ) -> None:
        self.book = sessions
        self._metrics = metrics
        self.registry = registry
        self.time_scale = time_scale
        self.charger_max_kw = charger_max_kw
        self._clock = clock
        self._t0 = clock()
        # No new transaction before this (wall clock): after a restart the stations reconnect
        # and report the transactions they run first, so that none is started twice.
        self._starts_from = self._t0 + settle_s
        self._callers: dict[str, Caller] = {}
        # Stations that accepted the TxDefaultProfile on their current connection: a car that
        # plugs in there draws DEFAULT_LIMIT_KW until the worker limits it.
        self._defaulted: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._due: asyncio.TimerHandle | None = None
        self.profile_updates = 0

    # -- the surface the service uses (as the simulation's) ------------------------------

    @property
    def now_s(self) -> float:
        return (self._clock() - self._t0) * self.time_scale

    @property
    def capacity_kw(self) -> float:
        return self.book.capacity_kw

    @property
    def bays(self) -> int:
        """EVSEs of the stations booted, and those held by disconnected stations' cars."""
        evses = sum(len(s.evses) for s in self.registry.stations() if s.booted)
        offline = sum(1 for s in self.book.sessions() if s.station_id in self.book.offline)
        return max(1, evses + offline)

    @property
    def load_kw(self) -> float:
        return self.book.load_kw

    @property
    def committed_kw(self) -> float:
        return self.book.committed_kw(self.now_s)

    @property
    def active_count(self) -> int:
        return self.book.active_count

    @property
    def waiting_count(self) -> int:
        return self.book.waiting_count

    def holds(self, key: str) -> bool:
        return self.book.holds(key)

    def offer(
        self,
        key: str,
        energy_kwh: float,
        max_power_kw: float,
        *,
        departure_s: float | None = None,
        priority: int = 0,
    ) -> StationSession:
        session = self.book.offer(
            key,
            energy_kwh,
            min(max_power_kw, self.charger_max_kw),
            self.now_s,
            departure_s=departure_s,
            priority=priority,
        )
        self.pump()
        return session

    def learn_demand(
        self,
        key: str,
        energy_kwh: float,
        max_power_kw: float,
        *,
        departure_s: float | None,
        priority: int = 0,
    ) -> None:
        session = self.book.session(key)
        if session is not None and not session.demand_known:
            self.book.learn_demand(
                key, energy_kwh, max_power_kw, departure_s=departure_s, priority=priority
            )
            self.pump()

    def advance(self, sim_dt_s: float) -> Step:
        self.pump()
        self._observe()
        return self.book.take_events()

    def _observe(self) -> None:
        """The metrics' gauges from the book and the registry (docs/ocpp.md, Metrics). An EVSE
        holding a session is charging (offline if its station is disconnected), whatever its
        status says; the booted stations' other EVSEs are free or unavailable."""
        if self._metrics is None:
            return
        limits: dict[tuple[str, int], float] = {}
        evses = dict.fromkeys(("free", "charging", "unavailable", "offline"), 0)
        for s in self.book.sessions():
            if s.station_id is not None and s.evse_id is not None:
                limits[(s.station_id, s.evse_id)] = s.granted_kw
                evses["offline" if s.station_id in self.book.offline else "charging"] += 1
        for station in self.registry.stations():
            if not station.booted:
                continue
            for evse_id in station.evses:
                if (station.station_id, evse_id) in limits:
                    continue
                evses["free" if station.evse_free(evse_id) else "unavailable"] += 1
        self._metrics.observe(limits, self.book.granted_kw, evses, self.book.walk_ins_seen)

    def take_waiting(self) -> list[ChargingSession]:
        return list(self.book.take_waiting())

    def reset(self) -> list[ChargingSession]:
        """Nothing is dropped: the cars are on the stations whatever the broker does, and a
        redelivered assignment finds its session again."""
        return []

    def predicted_releases(self, horizon_s: float = float("inf")) -> list[PredictedRelease]:
        return self.book.predicted_releases(self.now_s, horizon_s)

    # -- the stations --------------------------------------------------------------------

    def connected(self, caller: Caller) -> None:
        self._callers[caller.id] = caller

    def disconnected(self, caller: Caller) -> None:
        if self._callers.get(caller.id) is caller:
            del self._callers[caller.id]
            self._defaulted.discard(caller.id)
            self.book.station_lost(caller.id)

    def booted(self, caller: Caller) -> None:
        """After its BootNotification: the station-wide profiles, then its transactions."""
        if self._callers.get(caller.id) is caller:
            self._spawn(self._welcome(caller))

    async def _welcome(self, caller: Caller) -> None:
        default = call.SetChargingProfile(
            evse_id=0,
            charging_profile=station_profile(
                TX_DEFAULT_PROFILE_ID,
                ChargingProfilePurposeEnumType.tx_default_profile,
                DEFAULT_LIMIT_KW,
            ),
        )
        most = call.SetChargingProfile(
            evse_id=0,
            charging_profile=station_profile(
                STATION_MAX_PROFILE_ID,
                ChargingProfilePurposeEnumType.charging_station_max_profile,
                self.capacity_kw,
            ),
        )
        trigger = call.TriggerMessage(requested_message=MessageTriggerEnumType.transaction_event)
        answer = await self._send(caller, default)
        if answer is None:
            return
        if getattr(answer, "status", None) == ACCEPTED and self._callers.get(caller.id) is caller:
            self._defaulted.add(caller.id)
        for payload in (most, trigger):
            if await self._send(caller, payload) is None:
                return
        # The transactions it runs are reported after the trigger's answer.
        await asyncio.sleep(TRIGGER_GRACE_S)
        if self._callers.get(caller.id) is not caller:
            return
        # Its sessions count again as limited by this worker once it has reported them.
        self.book.station_back(caller.id)
        self.pump()

    def transaction_event(self, station_id: str, payload: dict[str, Any]) -> None:
        """A TransactionEvent's payload (snake_case), already schema-valid."""
        info = payload.get("transaction_info", {})
        tx_id = str(info.get("transaction_id", ""))
        reading = reading_of(payload.get("meter_value"))
        evse = payload.get("evse") or {}
        token = payload.get("id_token") or {}
        now = self.now_s
        if self.book.has_ended(station_id, tx_id):
            log.info(
                "station %s: %s event of transaction %s after its end: ignored",
                station_id,
                payload.get("event_type"),
                tx_id,
            )
        elif payload.get("event_type") == "Ended":
            ended = self.book.transaction_ended(
                station_id, tx_id, reading, now, remote_start_id=info.get("remote_start_id")
            )
            if ended is None:
                log.info("station %s: ended transaction %s is not one of ours", station_id, tx_id)
        else:
            fresh = payload.get("event_type") == "Started" and not info.get("remote_start_id")
            new = not self.book.knows_transaction(station_id, tx_id)
            session = self.book.transaction_started(
                station_id,
                evse.get("id"),
                tx_id,
                now,
                remote_start_id=info.get("remote_start_id"),
                token_type=token.get("type"),
                token=token.get("id_token"),
                reading=reading,
                # Plugged in now at a station holding the default: it draws that. One found
                # running (Updated) may follow a limit an earlier worker gave it: unknown.
                limit_kw=DEFAULT_LIMIT_KW if fresh and station_id in self._defaulted else None,
                begins=payload.get("event_type") == "Started",
            )
            if session is None:
                log.warning(
                    "station %s: transaction %s names no EVSE: not counted", station_id, tx_id
                )
            elif new and (session.walk_in or not session.demand_known):
                log.info(
                    "station %s: transaction %s on EVSE %s (%s, %s) is %s",
                    station_id,
                    tx_id,
                    session.evse_id,
                    payload.get("event_type"),
                    payload.get("trigger_reason"),
                    "a walk-in" if session.walk_in else f"request {session.key}, found running",
                )
        self.pump()

    def meter_values(self, station_id: str, evse_id: int, meter_value: list[Any]) -> None:
        self.book.meter(station_id, None, evse_id, reading_of(meter_value), self.now_s)

    def charging_needs(self, station_id: str, evse_id: int, needs: dict[str, Any]) -> bool:
        """NotifyEVChargingNeeds; False when no walk-in of ours is on that EVSE."""
        ac = needs.get("ac_charging_parameters") or {}
        dc = needs.get("dc_charging_parameters") or {}
        energy_wh = ac.get("energy_amount", dc.get("energy_amount"))
        max_kw = None
        if dc.get("ev_max_power"):
            max_kw = float(dc["ev_max_power"]) / 1000.0
        elif ac.get("ev_max_current") and ac.get("ev_max_voltage"):
            # Three phases of ev_max_voltage (line to neutral) at ev_max_current.
            max_kw = 3 * float(ac["ev_max_current"]) * float(ac["ev_max_voltage"]) / 1000.0
        departure_s = None
        if needs.get("departure_time"):
            try:
                at = datetime.fromisoformat(str(needs["departure_time"]).replace("Z", "+00:00"))
                ahead = (at - datetime.now(UTC)).total_seconds()
                departure_s = self.now_s + ahead * self.time_scale
            except ValueError:
                departure_s = None
        session = self.book.charging_needs(
            station_id,
            evse_id,
            self.now_s,
            energy_kwh=None if energy_wh is None else float(energy_wh) / 1000.0,
            max_kw=max_kw,
            departure_s=departure_s,
        )
        self.pump()
        return session is not None

    # -- commands ------------------------------------------------------------------------

    def pump(self) -> None:
        """Send what the book says to send now."""
        now_s = self.now_s
        free = [b for b in self.registry.free_bays() if b.station_id in self._callers]
        starts = self._clock() >= self._starts_from
        for command in self.book.commands(now_s, free, starts=starts):
            caller = self._callers.get(command.station_id)
            if caller is None:
                self.book.answered(command, None)
                continue
            self._spawn(self._run(caller, command))
        self._wake_when_due(now_s)

    def _wake_when_due(self, now_s: float) -> None:
        """Pump again when a car is due to be full or to leave: between the service's ticks
        (0.1 wall s, minutes of simulated time at a high scale) a car would overshoot."""
        if self._due is not None:
            self._due.cancel()
            self._due = None
        due_s = self.book.next_due_s(now_s) / self.time_scale
        if due_s < MAX_WAKE_S:
            loop = asyncio.get_running_loop()
            self._due = loop.call_later(max(MIN_WAKE_S, due_s), self.pump)

    async def _run(self, caller: Caller, command: Command) -> None:
        payload: Any
        if isinstance(command, Start):
            payload = call.RequestStartTransaction(
                id_token={"id_token": command.key, "type": "Central"},
                remote_start_id=command.remote_start_id,
                evse_id=command.evse_id,
                charging_profile=tx_profile(command.profile_id, command.limit_kw, None),
            )
        elif isinstance(command, Limit):
            self.profile_updates += 1
            payload = call.SetChargingProfile(
                evse_id=command.evse_id,
                charging_profile=tx_profile(
                    command.profile_id, command.limit_kw, command.transaction_id
                ),
            )
        else:
            assert isinstance(command, Stop)
            payload = call.RequestStopTransaction(transaction_id=command.transaction_id)
        answer = await self._send(caller, payload)
        accepted = None if answer is None else getattr(answer, "status", None) == ACCEPTED
        if self._metrics is not None:
            self._metrics.count_command(command, accepted)
        self.book.answered(command, accepted, self.now_s)
        self.pump()

    async def _send(self, caller: Caller, payload: Any) -> Any:
        """The station's answer, or None: no answer, a CallError, or the link went down."""
        try:
            return await caller.call(payload)
        except (TimeoutError, ConnectionClosed) as exc:
            log.info("station %s: %s unanswered (%s)", caller.id, type(payload).__name__, exc)
            return None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("OCPP command failed", exc_info=task.exception())

    async def stop(self) -> None:
        if self._due is not None:
            self._due.cancel()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
