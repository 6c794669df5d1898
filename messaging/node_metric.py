"""An info-style gauge: ``<name>{node="host:port"} 1`` for the broker node a process is on.

Read at scrape time from a callable (a BrokerLink's ``node``), so it never disagrees with the
link; while disconnected it has no sample at all, so no node is ever reported stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class BrokerNodeGauge(Collector):
    def __init__(
        self,
        name: str,
        documentation: str,
        registry: CollectorRegistry,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = dict(labels or {})
        self._source: Callable[[], str | None] = lambda: None
        registry.register(self)

    def follow(self, source: Callable[[], str | None]) -> None:
        """Report what ``source`` returns (the node, or None while disconnected)."""
        self._source = source

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._name, self._documentation, labels=[*self._labels, "node"])

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        node = self._source()
        if node is not None:
            family.add_metric([*self._labels.values(), node], 1.0)
        return [family]
