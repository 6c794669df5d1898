"""`smartgrid-loadgen cluster up`'s cluster is a real one: three nodes running together, each
with its management and Prometheus plugins, a quorum queue replicated on all three that keeps a
persistent message when the node it was published through stops. On the session's cluster
(tests/conftest.py, never the machine's broker), whose removal at the end checks that `down`
leaves no process and no file behind (tests/cluster_grid.py)."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import httpx
import pika
import pika.exceptions
import pytest

from loadgen import cluster
from loadgen.cluster import ClusterInfo
from tests.helpers import wait_until_sync

QUEUE = f"sg-cluster-test-{uuid.uuid4().hex[:8]}"  # the cluster is the session's
BODY = b"survives its node"


def api(info: ClusterInfo, node: int, path: str) -> object:
    r = httpx.get(
        info.node(node).management_url + "api" + path, auth=("guest", "guest"), timeout=10
    )
    r.raise_for_status()
    return r.json()


def members(info: ClusterInfo, node: int) -> list[str]:
    queue = api(info, node, f"/queues/{quote('/', safe='')}/{QUEUE}")
    assert isinstance(queue, dict)
    return sorted(queue.get("members", []))


def delete_queue(url: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_delete(QUEUE)
    finally:
        conn.close()


def get_one(url: str) -> bytes | None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        method, _, body = ch.basic_get(QUEUE, auto_ack=True)
        return body if method is not None else None
    finally:
        conn.close()


@pytest.mark.timeout(240)
def test_three_nodes_replicate_a_quorum_queue_and_survive_one_stopping(
    whole_cluster: ClusterInfo,
) -> None:
    info = whole_cluster
    names = sorted(info.node_names)
    status = json.loads(cluster.ctl(info, 1, "cluster_status", "--formatter", "json"))
    assert sorted(status["running_nodes"]) == names
    nodes = api(info, 2, "/nodes")
    assert isinstance(nodes, list)
    assert sorted(n["name"] for n in nodes if n["running"]) == names
    for spec in info.nodes:
        # Every node serves both plugins on its own ports.
        assert httpx.get(spec.prometheus_url, timeout=10).status_code == 200
        assert api(info, spec.index, "/overview")["node"] == spec.name  # type: ignore[index]

    conn = pika.BlockingConnection(pika.URLParameters(info.node(1).amqp_url))
    try:
        ch = conn.channel()
        ch.queue_declare(
            QUEUE,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-quorum-initial-group-size": 3},
        )
        ch.confirm_delivery()
        ch.basic_publish("", QUEUE, BODY, pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        conn.close()
    for node in (1, 2, 3):

        def listed(n: int = node) -> bool:
            return members(info, n) == names

        wait_until_sync(
            listed,
            f"node {node}'s management API to list {QUEUE}'s members on all three nodes",
            timeout=30,
            poll=0.5,
            ignore=(httpx.HTTPError,),
        )

    first_pid = info.pids[info.node(1).name]
    cluster.stop_node(info, 1)
    assert not cluster.pid_alive(first_pid, info.node(1).name)
    got: list[bytes] = []

    def read_through_node_2() -> bool:
        body = get_one(info.node(2).amqp_url)
        if body is not None:
            got.append(body)
        return body is not None

    # Until the two left elect a leader (seconds), node 2 may refuse the get.
    wait_until_sync(
        read_through_node_2,
        f"the message published through node 1 to be read through node 2 ({info.node(2).name})",
        timeout=30,
        poll=0.5,
        ignore=(pika.exceptions.AMQPError,),
    )
    assert got == [BODY]
    delete_queue(info.node(2).amqp_url)
