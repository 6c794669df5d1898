"""Every Prometheus series the dispatcher exports."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from messaging.node_metric import BrokerNodeGauge


class DispatcherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "smartgrid_dispatcher_decisions_total",
            "Requests dispatched (republish confirmed), by substation and policy.",
            ["substation", "policy"],
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "smartgrid_dispatcher_decision_seconds",
            "Time the policy took to choose a substation.",
            buckets=(1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2),
            registry=registry,
        )
        self.dispatch_seconds = Histogram(
            "smartgrid_dispatcher_dispatch_seconds",
            "From receiving a request to the broker confirming its assignment.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.backlog = Gauge(
            "smartgrid_dispatcher_backlog_messages",
            "Requests ready in <ns>.requests, not yet delivered to the dispatcher.",
            registry=registry,
        )
        self.held = Gauge(
            "smartgrid_dispatcher_held_requests",
            "Requests delivered to the dispatcher and held because no substation has room.",
            registry=registry,
        )
        self.substations = Gauge(
            "smartgrid_dispatcher_substations",
            "Substations in the load table by state.",
            ["state"],
            registry=registry,
        )
        self.heartbeats = Counter(
            "smartgrid_dispatcher_heartbeats_total",
            "Heartbeats received, by outcome: applied; stale (superseded); invalid; refused as "
            "future (sent_at beyond the clock skew), forbidden (user_id), full (max "
            "substations), rate (new ids per second) or no_queue (its queue does not exist).",
            ["outcome"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "smartgrid_dispatcher_dead_lettered_total",
            "Requests moved to <ns>.dead: not a valid ChargeRequest, too large, or a conflict.",
            registry=registry,
        )
        self.republish_failures = Counter(
            "smartgrid_dispatcher_republish_failures_total",
            "Assignments the broker did not confirm (the request stays held and is dispatched "
            "again), by reason.",
            ["reason"],
            registry=registry,
        )
        self.conflicts = Counter(
            "smartgrid_dispatcher_conflicts_total",
            "Requests rejected because their request_id came before with another body.",
            registry=registry,
        )
        self.broker_dead_letters = Counter(
            "smartgrid_dispatcher_broker_dead_letters_total",
            "Messages the broker dead-lettered by itself (delivery limit, rejection), by its "
            "reason; each with a readable request_id is announced as a dead_lettered event.",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "smartgrid_dispatcher_duplicates_total",
            "Requests acked without dispatch: their request_id is in flight or was dispatched.",
            registry=registry,
        )
        self.resent = Counter(
            "smartgrid_dispatcher_resent_total",
            "Requests sent again to the substation a copy may already be at (its worker drops it).",
            registry=registry,
        )
        self.reclaimed = Counter(
            "smartgrid_dispatcher_reclaimed_total",
            "Assignments taken back from a stale or draining substation's queue, to redispatch.",
            ["substation"],
            registry=registry,
        )
        self.connected = Gauge(
            "smartgrid_dispatcher_broker_connected",
            "1 while connected to the broker.",
            registry=registry,
        )
        self.broker_node = BrokerNodeGauge(
            "smartgrid_dispatcher_broker_node",
            "1, labelled with the broker node (host:port) the dispatcher is connected to; no "
            "sample while disconnected.",
            registry,
        )
