"""deploy/grafana: the provisioning points where compose mounts the files, and every panel
uses the provisioned datasource. (The queries themselves run against a real Prometheus in
tests/integration/test_observability.py.)"""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.helpers import DEPLOY

GRAFANA = DEPLOY / "grafana"


def load_yaml(path: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((GRAFANA / path).read_text())
    return doc


def test_panels_use_the_provisioned_datasource() -> None:
    (ds,) = load_yaml("provisioning/datasources/prometheus.yml")["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090"
    dashboard = json.loads((GRAFANA / "dashboards" / "smartgrid.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 12
    for p in panels:
        assert p["datasource"]["uid"] == ds["uid"], p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == ds["uid"], p["title"]
    for v in dashboard["templating"]["list"]:
        assert v["datasource"]["uid"] == ds["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboards_are_provisioned_from_where_compose_mounts_them() -> None:
    (provider,) = load_yaml("provisioning/dashboards/smartgrid.yml")["providers"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
