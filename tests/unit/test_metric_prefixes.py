"""Each process's metrics share one prefix, so that a dashboard or an alert finds a process's
series by it (smartgrid_gateway_, smartgrid_dispatcher_, smartgrid_substation_)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from dispatcher.metrics import DispatcherMetrics
from gateway.metrics import GatewayMetrics
from substation_worker.metrics import WorkerMetrics

PROCESSES: dict[str, Callable[[CollectorRegistry], object]] = {
    "smartgrid_gateway_": GatewayMetrics,
    "smartgrid_dispatcher_": DispatcherMetrics,
    "smartgrid_substation_": lambda registry: WorkerMetrics(registry, "s1"),
}


@pytest.mark.parametrize("prefix", PROCESSES)
def test_one_prefix_per_process(prefix: str) -> None:
    registry = CollectorRegistry()
    PROCESSES[prefix](registry)
    names = {metric.name for metric in registry.collect()}
    assert names, "no metrics registered"
    assert sorted(n for n in names if not n.startswith(prefix)) == []
