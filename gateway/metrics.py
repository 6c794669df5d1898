"""Every Prometheus name of the gateway, on a registry passed in (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from messaging.node_metric import BrokerNodeGauge

# Confirms on loopback take well under a millisecond to a few ms; the tail runs to the timeout.
PUBLISH_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "smartgrid_gateway_requests",
            "POST /v1/charge-requests answers, by HTTP status code (499: the client went away "
            "before its request was complete).",
            ["status"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "smartgrid_gateway_publish_seconds",
            "Seconds from publishing a request to the broker's confirm (confirmed ones only).",
            buckets=PUBLISH_BUCKETS_S,
            registry=registry,
        )
        self.broker_connected = Gauge(
            "smartgrid_gateway_broker_connected",
            "1 while the gateway holds a usable broker connection, 0 otherwise.",
            registry=registry,
        )
        self.broker_node = BrokerNodeGauge(
            "smartgrid_gateway_broker_node",
            "1, labelled with the broker node (host:port) the gateway is connected to; no "
            "sample while disconnected.",
            registry,
        )
        self.replays = Counter(
            "smartgrid_gateway_idempotent_replays",
            "Retries answered 202 without a second publish (request_id already confirmed).",
            registry=registry,
        )
        self.refused_connections = Counter(
            "smartgrid_gateway_refused_connections",
            "Connections answered and closed before a request reached the API, by status: 431 "
            "head too large, 408 head too slow, 503 too many connections.",
            ["status"],
            registry=registry,
        )
        self.inflight_publishes = Gauge(
            "smartgrid_gateway_inflight_publishes",
            "Requests published and waiting for the broker's confirm.",
            registry=registry,
        )
