"""Every Prometheus name the worker exposes, on a registry passed in (never the global one).

Base units (watts, joules, seconds); the label ``substation``, and ``outcome`` (three values)
on the demands.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from contracts import SessionOutcome
from messaging.node_metric import BrokerNodeGauge
from substation_worker.ocpp.sessions import Command, Limit, Start

KW_TO_W = 1_000.0
KWH_TO_J = 3_600_000.0

# Wall seconds from the request to a bay: sub-second when idle, minutes under a backlog.
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
# Simulated seconds of charging: minutes (fast DC top-up) to a day (slow AC, big battery).
CHARGE_BUCKETS = (60, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 57600, 86400, 172800)


# Why an OCPP handshake was refused: a bounded set, whatever a client sends.
OCPP_REFUSALS = (
    "bad_path",
    "no_subprotocol",
    "full",
    "no_credentials",
    "user_mismatch",
    "unknown_station",
    "bad_password",
)


# The answer to a command sent to a station: accepted True, refused False, None no answer.
OCPP_ANSWERS = {True: "accepted", False: "rejected", None: "unanswered"}
# What an EVSE is doing, as counted by ``smartgrid_substation_ocpp_evses`` (docs/ocpp.md).
OCPP_EVSE_STATES = ("free", "charging", "unavailable", "offline")


class OcppMetrics:
    """The OCPP listener's metrics (registered only when it is on), bound to the substation."""

    def __init__(self, registry: CollectorRegistry, substation_id: str) -> None:
        self._sid = substation_id
        self.stations_connected = Gauge(
            "smartgrid_substation_ocpp_stations_connected",
            "Charging stations connected over OCPP 2.0.1.",
            ["substation"],
            registry=registry,
        ).labels(substation_id)
        self.messages = Counter(
            "smartgrid_substation_ocpp_messages",
            "OCPP frames received from stations, by action (an OCPP 2.0.1 action, unknown, "
            "response or invalid) and result: ok (a CallResult sent), call_error (a CallError "
            "sent) or dropped (no answer: not an OCPP call).",
            ["substation", "action", "result"],
            registry=registry,
        )

        self.handshakes_refused = Counter(
            "smartgrid_substation_ocpp_handshakes_refused",
            "OCPP WebSocket handshakes refused before any frame, by reason: bad_path (404), "
            "no_subprotocol (400), full (503), no_credentials, user_mismatch, unknown_station "
            "or bad_password (401, with a stations file).",
            ["substation", "reason"],
            registry=registry,
        )
        for reason in OCPP_REFUSALS:  # each at 0 from the start, so that rate() sees the first
            self.handshakes_refused.labels(substation_id, reason)

        def answers(name: str, doc: str) -> dict[bool | None, Counter]:
            counter = Counter(name, doc, ["substation", "result"], registry=registry)
            return {a: counter.labels(substation_id, r) for a, r in OCPP_ANSWERS.items()}

        self.profile_updates = answers(
            "smartgrid_substation_ocpp_profile_updates",
            "SetChargingProfile TxProfile updates sent to stations, by result: accepted, "
            "rejected (a status other than Accepted) or unanswered (a CallError, a timeout, "
            "or the link went down).",
        )
        self.starts = answers(
            "smartgrid_substation_ocpp_starts",
            "RequestStartTransaction sent to stations, by result (as profile_updates).",
        )
        self.stops = answers(
            "smartgrid_substation_ocpp_stops",
            "RequestStopTransaction sent to stations, by result (as profile_updates).",
        )
        self.limit_watts = Gauge(
            "smartgrid_substation_ocpp_limit_watts",
            "The limit counted for each EVSE holding a session (its granted power): one series "
            "per EVSE with a session, gone when the session ends.",
            ["substation", "station", "evse"],
            registry=registry,
        )
        self._limited: set[tuple[str, str]] = set()
        self.limits_granted_watts = Gauge(
            "smartgrid_substation_ocpp_limits_granted_watts",
            "Sum of the limits counted against the capacity (never above it).",
            ["substation"],
            registry=registry,
        ).labels(substation_id)
        self.walk_ins = Counter(
            "smartgrid_substation_ocpp_walk_ins",
            "Walk-in sessions seen: transactions a station started by itself.",
            ["substation"],
            registry=registry,
        ).labels(substation_id)
        self._walk_ins_seen = 0
        evses = Gauge(
            "smartgrid_substation_ocpp_evses",
            "EVSEs by state: free (a free bay), charging (holding a session), unavailable "
            "(connected, neither: faulted, reserved, a car not ours), offline (holding a "
            "session on a disconnected station).",
            ["substation", "state"],
            registry=registry,
        )
        self.evses = {state: evses.labels(substation_id, state) for state in OCPP_EVSE_STATES}

    def count_command(self, command: Command, accepted: bool | None) -> None:
        """A command's answer: True accepted, False refused, None no answer."""
        if isinstance(command, Start):
            counters = self.starts
        elif isinstance(command, Limit):
            counters = self.profile_updates
        else:
            counters = self.stops
        counters[accepted].inc()

    def observe(
        self,
        limits_kw: dict[tuple[str, int], float],
        granted_kw: float,
        evses: dict[str, int],
        walk_ins_seen: int,
    ) -> None:
        """The gauges now: each EVSE's limit ((station, EVSE id) -> kW, only EVSEs holding a
        session: the others' series are removed, so there are never more than EVSEs), their
        sum, EVSEs by state (a state not given is 0), and the walk-ins seen so far."""
        now = {(station, str(evse)) for station, evse in limits_kw}
        for station, evse_label in self._limited - now:
            self.limit_watts.remove(self._sid, station, evse_label)
        self._limited = now
        for (station, evse_id), kw in limits_kw.items():
            self.limit_watts.labels(self._sid, station, str(evse_id)).set(kw * KW_TO_W)
        self.limits_granted_watts.set(granted_kw * KW_TO_W)
        if not evses.keys() <= set(OCPP_EVSE_STATES):
            raise ValueError(f"not EVSE states: {sorted(evses.keys() - set(OCPP_EVSE_STATES))}")
        for state, gauge in self.evses.items():
            gauge.set(evses.get(state, 0))
        if walk_ins_seen > self._walk_ins_seen:
            self.walk_ins.inc(walk_ins_seen - self._walk_ins_seen)
        self._walk_ins_seen = max(self._walk_ins_seen, walk_ins_seen)

    def count_message(self, action: str, result: str) -> None:
        self.messages.labels(self._sid, action, result).inc()

    def count_refused(self, reason: str) -> None:
        if reason not in OCPP_REFUSALS:
            raise ValueError(f"not a refusal reason: {reason}")
        self.handshakes_refused.labels(self._sid, reason).inc()


class WorkerMetrics:
    """The worker's metrics, already bound to its substation label."""

    def __init__(self, registry: CollectorRegistry, substation_id: str) -> None:
        label = ["substation"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, label, registry=registry)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, label, registry=registry)

        sid = substation_id
        self.load_watts = gauge(
            "smartgrid_substation_load_watts", "Power drawn by active sessions."
        ).labels(sid)
        self.capacity_watts = gauge(
            "smartgrid_substation_capacity_watts", "Transformer capacity."
        ).labels(sid)
        self.utilization_ratio = gauge(
            "smartgrid_substation_utilization_ratio", "load / capacity (0..1)."
        ).labels(sid)
        self.active_sessions = gauge(
            "smartgrid_substation_active_sessions", "Sessions charging in a bay."
        ).labels(sid)
        self.queued_sessions = gauge(
            "smartgrid_substation_queued_sessions",
            "Assignments not started: held here plus ready in the substation queue.",
        ).labels(sid)
        self.bays = gauge("smartgrid_substation_bays", "Charging bays.").labels(sid)
        self.sessions_completed = counter(
            "smartgrid_substation_sessions_completed",
            "Charging sessions ended (a completed event), full or at their departure.",
        ).labels(sid)
        self.energy_delivered_joules = counter(
            "smartgrid_substation_energy_delivered_joules",
            "Energy delivered by ended sessions.",
        ).labels(sid)
        self.energy_requested_joules = counter(
            "smartgrid_substation_energy_requested_joules",
            "Energy requested by ended sessions.",
        ).labels(sid)
        demands = Counter(
            "smartgrid_substation_demands",
            "Ended sessions by outcome: full (demand met), departed (left at its departure "
            "with part of it), unserved (left with nothing).",
            ["substation", "outcome"],
            registry=registry,
        )
        self.demands = {o: demands.labels(sid, o.value) for o in SessionOutcome}
        self.wait_seconds = Histogram(
            "smartgrid_substation_wait_seconds",
            "Wall seconds from the request's requested_at to getting a bay.",
            label,
            buckets=WAIT_BUCKETS,
            registry=registry,
        ).labels(sid)
        self.charge_duration_seconds = Histogram(
            "smartgrid_substation_charge_duration_seconds",
            "Simulated seconds a session charged.",
            label,
            buckets=CHARGE_BUCKETS,
            registry=registry,
        ).labels(sid)
        self.assignments_received = counter(
            "smartgrid_substation_assignments_received",
            "Valid assignments delivered to this worker (duplicates and redeliveries included).",
        ).labels(sid)
        self.duplicates = counter(
            "smartgrid_substation_duplicates",
            "Assignments acked without a session: request already held or recently completed.",
        ).labels(sid)
        self.dead_lettered = counter(
            "smartgrid_substation_dead_lettered", "Invalid assignments moved to the dead queue."
        ).labels(sid)
        self.misaddressed = counter(
            "smartgrid_substation_misaddressed",
            "Assignments for another substation found in this one's queue, handed back for "
            "dispatch (their request republished to <ns>.requests) instead of served.",
        ).labels(sid)
        self.heartbeats_sent = counter(
            "smartgrid_substation_heartbeats_sent", "Heartbeats published."
        ).labels(sid)
        self.broker_connected = gauge(
            "smartgrid_substation_broker_connected", "1 while connected to the broker, 0 otherwise."
        ).labels(sid)
        self.broker_node = BrokerNodeGauge(
            "smartgrid_substation_broker_node",
            "1, labelled with the broker node (host:port) the worker is connected to; no sample "
            "while disconnected.",
            registry,
            {"substation": sid},
        )

    def count_session(
        self, requested_kwh: float, delivered_kwh: float, outcome: SessionOutcome
    ) -> None:
        """An ended session: its energies and its outcome."""
        self.sessions_completed.inc()
        self.energy_requested_joules.inc(requested_kwh * KWH_TO_J)
        self.energy_delivered_joules.inc(delivered_kwh * KWH_TO_J)
        self.demands[outcome].inc()

    def set_load(self, load_kw: float, capacity_kw: float) -> None:
        self.load_watts.set(load_kw * KW_TO_W)
        self.utilization_ratio.set(load_kw / capacity_kw if capacity_kw > 0 else 0.0)
