"""A channel whose publishes to one destination are all nacked is given up
(messaging.nack_streak): the session closes and the link opens a new one, as after any loss,
even while its publishes elsewhere are acked. The nacks come from a real broker: a queue with
a length limit that refuses publishes beyond it (reject-publish). A destination that gets an
ack between its nacks keeps the channel."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from contracts.topology import QueueSpec
from messaging import AmqpSettings, BrokerLink, PublishNacked, Session
from messaging.nack_streak import STREAK_NACKS, STREAK_S
from tests.helpers import wait_until

LinkRun = tuple[BrokerLink[Session], asyncio.Event, asyncio.Task[None]]


def limited(max_length: int) -> QueueSpec:
    """A queue of this connection's own that refuses publishes beyond ``max_length``."""
    return QueueSpec(
        f"test-nacks-{uuid.uuid4().hex[:8]}",
        {"x-max-length": max_length, "x-overflow": "reject-publish"},
        durable=False,
        exclusive=True,
    )


async def linked(settings: AmqpSettings, *queues: QueueSpec) -> LinkRun:
    async def setup(session: Session) -> None:
        for spec in queues:
            await session.declare_queue(spec)

    link = BrokerLink(settings, "smartgrid-tests-nack-streak", setup)
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    await link.wait_ready(10)
    return link, stop, task


async def publish(session: Session, queue: str) -> bool:
    """Whether the broker acked (True) or nacked (False) one publish to ``queue``."""
    try:
        await session.publish("", queue, b"{}", mandatory=False)
    except PublishNacked:
        return False
    return True


async def test_a_destination_with_only_nacks_gives_the_channel_up(
    amqp_settings: AmqpSettings,
) -> None:
    refuses, takes = limited(0), limited(1_000_000)
    link, stop, task = await linked(amqp_settings, refuses, takes)
    first = link.session
    assert first is not None
    nacked = acked = 0
    started = time.monotonic()
    try:
        # Given a publisher that retries each nacked publish, while its others are acked
        while first.is_open and time.monotonic() - started < 10 * STREAK_S:
            try:
                nacked += not await publish(first, refuses.name)
                acked += await publish(first, takes.name)
            except Exception:  # the session closing under it
                break
            await asyncio.sleep(0.02)
        # Then its channel was given up after the streak, and the link connected again
        assert not first.is_open
        assert nacked >= STREAK_NACKS
        assert acked > 0
        assert STREAK_S <= time.monotonic() - started < 5 * STREAK_S
        assert f"{nacked} publishes to /{refuses.name} nacked in a row" in str(first.close_reason)
        await wait_until(lambda: link.connects == 2 and link.session is not None, timeout=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def taken(got: list[bytes], n: int) -> Callable[[], bool]:
    return lambda: len(got) == n


async def test_an_ack_between_nacks_to_one_destination_keeps_the_channel(
    amqp_settings: AmqpSettings,
) -> None:
    one = limited(1)
    link, stop, task = await linked(amqp_settings, one)
    session = link.session
    assert session is not None
    got: list[bytes] = []
    try:
        started = time.monotonic()
        rounds = 0
        # Given nacks to one queue for longer than a streak, an ack among every three of them
        while time.monotonic() - started < 3 * STREAK_S:
            rounds += 1
            assert await publish(session, one.name)  # the queue was empty: stored
            for _ in range(STREAK_NACKS - 1):
                assert not await publish(session, one.name)  # full: refused
            # Empty it again: one message taken, then no more consumer.
            tag = await session.consume(one.name, lambda d: got.append(d.body), auto_ack=True)
            await wait_until(taken(got, rounds), timeout=5)
            await session.cancel(tag)
        # Then the session is the one it was
        assert rounds >= 2
        assert session.is_open
        assert link.connects == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
