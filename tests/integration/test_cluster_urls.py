"""The URL list on a real three-node cluster (loadgen.cluster, the session's own nodes):
the grid's processes spread over the nodes, its quorum queues have a replica on each, and when
the node most of them are on stops, each of those reconnects to a surviving node by itself and
requests through the gateway still complete."""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from pathlib import Path

import httpx
import pytest

from contracts import Topology
from loadgen import cluster
from loadgen.cluster import ClusterInfo
from loadgen.grid import LocalGrid, SubstationSpec
from loadgen.report import build_report
from loadgen.run import RunOptions, run_load
from loadgen.settings import LoadgenSettings
from messaging import AmqpSettings
from tests import cluster_grid
from tests.cluster_grid import process_nodes
from tests.helpers import wait_until_sync

# Six workers, two dispatchers and the gateway: nine processes, each placed by its own shuffle
# of the three URLs. All nine on one node has probability 3/3^9 (about 0.015 %); with three
# workers (six processes) it would be 3/3^6 (0.4 %), too often for a test that must not flake.
SUBSTATIONS = [SubstationSpec(f"u{i}", 100.0 * i, 4) for i in range(1, 7)]
REPLICAS = 3
RECONNECT_TIMEOUT_S = 60.0


@pytest.mark.timeout(180)
def test_a_node_killed_9_starts_again_into_its_cluster(whole_cluster: ClusterInfo) -> None:
    info = whole_cluster
    spec = info.node(2)
    old = info.pids[spec.name]
    cluster.kill_node(info, 2)
    assert not cluster.pid_alive(old, spec.name)
    cluster.start_node(info, 2)
    new = info.pids[spec.name]
    assert new != old
    assert cluster.pid_alive(new, spec.name)
    # Its own name, ports and data: node 1 sees it running, its own API says it is it
    status = json.loads(cluster.ctl(info, 1, "cluster_status", "--formatter", "json"))
    assert sorted(status["running_nodes"]) == sorted(info.node_names)
    overview = httpx.get(spec.management_url + "api/overview", auth=("guest", "guest"), timeout=10)
    assert overview.json()["node"] == spec.name
    # And the state file, read by `down` from another process, has its new pid
    recorded = cluster.load(info.dir)
    assert recorded is not None
    assert recorded.pids[spec.name] == new
    with pytest.raises(cluster.ClusterError, match="still running"):
        cluster.start_node(info, 2)


@pytest.mark.timeout(300)
def test_processes_spread_over_the_nodes_and_move_off_a_stopped_one(
    whole_cluster: ClusterInfo, tmp_path: Path
) -> None:
    info = whole_cluster
    namespace = f"cluster-urls-{uuid.uuid4().hex[:6]}"
    settings = AmqpSettings(amqp_url=info.url_list, namespace=namespace)
    topology = Topology(namespace, REPLICAS)
    grid = LocalGrid(
        SUBSTATIONS,
        settings=settings,
        time_scale=3600.0,
        heartbeat_interval_s=0.5,
        log_dir=tmp_path,
        dispatchers=2,
        extra_env={"SMARTGRID_QUORUM_REPLICAS": str(REPLICAS), "SMARTGRID_RECONNECT_MAX_S": "2"},
    )
    with grid:
        names = [p.name for p in grid.processes]
        assert len(names) == 9
        before = process_nodes(grid, info)
        assert None not in before.values(), before
        # Given nine processes that each shuffled the three URLs: more than one node is used
        assert len(set(before.values())) > 1, before
        # And every quorum queue of the grid has a replica on each node
        everyone = sorted(info.node_names)
        for name in [
            topology.requests_queue,
            *(topology.substation_queue(s.id) for s in SUBSTATIONS),
        ]:
            assert cluster_grid.queue(info, 1, name)["type"] == "quorum", name

            def replicated(queue: str = name) -> bool:
                members = cluster_grid.queue(info, 1, queue).get("members")
                return isinstance(members, list) and sorted(members) == everyone

            wait_until_sync(replicated, f"{name} to list a member on each node", timeout=30)

        # When the node most processes are on stops
        victim, _ = collections.Counter(before.values()).most_common(1)[0]
        assert victim is not None
        moved = sorted(n for n, node in before.items() if node == victim)
        cluster.stop_node(info, victim)
        survivors = [s.index for s in info.nodes if s.index != victim]

        # Then each process that was on it names a surviving node within a bounded time
        def all_on_survivors() -> bool:
            now = process_nodes(grid, info)
            return all(now[n] in survivors for n in names)

        reconnect_s = wait_until_sync(
            all_on_survivors,
            f"{moved} (on node {victim}) to reconnect to node {survivors}",
            timeout=RECONNECT_TIMEOUT_S,
            poll=0.2,
            detail=lambda: f"nodes now: {process_nodes(grid, info)}",
        )
        after = process_nodes(grid, info)
        assert {after[n] for n in names} <= set(survivors), after
        # The processes on the other nodes did not move
        assert all(after[n] == before[n] for n in names if n not in moved), (before, after)

        # And requests through the gateway all complete (loadgen follows events through a
        # surviving node, and asks a surviving node's management API)
        first = info.node(survivors[0])
        urls = ",".join([first.amqp_url, *(u for u in info.amqp_urls if u != first.amqp_url)])
        options = RunOptions(
            via="http",
            rate=10.0,
            requests=20,
            seed=3,
            settle_s=60.0,
            gateway_url=grid.gateway_url,
            management_url=first.management_url,
        )
        result = asyncio.run(run_load(LoadgenSettings(amqp_url=urls, namespace=namespace), options))
    report = build_report(result, [s.id for s in SUBSTATIONS])
    print(f"node {victim} stopped: {moved} on node(s) {survivors} after {reconnect_s:.1f}s")
    assert report.accepted == 20, report.rejected_at_ingress
    assert report.completed == 20
    assert report.lost == 0
    assert report.duplicates == 0
    assert result.settled
