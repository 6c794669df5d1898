"""bench.throughput's framework relays (FastStream, Dramatiq) against the real broker: each moves
every pre-filled message to the substation queues, none lost, none twice, nothing dead-lettered.

They need the ``bench`` extra, which ``make install`` installs; without it they fail and say how
to get it (an integration test never skips silently).
"""

from __future__ import annotations

import asyncio

import pytest

from bench.throughput.broker import PEERS, prefill, run_bare
from bench.throughput.peers import PEERS as PEER_RELAYS
from bench.throughput.peers import missing_frameworks
from bench.throughput.relay import SUBSTATIONS, relay_args
from contracts import Topology
from messaging import AmqpSettings, Session
from tests.helpers import register_substations

pytestmark = pytest.mark.timeout(60)

N = 400


async def _declare(settings: AmqpSettings, topo: Topology) -> None:
    session = await Session.open(settings, "smartgrid-tests-peers")
    try:
        await session.declare_all(topo.exchanges(), topo.core_queues(), topo.core_bindings())
        for sid in SUBSTATIONS:
            await session.declare_queue(topo.substation_queue_spec(sid))
            await session.bind(topo.substation_binding(sid))
    finally:
        await session.close()


async def _depths(settings: AmqpSettings, queues: list[str]) -> list[int]:
    session = await Session.open(settings, "smartgrid-tests-peers")
    try:
        return list(await asyncio.gather(*(session.queue_depth(q) for q in queues)))
    finally:
        await session.close()


@pytest.mark.parametrize("peer", PEER_RELAYS)
async def test_peer_relay_moves_every_message_once(
    amqp_settings: AmqpSettings, topology: Topology, peer: str
) -> None:
    missing = missing_frameworks()
    assert not missing, f"{', '.join(missing)} not installed: pip install -e '.[bench]'"
    # Given N ChargeRequests waiting in the quorum <ns>.requests
    register_substations(topology, list(SUBSTATIONS))
    await _declare(amqp_settings, topology)
    await prefill(amqp_settings, topology, N)
    # When the framework's relay runs in its own process, as the bench runs it
    result = await run_bare(amqp_settings, peer, *relay_args(peer, topology, N), module=PEERS)
    # Then it relayed (and acked) all N, none returned or nacked
    assert (result["relayed"], result["acks_sent"]) == (N, N)
    assert (result["returned"], result["nacked"]) == (0, 0)
    # and, its connection closed, the substation queues hold exactly N between them, spread
    # over all three, the source is empty (nothing left unacked to come back) and nothing was
    # dead-lettered
    substations = await _depths(amqp_settings, [topology.substation_queue(s) for s in SUBSTATIONS])
    assert sum(substations) == N
    assert all(d > 0 for d in substations)
    assert await _depths(amqp_settings, [topology.requests_queue, topology.dead_queue]) == [0, 0]
