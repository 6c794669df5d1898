"""loadgen.cluster's planning: node names, ports, config files, environment and the state file
of a local RabbitMQ cluster, decided without starting anything."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from loadgen import cluster
from loadgen.cluster import ClusterInfo, Ports


def planned(nodes: int = 3, base: int = 41000, root: Path = Path("/x")) -> list[cluster.NodeSpec]:
    return cluster.plan(nodes, root, cluster.ports_from_base(base, nodes), "abc123")


def test_every_node_has_its_own_name_folder_and_ports() -> None:
    specs = planned(5)
    assert [s.name for s in specs] == [f"sgcabc123-{i}@localhost" for i in range(1, 6)]
    assert len({s.dir for s in specs}) == 5
    ports = [p for s in specs for p in s.ports.all()]
    assert len(set(ports)) == 20
    # None of the machine broker's ports (5672, 15672, 25672, 15692).
    assert not {5672, 15672, 25672, 15692} & set(ports)


def test_base_port_layout() -> None:
    assert cluster.ports_from_base(41000, 2) == [
        Ports(amqp=41000, dist=41030, management=41010, prometheus=41020),
        Ports(amqp=41001, dist=41031, management=41011, prometheus=41021),
    ]
    with pytest.raises(ValueError, match="outside"):
        cluster.ports_from_base(65510, 3)


@pytest.mark.parametrize("nodes", [0, 6, -1])
def test_node_count_is_1_to_5(nodes: int) -> None:
    with pytest.raises(ValueError, match="1 to 5"):
        cluster.check_node_count(nodes)


def test_plan_refuses_repeated_ports_or_a_wrong_count() -> None:
    same = Ports(1, 2, 3, 4)
    with pytest.raises(ValueError, match="repeat"):
        cluster.plan(2, Path("/x"), [same, same], "t")
    with pytest.raises(ValueError, match="port sets"):
        cluster.plan(3, Path("/x"), [same], "t")


def test_free_ports_skips_repeats_and_gives_up_when_too_few() -> None:
    counter = itertools.cycle([7001, 7001, 7002, 7003, 7002, 7004, 7005, 7006, 7007, 7008])
    got = cluster.free_ports(2, lambda: next(counter))
    assert [p for ps in got for p in ps.all()] == list(range(7001, 7009))
    with pytest.raises(ValueError, match="distinct"):
        cluster.free_ports(1, lambda: 7001)


def test_config_puts_every_listener_on_loopback_at_the_nodes_ports() -> None:
    spec = planned()[1]
    conf = cluster.node_config(spec, "smartgrid-abc123")
    lines = dict(line.split(" = ", 1) for line in conf.splitlines())
    assert lines["listeners.tcp.local"] == f"127.0.0.1:{spec.ports.amqp}"
    assert lines["management.tcp.port"] == str(spec.ports.management)
    assert lines["prometheus.tcp.port"] == str(spec.ports.prometheus)
    assert lines["management.tcp.ip"] == lines["prometheus.tcp.ip"] == "127.0.0.1"
    assert lines["cluster_name"] == "smartgrid-abc123"
    assert cluster.plugins_config() == "[rabbitmq_management,rabbitmq_prometheus].\n"


def test_env_points_every_file_into_the_nodes_folder() -> None:
    spec = planned(root=Path("/tmp/c"))[0]
    env = cluster.node_env(spec)
    assert env["RABBITMQ_NODENAME"] == spec.name
    assert env["RABBITMQ_DIST_PORT"] == str(spec.ports.dist)
    # RabbitMQ adds .conf to RABBITMQ_CONFIG_FILE itself.
    assert env["RABBITMQ_CONFIG_FILE"] == "/tmp/c/node1/rabbitmq"
    for key in (
        "RABBITMQ_CONF_ENV_FILE",  # not /etc/rabbitmq/rabbitmq-env.conf (the machine broker's)
        "RABBITMQ_ADVANCED_CONFIG_FILE",
        "RABBITMQ_MNESIA_BASE",
        "RABBITMQ_LOG_BASE",
        "RABBITMQ_ENABLED_PLUGINS_FILE",
        "RABBITMQ_PID_FILE",
    ):
        assert env[key].startswith("/tmp/c/node1/"), key
    assert "{127,0,0,1}" in env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]


def test_urls_and_state_round_trip() -> None:
    specs = planned(3, root=Path("/tmp/c"))
    info = ClusterInfo(Path("/tmp/c"), specs, "smartgrid-abc123", {specs[0].name: 42}, False)
    assert info.url_list.split(",") == [
        f"amqp://guest:guest@127.0.0.1:{41000 + i}/%2F" for i in range(3)
    ]
    assert info.management_urls[2] == "http://127.0.0.1:41012/"
    assert info.prometheus_ports == [41020, 41021, 41022]
    assert info.node(2) is specs[1]
    assert info.node(specs[2].name) is specs[2]
    with pytest.raises(KeyError):
        info.node(4)
    back = ClusterInfo.from_json(info.to_json())
    assert back == info
    assert json.loads(info.to_json())["pids"] == {specs[0].name: 42}


def test_load_and_down_of_a_folder_without_state_do_nothing(tmp_path: Path) -> None:
    assert cluster.load(tmp_path) is None
    assert cluster.down(tmp_path) is False
    assert tmp_path.is_dir()


def test_running_nodes_reads_cluster_status_json() -> None:
    doc = {"running_nodes": ["b@localhost", "a@localhost"], "disk_nodes": ["x"]}
    assert cluster.running_nodes(json.dumps(doc)) == ["a@localhost", "b@localhost"]


def test_a_pid_is_a_node_only_while_it_runs_under_that_name() -> None:
    # This test process is alive but is no RabbitMQ node.
    assert not cluster.pid_alive(os.getpid(), "sgcabc123-1@localhost")
    assert cluster.pids_of("sgc-no-such-node@localhost") == []
