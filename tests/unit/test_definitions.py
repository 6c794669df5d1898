"""The RabbitMQ definitions: password hashes the broker accepts, and permissions that let each
role touch exactly its own names (the integration test proves them against a real broker)."""

from __future__ import annotations

import re

import pytest

from contracts import Topology
from contracts.definitions import (
    DefinitionsError,
    build_definitions,
    hash_password,
    password_env_var,
    roles,
)

TOPO = Topology("sg")
PASSWORDS = {r.name: f"{r.name}-password-1234" for r in roles(TOPO)}


def perms(role: str) -> tuple[str, str, str]:
    (r,) = [r for r in roles(TOPO) if r.name == role]
    return r.configure, r.write, r.read


def allowed(pattern: str, name: str) -> bool:
    # RabbitMQ matches the whole regex against the resource name (re:run, unanchored: ours
    # anchor themselves).
    return re.search(pattern, name) is not None


def test_hash_matches_rabbitmq_documented_example() -> None:
    # From rabbitmq.com/docs/passwords: "test12" with salt 908D C60A.
    assert (
        hash_password("test12", bytes.fromhex("908DC60A"))
        == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    )


def test_hashes_are_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_definitions_hold_hashes_not_passwords() -> None:
    doc = build_definitions(TOPO, PASSWORDS, vhost="v")
    text = repr(doc)
    for pw in PASSWORDS.values():
        assert pw not in text
    assert {u["name"] for u in doc["users"]} == set(PASSWORDS)
    assert all(u["hashing_algorithm"] == "rabbit_password_hashing_sha256" for u in doc["users"])
    assert {q["name"] for q in doc["queues"]} == {"sg.requests", "sg.dead", "sg.dead.watch"}
    (requests,) = [q for q in doc["queues"] if q["name"] == "sg.requests"]
    assert requests["arguments"] == TOPO.requests_queue_spec().arguments
    assert {p["vhost"] for p in doc["permissions"]} == {"v"}


def test_missing_or_short_password_is_refused_by_name() -> None:
    with pytest.raises(DefinitionsError, match=password_env_var("gateway")):
        build_definitions(TOPO, {**PASSWORDS, "gateway": ""})
    with pytest.raises(DefinitionsError, match="at least 12"):
        build_definitions(TOPO, {**PASSWORDS, "loadgen": "short"})


def test_user_prefix_names_every_user_and_permission() -> None:
    doc = build_definitions(TOPO, PASSWORDS, user_prefix="t1-")
    assert all(u["name"].startswith("t1-") for u in doc["users"])
    assert all(p["user"].startswith("t1-") for p in doc["permissions"])


@pytest.mark.parametrize(
    ("role", "kind", "name", "ok"),
    [
        # The gateway publishes requests (and accepted events), never assignments.
        ("gateway", "write", "sg.requests", True),
        ("gateway", "write", "sg.events", True),
        ("gateway", "write", "sg.substations", False),
        ("gateway", "read", "sg.requests", True),  # binds the queue to its exchange
        ("gateway", "configure", "sg.substation.north", False),
        ("gateway", "read", "sg.substation.north", False),
        # Only its own namespace.
        ("gateway", "write", "other.requests", False),
        ("gateway", "write", "sg.requests.x", False),
        ("gateway", "write", "xsg.requests", False),
        # The dispatcher: requests in, assignments out, substation queues taken back.
        ("dispatcher", "read", "sg.requests", True),
        ("dispatcher", "write", "sg.substations", True),
        ("dispatcher", "read", "sg.substation.north", True),
        ("dispatcher", "configure", "sg.substation.north", True),
        ("dispatcher", "configure", "sg.heartbeats.dispatcher-0a1b2c3d", True),
        ("dispatcher", "configure", "sg.loadgen.events.x", False),
        # A worker consumes substation queues and heartbeats; it cannot dispatch.
        ("substation", "read", "sg.substation.north", True),
        ("substation", "write", "sg.heartbeats", True),
        ("substation", "write", "sg.substations", False),
        ("substation", "read", "sg.requests", True),  # binds it (core topology)
        ("substation", "configure", "sg.heartbeats.dispatcher-0a1b2c3d", False),
        # loadgen: requests in, events and heartbeats followed, nothing else.
        ("loadgen", "write", "sg.requests", True),
        ("loadgen", "configure", "sg.loadgen.events.abc", True),
        ("loadgen", "read", "sg.substation.north", False),
        ("loadgen", "write", "sg.substations", False),
        ("admin", "configure", "anything.at.all", True),
    ],
)
def test_permissions(role: str, kind: str, name: str, ok: bool) -> None:
    configure, write, read = perms(role)
    pattern = {"configure": configure, "write": write, "read": read}[kind]
    assert allowed(pattern, name) is ok


def test_namespace_is_escaped_in_patterns() -> None:
    dotted = Topology("a.b")
    (gw,) = [r for r in roles(dotted) if r.name == "gateway"]
    assert allowed(gw.write, "a.b.requests")
    assert not allowed(gw.write, "aXb.requests")


def test_each_substation_may_have_a_user_of_its_own_allowed_only_its_queue() -> None:
    """Finding 4 (the hardening issue): with a user per substation, a substation cannot take
    another's work, and the dispatcher can require that a heartbeat comes from its own user."""
    ids = ["north", "south-2"]
    by_name = {r.name: r for r in roles(TOPO, ids)}
    assert "substation" not in by_name
    north, south = by_name["substation-north"], by_name["substation-south-2"]
    for verb in ("configure", "write", "read"):
        assert allowed(getattr(north, verb), "sg.substation.north")
        assert not allowed(getattr(north, verb), "sg.substation.south-2")
        assert not allowed(getattr(north, verb), "sg.substation.northern")
        assert allowed(getattr(south, verb), "sg.substation.south-2")
    assert allowed(north.write, "sg.heartbeats")
    assert not allowed(north.write, "sg.substations")
    assert password_env_var("substation-south-2") == "RABBITMQ_SUBSTATION_SOUTH_2_PASSWORD"
    passwords = {name: f"{name}-password-1234" for name in by_name}
    doc = build_definitions(TOPO, passwords, vhost="v", substation_users=ids)
    assert {u["name"] for u in doc["users"]} == set(by_name)


@pytest.mark.parametrize("ids", [["North"], ["a-b", "a_b"], ["x", "x"]])
def test_substation_users_need_distinct_valid_ids(ids: list[str]) -> None:
    with pytest.raises(DefinitionsError):
        roles(TOPO, ids)
