"""Quorum queue replicas (issue 15): what the topology declares, from the settings. Without the
setting nothing changes: RabbitMQ refuses a redeclaration whose arguments differ, so a grid
running today must declare exactly what it declared before."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contracts import Topology
from messaging import AmqpSettings

GROUP_SIZE = "x-quorum-initial-group-size"


def quorum_specs(t: Topology) -> list[dict[str, object]]:
    specs = [*t.core_queues(), t.substation_queue_spec("s1"), t.dead_watch_queue_spec()]
    return [q.arguments for q in specs if q.arguments.get("x-queue-type") == "quorum"]


def test_without_the_setting_no_queue_names_a_group_size() -> None:
    args = quorum_specs(AmqpSettings().topology())
    assert len(args) >= 3  # requests, a substation's, the dead-letter watch
    assert all(GROUP_SIZE not in a for a in args)
    assert AmqpSettings().topology() == Topology()


def test_with_it_every_quorum_queue_is_declared_with_that_many_replicas() -> None:
    t = AmqpSettings(quorum_replicas=3, namespace="grid").topology()
    assert (t.namespace, t.quorum_replicas) == ("grid", 3)
    assert {a[GROUP_SIZE] for a in quorum_specs(t)} == {3}
    # Exclusive per-process queues are not replicated.
    assert GROUP_SIZE not in t.heartbeat_queue_spec("hb").arguments


def test_the_dead_letter_queue_is_classic_unless_replicated() -> None:
    # On a cluster a classic queue on a lost node refuses every redeclaration until it is back.
    assert AmqpSettings().topology().dead_queue_spec().arguments == {}
    replicated = AmqpSettings(quorum_replicas=3).topology().dead_queue_spec()
    assert replicated.arguments == {"x-queue-type": "quorum", GROUP_SIZE: 3}
    assert replicated.durable


def test_an_event_follower_queue_is_replicated_with_the_grid() -> None:
    expires = Topology().event_follower_queue_spec("f").arguments["x-expires"]
    assert Topology().event_follower_queue_spec("f").arguments == {"x-expires": expires}
    replicated = Topology("grid", 3).event_follower_queue_spec("f").arguments
    assert replicated == {"x-queue-type": "quorum", GROUP_SIZE: 3, "x-expires": expires}


@pytest.mark.parametrize("replicas", [0, 10])
def test_a_replica_count_out_of_range_is_refused(replicas: int) -> None:
    with pytest.raises(ValidationError, match="quorum_replicas"):
        AmqpSettings(quorum_replicas=replicas)
    with pytest.raises(ValueError, match="quorum_replicas"):
        Topology("grid", replicas)
