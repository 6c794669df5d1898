"""The compose stack's users, for real: the definitions ``smartgrid-contracts definitions``
renders are imported into the broker (as at boot), and a whole grid runs with one user per
role on a vhost of its own. Each role can do its job, and is refused what it has no business
doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import pika
import pika.exceptions
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from contracts import Heartbeat, Topology
from contracts.definitions import build_definitions, roles
from dispatcher.service import build_dispatcher
from dispatcher.settings import DispatcherSettings
from loadgen.grid import LocalGrid, SubstationSpec
from loadgen.report import build_report
from loadgen.run import RunOptions, run_load
from loadgen.settings import LoadgenSettings
from messaging import AmqpSettings, BrokerUnavailable, FatalBrokerError, Session
from tests.helpers import DEPLOY, wait_until
from tests.management import management_client
from tests.private_broker import private_broker

SUBSTATIONS = (SubstationSpec("north", 150.0, 8), SubstationSpec("south", 600.0, 32))
SUBSTATION_IDS = [s.id for s in SUBSTATIONS]


@dataclass
class Deployment:
    topology: Topology
    vhost: str
    urls: dict[str, str]  # role -> AMQP URL with its own user
    prefix: str  # of every user name


@pytest.fixture(scope="module")
def deployment(amqp_settings: AmqpSettings) -> Iterator[Deployment]:
    tag = uuid.uuid4().hex[:8]
    topology = Topology(f"test-lp-{tag}")
    vhost = f"test-lp-{tag}"
    prefix = f"test-lp-{tag}-"
    # A user per substation, as the compose stack has
    passwords = {r.name: secrets.token_hex(16) for r in roles(topology, SUBSTATION_IDS)}
    doc = build_definitions(
        topology, passwords, vhost=vhost, user_prefix=prefix, substation_users=SUBSTATION_IDS
    )
    amqp = urlsplit(amqp_settings.amqp_url.get_secret_value())
    urls = {
        role: f"amqp://{prefix}{role}:{pw}@{amqp.hostname}:{amqp.port or 5672}/{quote(vhost)}"
        for role, pw in passwords.items()
    }
    with management_client(amqp_settings) as api:
        api.post("/definitions", json=doc).raise_for_status()
        try:
            yield Deployment(topology, vhost, urls, prefix)
        finally:
            # Deleting the vhost deletes every queue and exchange in it.
            api.delete(f"/vhosts/{quote(vhost, safe='')}")
            for user in doc["users"]:
                api.delete(f"/users/{quote(user['name'], safe='')}")


def settings_for(d: Deployment, role: str) -> AmqpSettings:
    return AmqpSettings(amqp_url=SecretStr(d.urls[role]), namespace=d.topology.namespace)


def test_definitions_import_the_core_topology(
    deployment: Deployment, amqp_settings: AmqpSettings
) -> None:
    t = deployment.topology
    with management_client(amqp_settings) as api:
        queues = api.get(f"/queues/{quote(deployment.vhost, safe='')}").json()
    by_name = {q["name"]: q for q in queues}
    assert by_name[t.requests_queue]["type"] == "quorum"
    assert by_name[t.requests_queue]["arguments"] == t.requests_queue_spec().arguments


def test_a_grid_runs_with_one_least_privilege_user_per_role(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    d = deployment
    ns = d.topology.namespace
    process_env = {
        "gateway": {"SMARTGRID_AMQP_URL": d.urls["gateway"]},
        # Heartbeats count only from each substation's own user (finding 4 of the hardening
        # issue): the workers set user_id, the broker checks it, the dispatcher requires it.
        "dispatcher": {
            "SMARTGRID_AMQP_URL": d.urls["dispatcher"],
            "SMARTGRID_HEARTBEAT_USER": f"{d.prefix}substation-{{substation_id}}",
        },
        **{
            f"worker-{s.id}": {"SMARTGRID_AMQP_URL": d.urls[f"substation-{s.id}"]}
            for s in SUBSTATIONS
        },
    }
    grid = LocalGrid(
        SUBSTATIONS,
        # Every process gets its own URL below; this one (the admin's) is never used by them.
        settings=settings_for(d, "admin"),
        time_scale=36_000.0,
        heartbeat_interval_s=0.5,
        log_dir=tmp_path_factory.mktemp("lp-grid"),
        process_env=process_env,
    )
    loadgen = LoadgenSettings(amqp_url=SecretStr(d.urls["loadgen"]), namespace=ns)
    with grid:
        for via in ("http", "amqp"):
            options = RunOptions(
                via=via,  # type: ignore[arg-type]
                profile="steady",
                rate=100.0,
                requests=150,
                seed=3,
                settle_s=60.0,
                gateway_url=grid.gateway_url,
            )
            report = build_report(asyncio.run(run_load(loadgen, options)), ["north", "south"])
            assert report.accepted == 150, via
            assert report.completed == 150, via
            assert report.lost == 0, via


def refused(url: str, action: str, name: str) -> bool:
    """True if the broker refuses ``action`` on ``name`` (403 ACCESS_REFUSED)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        try:
            if action == "publish":
                ch.basic_publish(name, "x", b"{}", mandatory=False)
            elif action == "consume":
                # Not basic.get: quorum queues with a single active consumer refuse it (405).
                ch.basic_cancel(ch.basic_consume(name, lambda *_: None))
            elif action == "declare-queue":
                ch.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
                ch.queue_delete(name)
            else:
                raise ValueError(action)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 403:
                raise
            return True
        return False
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("role", "action", "suffix", "is_refused"),
    [
        # What each role needs works...
        ("gateway", "publish", "requests", False),
        ("dispatcher", "consume", "requests", False),
        ("dispatcher", "publish", "substations", False),
        ("substation-north", "publish", "heartbeats", False),
        ("substation-north", "consume", "substation.north", False),
        ("loadgen", "publish", "requests", False),
        # ...and what it has no business doing is refused.
        # RabbitMQ checks the permission before it looks for the queue.
        ("gateway", "consume", "substation.north", True),
        ("gateway", "consume", "heartbeats.dispatcher-0a1b2c3d", True),
        ("gateway", "publish", "substations", True),
        ("gateway", "declare-queue", "substation.rogue", True),
        ("substation-north", "publish", "substations", True),
        ("substation-north", "consume", "loadgen.events.x", True),
        ("substation-north", "consume", "substation.south", True),
        ("substation-north", "declare-queue", "substation.rogue", True),
        ("loadgen", "consume", "substation.north", True),
        ("loadgen", "publish", "substations", True),
        ("loadgen", "declare-queue", "substation.rogue", True),
        ("dispatcher", "publish", "heartbeats", True),
        ("substation-north", "declare-queue", "loadgen.events.rogue", True),
    ],
)
def test_each_role_is_refused_what_it_does_not_need(
    deployment: Deployment, role: str, action: str, suffix: str, is_refused: bool
) -> None:
    name = f"{deployment.topology.namespace}.{suffix}"
    assert refused(deployment.urls[role], action, name) is is_refused


async def test_a_heartbeat_counts_only_from_its_own_substation_s_user(
    deployment: Deployment,
) -> None:
    """Finding 4: any peer that may publish heartbeats could speak for any substation. With a
    user per substation and SMARTGRID_HEARTBEAT_USER, the broker refuses a user_id that is not
    the connection's own, and the dispatcher refuses a heartbeat whose user_id is not the
    substation's user."""

    d = deployment
    t = d.topology
    north = await Session.open(settings_for(d, "substation-north"), "lp-north")
    settings = DispatcherSettings(
        amqp_url=SecretStr(d.urls["dispatcher"]),
        namespace=t.namespace,
        metrics_port=0,
        heartbeat_user=f"{d.prefix}substation-{{substation_id}}",
    )
    dispatcher = build_dispatcher(settings, CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await dispatcher.link.wait_ready(10)
        for sid in SUBSTATION_IDS:  # as the workers would (each may declare only its own)
            own = await Session.open(settings_for(d, f"substation-{sid}"), f"lp-{sid}")
            await own.declare_queue(t.substation_queue_spec(sid))
            await own.close()

        def beat(sid: str) -> bytes:
            return Heartbeat(substation_id=sid, capacity_kw=100, bays=2, load_kw=0,
                             active_sessions=0, queued=0, seq=1,
                             assignments_received=0).model_dump_json().encode()  # fmt: skip

        me = f"{d.prefix}substation-north"
        # Given north speaking for itself, and north claiming to be south
        north.publish_and_forget(t.heartbeats_exchange, "", beat("north"), user_id=me)
        north.publish_and_forget(t.heartbeats_exchange, "", beat("south"), user_id=me)
        refused = dispatcher.metrics.heartbeats.labels("forbidden")
        await wait_until(
            lambda: dispatcher.table.get("north") is not None and refused._value.get() >= 1,
            "north admitted and its heartbeat for south refused",
        )
        # Then north is in the table and south is not
        assert dispatcher.table.get("south") is None
        # And north cannot even send a heartbeat that says it comes from south's user
        north.publish_and_forget(
            t.heartbeats_exchange, "", beat("south"), user_id=f"{d.prefix}substation-south"
        )
        async with asyncio.timeout(10):
            await north.closed.wait()
        assert "PRECONDITION_FAILED" in str(north.close_reason)
    finally:
        stop.set()
        with contextlib.suppress(FatalBrokerError, BrokerUnavailable):
            await asyncio.wait_for(task, 15)
        await north.close()


def test_the_compose_broker_config_loads_the_definitions_at_boot() -> None:
    """deploy/rabbitmq/rabbitmq.conf on a private node: the definitions load at boot, the
    users work with their passwords, and no guest user is created."""
    topology = Topology()
    ids = ["north", "east", "south"]
    passwords = {r.name: secrets.token_hex(16) for r in roles(topology, ids)}
    # as the compose stack: vhost smartgrid, a user per substation
    doc = build_definitions(topology, passwords, substation_users=ids)
    conf = []
    for line in (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text().splitlines():
        if line.startswith("load_definitions"):
            line = "load_definitions = {dir}/definitions.json"
        elif line.startswith("prometheus."):
            continue  # the container enables rabbitmq_prometheus; this node does not
        conf.append(line)
    with private_broker(extra_conf=conf, files={"definitions.json": json.dumps(doc)}) as node:
        base = f"127.0.0.1:{node.amqp_port}"
        conn = pika.BlockingConnection(
            pika.URLParameters(f"amqp://gateway:{passwords['gateway']}@{base}/smartgrid")
        )
        try:
            ch = conn.channel()
            ok = ch.queue_declare("smartgrid.requests", passive=True)
            assert ok.method.queue == "smartgrid.requests"
        finally:
            conn.close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@{base}/%2F"))
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(
                pika.URLParameters(f"amqp://gateway:wrong-password-123@{base}/smartgrid")
            )
