"""Reading one sample from a process's /metrics (loadgen.grid.metric_value), as loadgen and the
tests read the workers' and the dispatcher's own counts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from loadgen.grid import metric_value


def exposition() -> str:
    registry = CollectorRegistry()
    done = Counter("smartgrid_substation_sessions_completed", "c", ["substation"],
                   registry=registry)  # fmt: skip
    done.labels("s1").inc(3)
    done.labels("s2").inc(5)
    Gauge("smartgrid_dispatcher_held", "held", registry=registry).set(7)
    return generate_latest(registry).decode()


def test_a_sample_by_name_and_labels() -> None:
    text = exposition()
    name = "smartgrid_substation_sessions_completed_total"
    assert metric_value(text, name, {"substation": "s2"}) == 5.0
    assert metric_value(text, name, {"substation": "s1"}) == 3.0
    assert metric_value(text, "smartgrid_dispatcher_held") == 7.0


def test_absent_or_unreadable_is_none() -> None:
    text = exposition()
    assert metric_value(text, "smartgrid_substation_sessions_completed_total") is None  # labels
    assert metric_value(text, "smartgrid_nothing") is None
    assert metric_value(text, "smartgrid_dispatcher_held", {"x": "y"}) is None
    assert metric_value("<html>502 Bad Gateway</html>", "smartgrid_dispatcher_held") is None
