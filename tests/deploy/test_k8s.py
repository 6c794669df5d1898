"""deploy/k8s: every manifest validates offline against the Kubernetes schemas (kubernetes-validate,
strict: an unknown field is an error, as kubectl's default field validation makes it) and the
RabbitmqCluster against the operator's CRD schema (tests/deploy/schemas); the kustomization
applies them all; every Secret a pod reads is listed, without a value, in secrets.example.yaml and
documented; and the grid's shape holds (three nodes, the URL list, probes, budgets)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from contracts.definitions import password_env_var
from tests.helpers import DEPLOY, REPO

K8S = DEPLOY / "k8s"
SCHEMAS = Path(__file__).parent / "schemas"
NOT_APPLIED = {"kustomization.yaml", "secrets.example.yaml"}
# The oldest Kubernetes the manifests claim (docs/operations.md) and the newest the package knows.
OLDEST = "1.28.0"
NODES = [f"smartgrid-rabbit-server-{i}.smartgrid-rabbit-nodes:5672" for i in range(3)]


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization() -> dict[str, Any]:
    (doc,) = documents(K8S / "kustomization.yaml")
    return doc


def applied() -> list[dict[str, Any]]:
    return [d for name in kustomization()["resources"] for d in documents(K8S / name)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in applied() if d["kind"] == kind]


def by_name(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    return doc


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for d in applied():
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
        elif d["kind"] == "RabbitmqCluster":
            yield (
                d["metadata"]["name"],
                d["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"],
            )


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_kustomization_applies_every_manifest_but_the_example() -> None:
    on_disk = {p.name for p in K8S.glob("*.yaml")}
    assert set(kustomization()["resources"]) == on_disk - NOT_APPLIED
    assert kustomization()["namespace"] == "smartgrid"
    assert all(d["metadata"].get("namespace", "smartgrid") == "smartgrid" for d in applied())
    assert not of_kind("Secret"), "Secrets are created by the operator, never applied from here"


def validation_versions() -> list[str]:
    """Each minor version the package bundles from OLDEST on (the newest included)."""
    key = [int(p) for p in OLDEST.split(".")[:2]]
    minors = {kv_utils.major_minor(v) for v in kv_utils.all_versions()}
    chosen = sorted(m for m in minors if [int(p) for p in m.split(".")] >= key)
    assert chosen, f"kubernetes-validate bundles no schema of {OLDEST} or later"
    return chosen


@pytest.mark.parametrize("version", validation_versions())
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    checked = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in documents(path):
            if doc["kind"] in ("Kustomization", "RabbitmqCluster"):
                continue
            kubernetes_validate.validate(doc, f"{version}.0", strict=True)
            checked.append(doc["kind"])
    assert {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "Secret"} <= set(checked)


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones: the API server's
    strict field validation (kubectl's default), which a structural CRD schema leaves implicit."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def rabbitmq_cluster_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / "rabbitmqcluster-v1beta1.json").read_text())
    return strict(schema)


def test_rabbitmq_cluster_validates_against_the_operator_crd() -> None:
    (cluster,) = of_kind("RabbitmqCluster")
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    jsonschema.validate(cluster, rabbitmq_cluster_schema())
    # The override carries a pod template: it must be a valid one for Kubernetes too.
    template = cluster["spec"]["override"]["statefulSet"]["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": template["spec"]}
    kubernetes_validate.validate(pod, OLDEST, strict=True)


def test_the_crd_schema_check_refuses_what_the_api_server_would() -> None:
    (cluster,) = of_kind("RabbitmqCluster")
    schema = rabbitmq_cluster_schema()
    bad_replicas = json.loads(json.dumps(cluster))
    bad_replicas["spec"]["replicas"] = "three"
    typo = json.loads(json.dumps(cluster))
    typo["spec"]["rabbitmq"]["additionalConfg"] = "x = 1"
    for doc in (bad_replicas, typo):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, schema)


def test_rabbitmq_cluster_has_three_nodes_and_the_smartgrid_config() -> None:
    (cluster,) = of_kind("RabbitmqCluster")
    spec = cluster["spec"]
    assert spec["replicas"] == 3
    assert spec["image"].startswith("rabbitmq:4")
    assert {"requests", "limits"} <= set(spec["resources"])
    config = spec["rabbitmq"]["additionalConfig"]
    assert "load_definitions = /etc/rabbitmq/definitions/definitions.json" in config
    assert "quorum_queue.continuous_membership_reconciliation.target_group_size = 3" in config
    # What the compose stack's broker is configured with, the cluster is too.
    for line in (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text().splitlines():
        if line and not line.startswith("#") and not line.startswith("load_definitions"):
            assert line in config, line
    # The definitions come from the init container (the smartgrid image), every role's password
    # from the users Secret.
    (_, pod) = next(p for p in pod_specs() if p[0] == cluster["metadata"]["name"])
    (init,) = pod["initContainers"]
    assert init["command"][:2] == ["smartgrid-contracts", "definitions"]
    variables = env(init)
    ids = variables["SMARTGRID_SUBSTATION_USERS"]["value"].split(",")
    roles = ["admin", "gateway", "dispatcher", "loadgen", *(f"substation-{i}" for i in ids)]
    for role in roles:
        ref = variables[password_env_var(role)]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "smartgrid-rabbitmq-users", "key": f"{role}-password"}, role
    assert {d["metadata"]["name"] for d in of_kind("Deployment")} >= {
        f"substation-{i}" for i in ids
    }


def amqp_urls(container: dict[str, Any]) -> list[str]:
    return [u.strip() for u in env(container)["SMARTGRID_AMQP_URL"]["value"].split(",")]


def test_every_smartgrid_pod_gets_the_three_nodes_under_its_own_user() -> None:
    users = {}
    for d in of_kind("Deployment"):
        (c,) = d["spec"]["template"]["spec"]["containers"]
        urls = amqp_urls(c)
        m = [
            re.fullmatch(r"amqp://([a-z-]+):\$\(RABBITMQ_PASSWORD\)@([^/]+)/smartgrid", u)
            for u in urls
        ]
        assert all(m), urls
        assert [x[2] for x in m if x] == NODES, d["metadata"]["name"]
        (user,) = {x[1] for x in m if x}
        # The variable the URL expands is defined before it (Kubernetes expands only those).
        names = [e["name"] for e in c["env"]]
        assert names.index("RABBITMQ_PASSWORD") < names.index("SMARTGRID_AMQP_URL")
        ref = env(c)["RABBITMQ_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "smartgrid-rabbitmq-users", "key": f"{user}-password"}
        users[d["metadata"]["name"]] = user
    assert users["gateway"] == "gateway"
    assert users["dispatcher"] == "dispatcher"
    subs = {n: u for n, u in users.items() if n.startswith("substation-")}
    assert len(subs) == 3
    assert all(n == u for n, u in subs.items())


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_probes_ask_what_each_process_serves() -> None:
    for d in of_kind("Deployment"):
        (c,) = d["spec"]["template"]["spec"]["containers"]
        variables = env(c)
        ready, live = c["readinessProbe"], c["livenessProbe"]
        if c["command"] == ["smartgrid-gateway"]:
            port = int(variables["SMARTGRID_HTTP_PORT"]["value"])
            # Out of the Service while it has no broker; restarted only if it stops answering.
            assert ready["httpGet"]["path"] == "/healthz"
            assert live["httpGet"]["path"] == "/metrics"
        else:
            # Dispatchers and workers serve /metrics only (messaging.runtime.start_metrics_server).
            port = int(variables["SMARTGRID_METRICS_PORT"]["value"])
            assert variables["SMARTGRID_METRICS_HOST"]["value"] == "0.0.0.0"
            assert ready["httpGet"]["path"] == live["httpGet"]["path"] == "/metrics"
        assert probe_port(c, ready) == probe_port(c, live) == port, d["metadata"]["name"]


def test_what_scales_and_what_is_budgeted() -> None:
    gateway, dispatcher = by_name("Deployment", "gateway"), by_name("Deployment", "dispatcher")
    assert gateway["spec"]["replicas"] >= 2
    assert dispatcher["spec"]["replicas"] == 2
    for d in (gateway, dispatcher):
        pdb = by_name("PodDisruptionBudget", d["metadata"]["name"])
        assert pdb["spec"]["minAvailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    workers = [d for d in of_kind("Deployment") if d["metadata"]["name"].startswith("substation-")]
    for w in workers:
        # One worker per substation, never two at once (each is that transformer's model).
        assert w["spec"]["replicas"] == 1
        assert w["spec"]["strategy"]["type"] == "Recreate"
        spec = w["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] > 30  # the drain timeout, 30 s by default
    # Every Service selects pods that exist, on a port they name.
    for svc in of_kind("Service"):
        selected = [
            d
            for d in of_kind("Deployment")
            if svc["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, svc["metadata"]["name"]
        for d in selected:
            (c,) = d["spec"]["template"]["spec"]["containers"]
            names = {p["name"] for p in c["ports"]}
            assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names


def secret_refs() -> set[tuple[str, str]]:
    refs = set()
    for _, spec in pod_specs():
        for c in containers(spec):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    return refs


def test_every_secret_read_is_in_the_example_without_a_value_and_documented() -> None:
    example = {
        (d["metadata"]["name"], key): value
        for d in documents(K8S / "secrets.example.yaml")
        for key, value in d.get("stringData", {}).items()
    }
    assert all(d.get("data") is None for d in documents(K8S / "secrets.example.yaml"))
    assert secret_refs() == set(example)
    assert set(example.values()) == {""}
    docs = (REPO / "docs" / "operations.md").read_text()
    for name, key in example:
        assert re.search(rf"{re.escape(name)}\b", docs), name
        assert f"{key}=" in docs, f"docs/operations.md does not say how to create {name}/{key}"


# A value in a manifest that looks like a credential: amqp://user:secret@ other than the
# $(VAR) expansion, a Secret's data, or a password-like env var with an inline value.
URL_CREDENTIAL = re.compile(r"amqps?://[^:/\s]+:(?!\$\(|\$\{)[^@\s]+@")
PASSWORD_NAME = re.compile(r"(?i)(password|passwd|secret|token|api_key|cookie)")


def test_no_file_under_deploy_holds_a_credential() -> None:
    findings = []
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file() or path.name == ".env" or path.suffix == ".json":
            continue
        text = path.read_text(errors="replace")
        findings += [f"{path.name}: {m.group(0)}" for m in URL_CREDENTIAL.finditer(text)]
    for path in sorted(K8S.glob("*.yaml")):
        for doc in documents(path):
            if doc["kind"] == "Secret":
                assert not doc.get("data"), f"{path.name}: a Secret with data"
                findings += [f"{path.name}: {k}" for k, v in doc.get("stringData", {}).items() if v]
    for name, spec in pod_specs():
        for c in containers(spec):
            for e in c.get("env", []):
                if PASSWORD_NAME.search(e["name"]) and "value" in e:
                    findings.append(f"{name}/{c['name']}: {e['name']} has an inline value")
    assert findings == []


def test_the_credential_checks_find_what_they_look_for() -> None:
    assert URL_CREDENTIAL.search("amqp://gateway:hunter2hunter2@node:5672/v")
    assert not URL_CREDENTIAL.search("amqp://gateway:$(RABBITMQ_PASSWORD)@node:5672/v")
    assert not URL_CREDENTIAL.search("amqp://gateway:${RABBITMQ_GATEWAY_PASSWORD:?x}@rabbitmq")
    assert PASSWORD_NAME.search("RABBITMQ_GATEWAY_PASSWORD")
    assert PASSWORD_NAME.search("SMARTGRID_API_KEY")
