"""deploy/prometheus: promtool accepts the config and the rules, and the rules' own unit tests
(rules.test.yml) pass with a firing and a quiet case for every alert."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from loadgen import local_prometheus
from tests.helpers import DEPLOY, require

PROM = DEPLOY / "prometheus"
PROMTOOL_HOW = "Debian: apt-get install prometheus"
REQUIRED_ALERTS = {
    "SubstationOverloaded",
    "SubstationDown",
    "DispatchBacklogGrowing",
    "DeadLettersPresent",
    "GatewayErrorsHigh",
}


def promtool(*args: str | Path) -> str:
    out = subprocess.run(
        [require("promtool", PROMTOOL_HOW), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def alerts() -> set[str]:
    doc = yaml.safe_load((PROM / "rules.yml").read_text())
    return {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_compose_config_is_valid() -> None:
    assert "SUCCESS" in promtool("check", "config", PROM / "prometheus.yml")


def test_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "rules", PROM / "rules.yml")


def test_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", PROM / "rules.test.yml")


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    assert alerts() >= REQUIRED_ALERTS
    doc = yaml.safe_load((PROM / "rules.test.yml").read_text())
    cases = [c for t in doc["tests"] for c in t.get("alert_rule_test", [])]
    for alert in alerts():
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c.get("exp_alerts") for c in mine), f"{alert}: no firing case"
        assert any(not c.get("exp_alerts") for c in mine), f"{alert}: no quiet case"


def test_compose_scrapes_every_service_and_the_broker() -> None:
    doc = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert {"gateway", "dispatcher", "substation", "rabbitmq", "rabbitmq-queues"} <= set(jobs)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    targets = {t for j in jobs.values() for c in j["static_configs"] for t in c["targets"]}
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if command[:1] in (["smartgrid-gateway"], ["smartgrid-dispatcher"], ["smartgrid-worker"]):
            port = service["environment"].get(
                "SMARTGRID_METRICS_PORT", service["environment"].get("SMARTGRID_HTTP_PORT")
            )
            assert f"{name}:{port}" in targets, f"{name} is not scraped"
    assert jobs["rabbitmq-queues"]["metrics_path"] == "/metrics/detailed"


def test_local_config_is_valid(tmp_path: Path) -> None:
    path = local_prometheus.write_config(tmp_path)
    local_prometheus.write_targets(
        tmp_path, "ns", {"gateway": [("127.0.0.1:1", "gateway")], "substation": []}
    )
    assert "SUCCESS" in promtool("check", "config", path)
