"""deploy/compose.yaml: Compose accepts it with an env file made from .env.example and refuses
it without one; every service waits for what it needs to be healthy; no password in the repo."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from contracts.definitions import password_env_var, roles
from contracts.topology import Topology
from tests.helpers import DEPLOY, REPO, filled_env

SMARTGRID_COMMANDS = ("smartgrid-gateway", "smartgrid-dispatcher", "smartgrid-worker")


def run_config(
    compose: list[str], deploy: Path, env_file: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *compose,
            "-f",
            str(deploy / "compose.yaml"),
            "--env-file",
            str(env_file),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=deploy,
    )


def test_compose_config_validates_with_env_from_example(
    compose: list[str], deploy_copy: Path
) -> None:
    env = deploy_copy / ".env"
    env.write_text(filled_env((deploy_copy / ".env.example").read_text()))
    out = run_config(compose, deploy_copy, env)
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    services = config["services"]
    assert {"rabbitmq", "gateway", "dispatcher-1", "dispatcher-2", "prometheus", "grafana"} <= set(
        services
    )
    workers = [s for s in services.values() if (s.get("command") or [""])[0] == "smartgrid-worker"]
    assert len({w["environment"]["SMARTGRID_CAPACITY_KW"] for w in workers}) == 3
    # The password from the env file reached the service, inside its own user's URL.
    values = dict(
        line.split("=", 1)
        for line in env.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    gw_url = services["gateway"]["environment"]["SMARTGRID_AMQP_URL"]
    assert gw_url.startswith(f"amqp://gateway:{values[password_env_var('gateway')]}@rabbitmq")


def test_compose_refuses_to_start_without_the_passwords(
    compose: list[str], deploy_copy: Path
) -> None:
    out = run_config(compose, deploy_copy, deploy_copy / ".env.example")
    assert out.returncode != 0
    assert "is missing a value" in out.stderr
    assert "make env" in out.stderr


def load_compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_services_start_only_after_what_they_need_is_healthy() -> None:
    services = load_compose()["services"]
    assert "healthcheck" in services["rabbitmq"]
    assert services["rabbitmq"]["depends_on"]["definitions"]["condition"] == (
        "service_completed_successfully"
    )
    for name, s in services.items():
        if (s.get("command") or [""])[0] in SMARTGRID_COMMANDS:
            assert s["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name
            assert "healthcheck" in s, name
    assert all(
        d["condition"] == "service_healthy" for d in services["prometheus"]["depends_on"].values()
    )
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_each_service_has_its_own_user() -> None:
    services = load_compose()["services"]
    # The definitions service gives each substation a user of its own
    definitions_env = services["definitions"]["environment"]
    substation_ids = definitions_env["SMARTGRID_SUBSTATION_USERS"].split(",")
    role_names = {r.name for r in roles(Topology(), substation_ids)}
    assert {password_env_var(r) for r in role_names} <= set(definitions_env)
    users: dict[str, str] = {}
    for name, s in services.items():
        url = s.get("environment", {}).get("SMARTGRID_AMQP_URL")
        if url is None:
            continue
        m = re.match(r"amqp://([a-z-]+):\$\{([A-Z_]+):\?[^}]*\}@rabbitmq:5672/smartgrid$", url)
        assert m, f"{name}: {url}"
        user, var = m.groups()
        assert user in role_names - {"admin"}, name
        assert var == password_env_var(user), name
        users[name] = user
    assert users["gateway"] == "gateway"
    assert users["dispatcher-1"] == users["dispatcher-2"] == "dispatcher"
    assert {n: users[n] for n in users if n.startswith("substation-")} == {
        f"substation-{sid}": f"substation-{sid}" for sid in substation_ids
    }
    for name in ("dispatcher-1", "dispatcher-2"):
        heartbeat_user = services[name]["environment"]["SMARTGRID_HEARTBEAT_USER"]
        assert heartbeat_user == "substation-{substation_id}"


def test_only_loopback_ports_are_published() -> None:
    for name, s in load_compose()["services"].items():
        for port in s.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} off loopback"


def test_env_example_holds_no_values() -> None:
    example = (DEPLOY / ".env.example").read_text()
    for line in example.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert value == "", f"{key} has a value in .env.example"
    # And every variable compose requires (of the one-node or the three-node stack) is in it.
    required = {
        var
        for name in ("compose.yaml", "compose.cluster.yaml")
        for var in re.findall(r"\$\{([A-Z_]+):\?", (DEPLOY / name).read_text())
    }
    listed = {line.split("=")[0] for line in example.splitlines() if "=" in line}
    assert required == listed


# A literal secret: key=value or key: value where the key names a password, key or secret and
# the value is not empty, an interpolation, or guest (RabbitMQ's loopback-only default).
SECRET_ASSIGNMENT = re.compile(
    r"""(?ix)(password|passwd|secret|api_key|apikey)[a-z_]*[ \t]*[:=][ \t]*["']?
        (?!\$\{|["']|\s|$|guest\b|none\b|null\b|<)(\S{6,})"""
)
URL_WITH_PASSWORD = re.compile(r"amqps?://[^:/\s]+:([^@\s]+)@")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / p for p in out.stdout.splitlines()]


def test_no_file_in_the_repo_holds_a_password() -> None:
    findings = []
    for path in tracked_files():
        rel = path.relative_to(REPO)
        if rel.parts[0] == "tests" or not path.is_file() or path.suffix in (".png", ".csv"):
            continue
        text = path.read_text(errors="replace")
        for m in URL_WITH_PASSWORD.finditer(text):
            pw = m.group(1)
            # guest, placeholders, ${VAR} from the environment (compose) or $(VAR) from a
            # Secret (Kubernetes), *** of a redacted URL
            if pw not in ("guest", "pass", "PASSWORD", "***") and not pw.startswith(("${", "$(")):
                findings.append(f"{rel}: {m.group(0)}")
        for m in SECRET_ASSIGNMENT.finditer(text):
            if path.suffix in (".yaml", ".yml", ".env", ".example", ".conf", ".json", ".toml"):
                findings.append(f"{rel}: {m.group(0)}")
    assert findings == []
