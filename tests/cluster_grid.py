"""What the tests on a local RabbitMQ cluster (loadgen.cluster) share: the cluster for a module,
which node each grid process is connected to (its ``smartgrid_*_broker_node`` gauge), and a
queue as a node's management API shows it."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadgen import cluster
from loadgen.cluster import ClusterInfo
from loadgen.grid import LocalGrid
from tests.helpers import missing

NODE_GAUGES = (
    "smartgrid_gateway_broker_node",
    "smartgrid_dispatcher_broker_node",
    "smartgrid_substation_broker_node",
)


def cluster_of(nodes: int = 3) -> Iterator[ClusterInfo]:
    """The body of a fixture: ``nodes`` nodes of its own, removed after (never the machine's
    broker)."""
    try:
        cluster.find_tools()
    except cluster.ClusterError:
        missing("rabbitmq-server", "Debian: apt-get install rabbitmq-server")
    info = cluster.up(nodes)
    try:
        yield info
    finally:
        assert cluster.down(info) is True
    # `down` leaves nothing behind: no node's VM, no wrapper script that launched it, no folder;
    # a second `down` finds nothing to do (checked here, where every test of the cluster is over).
    for spec in info.nodes:
        assert not cluster.pid_alive(info.pids[spec.name], spec.name), spec.name
        assert cluster.pids_of(spec.name, vm_only=False) == [], spec.name
    assert not info.dir.exists()
    assert cluster.down(info) is False
    assert cluster.down(info.dir) is False


def node_index(info: ClusterInfo, node: str) -> int:
    """The cluster node (1-based) a gauge's ``host:port`` names."""
    for spec in info.nodes:
        if node == f"{cluster.HOST}:{spec.ports.amqp}":
            return spec.index
    raise KeyError(f"{node} is no node of {info.node_names}")


def connected_node(grid: LocalGrid, process: str) -> str | None:
    """The ``host:port`` a process's node gauge names, None while it names none (disconnected)
    or the process does not answer."""
    try:
        text = httpx.get(grid.metrics_urls[process], timeout=2).text
    except httpx.HTTPError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in NODE_GAUGES and sample.value == 1.0:
                    return sample.labels["node"]
    except ValueError:
        return None
    return None


def process_nodes(grid: LocalGrid, info: ClusterInfo) -> dict[str, int | None]:
    """Every process of ``grid`` -> the cluster node it is connected to (None: none)."""
    found: dict[str, int | None] = {}
    for p in grid.processes:
        node = connected_node(grid, p.name)
        found[p.name] = None if node is None else node_index(info, node)
    return found


def queue(info: ClusterInfo, via: int, name: str) -> dict[str, object]:
    """``/api/queues/%2F/<name>`` on node ``via``'s management API."""
    r = httpx.get(
        f"{info.node(via).management_url}api/queues/{quote('/', safe='')}/{quote(name)}",
        auth=("guest", "guest"),
        timeout=10,
    )
    r.raise_for_status()
    doc = r.json()
    assert isinstance(doc, dict)
    return doc


def leader_index(info: ClusterInfo, via: int, name: str) -> int:
    """The node that leads quorum queue ``name`` (its ``leader``, else ``node``)."""
    doc = queue(info, via, name)
    leader = doc.get("leader") or doc.get("node")
    return info.node(str(leader)).index


def make_whole(info: ClusterInfo) -> list[int]:
    """Start every node of ``info`` that is not running (stopped or killed by an earlier test),
    so that each test begins on the whole cluster; the nodes it started."""
    started = []
    for spec in info.nodes:
        pid = info.pids.get(spec.name)
        if pid is None or not cluster.pid_alive(pid, spec.name):
            cluster.start_node(info, spec.index)
            started.append(spec.index)
    return started
