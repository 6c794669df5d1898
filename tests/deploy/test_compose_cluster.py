"""deploy/compose.cluster.yaml over compose.yaml: three RabbitMQ nodes that find each other
(classic config), one cookie from the env file, the same definitions on each, every smartgrid
process given the three URLs under its own user, Prometheus scraping the three. Compose's own
`config` checks the merge where Docker Compose v2 is present; the YAML checks run everywhere."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import DEPLOY, filled_env

NODES = ["rabbitmq", "rabbitmq-2", "rabbitmq-3"]
SMARTGRID_COMMANDS = ("smartgrid-gateway", "smartgrid-dispatcher", "smartgrid-worker")


class ComposeLoader(yaml.SafeLoader):
    """Reads Compose's merge tags (!override, !reset) as the plain value they carry."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


for _tag in ("!override", "!reset"):
    ComposeLoader.add_constructor(_tag, _tagged)


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.load((DEPLOY / name).read_text(), Loader=ComposeLoader)
    return doc


def urls(value: str) -> list[str]:
    return [u.strip() for u in value.split(",")]


def test_the_nodes_are_listed_for_classic_peer_discovery() -> None:
    conf = (DEPLOY / "rabbitmq" / "cluster.conf").read_text()
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    listed = re.findall(r"(?m)^cluster_formation\.classic_config\.nodes\.\d+ = rabbit@(\S+)$", conf)
    assert listed == NODES
    cluster = load("compose.cluster.yaml")["services"]
    for node in NODES[1:]:
        assert cluster[node]["hostname"] == node  # the node name is rabbit@<hostname>
        assert cluster[node]["extends"] == {"file": "compose.yaml", "service": "rabbitmq"}
    assert load("compose.yaml")["services"]["rabbitmq"]["hostname"] == NODES[0]
    for node in NODES:
        assert (
            "./rabbitmq/cluster.conf:/etc/rabbitmq/conf.d/30-cluster.conf:ro"
            in (cluster[node]["volumes"])
        )
        # The cookie comes from the env file, required, never a value here.
        cookie = cluster[node]["environment"]["RABBITMQ_ERLANG_COOKIE"]
        assert re.fullmatch(r"\$\{RABBITMQ_ERLANG_COOKIE:\?[^}]+\}", cookie)
        assert "RABBITMQ_ERLANG_COOKIE" in cluster[node]["entrypoint"][2]


def test_every_smartgrid_process_gets_the_three_nodes_under_its_own_user() -> None:
    base = load("compose.yaml")["services"]
    cluster = load("compose.cluster.yaml")["services"]
    with_url = [n for n, s in base.items() if "SMARTGRID_AMQP_URL" in s.get("environment", {})]
    assert {"gateway", "dispatcher-1", "dispatcher-2", "loadgen"} <= set(with_url)
    for name in with_url:
        (single,) = urls(base[name]["environment"]["SMARTGRID_AMQP_URL"])
        listed = urls(cluster[name]["environment"]["SMARTGRID_AMQP_URL"])
        # The same user, password variable and vhost as the one-node URL, on each node.
        assert listed == [single.replace("@rabbitmq:", f"@{node}:") for node in NODES], name
        if (base[name].get("command") or [""])[0] in SMARTGRID_COMMANDS:
            assert set(cluster[name]["depends_on"]) == set(NODES[1:]), name


def test_prometheus_scrapes_every_node() -> None:
    cluster = load("compose.cluster.yaml")["services"]
    assert (
        "--config.file=/etc/prometheus/prometheus.cluster.yml" in cluster["prometheus"]["command"]
    )
    single = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    three = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.cluster.yml").read_text())
    jobs = {j["job_name"]: j for j in three["scrape_configs"]}
    assert set(jobs) == {j["job_name"] for j in single["scrape_configs"]}
    assert three["rule_files"] == single["rule_files"]
    for job in ("rabbitmq", "rabbitmq-queues"):
        (targets,) = [c["targets"] for c in jobs[job]["static_configs"]]
        assert targets == [f"{n}:15692" for n in NODES]


def test_only_loopback_ports_are_published() -> None:
    for name, s in load("compose.cluster.yaml")["services"].items():
        for port in s.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} off loopback"


# -- Compose itself (skipped without Docker Compose v2, as in test_compose.py) -----------------


def run_config(
    compose: list[str], deploy: Path, env_file: Path
) -> subprocess.CompletedProcess[str]:
    files = ["-f", str(deploy / "compose.yaml"), "-f", str(deploy / "compose.cluster.yaml")]
    return subprocess.run(
        [*compose, *files, "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=deploy,
    )


def test_compose_merges_the_cluster_with_env_from_example(
    compose: list[str], deploy_copy: Path
) -> None:
    env = deploy_copy / ".env"
    env.write_text(filled_env((deploy_copy / ".env.example").read_text()))
    out = run_config(compose, deploy_copy, env)
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    values = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)
    for node in NODES:
        s = services[node]
        assert s["hostname"] == node
        assert s["environment"]["RABBITMQ_ERLANG_COOKIE"] == values["RABBITMQ_ERLANG_COOKIE"]
        assert s["depends_on"]["definitions"]["condition"] == "service_completed_successfully"
        mounts = {v["target"]: v["source"] for v in s["volumes"]}
        assert mounts["/etc/rabbitmq/definitions"] == "definitions"
        assert mounts["/etc/rabbitmq/conf.d/30-cluster.conf"].endswith("rabbitmq/cluster.conf")
        assert "healthcheck" in s
    # Each node keeps its own data, and no two publish the same host port.
    data = [
        {v["target"]: v["source"] for v in services[n]["volumes"]}["/var/lib/rabbitmq"]
        for n in NODES
    ]
    assert len(set(data)) == 3
    published = [p["published"] for n in NODES for p in services[n].get("ports", [])]
    assert len(published) == len(set(published))
    gw = urls(services["gateway"]["environment"]["SMARTGRID_AMQP_URL"])
    password = values["RABBITMQ_GATEWAY_PASSWORD"]
    assert gw == [f"amqp://gateway:{password}@{n}:5672/smartgrid" for n in NODES]
    for name, s in services.items():
        if (s.get("command") or [""])[0] in SMARTGRID_COMMANDS:
            assert {n: s["depends_on"][n]["condition"] for n in NODES} == dict.fromkeys(
                NODES, "service_healthy"
            ), name


def test_compose_refuses_the_cluster_without_the_cookie(
    compose: list[str], deploy_copy: Path
) -> None:
    env = deploy_copy / ".env"
    filled = filled_env((deploy_copy / ".env.example").read_text())
    env.write_text(re.sub(r"(?m)^RABBITMQ_ERLANG_COOKIE=.*$", "RABBITMQ_ERLANG_COOKIE=", filled))
    out = run_config(compose, deploy_copy, env)
    assert out.returncode != 0
    assert "RABBITMQ_ERLANG_COOKIE" in out.stderr
