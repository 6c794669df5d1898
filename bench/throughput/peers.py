"""The bare relay written with a framework: what a user would write instead of smartgrid.

Run as a subprocess like the bare relays (``python -m bench.throughput.peers <what> ...``, the
same arguments), each prints one JSON line of the same shape as theirs. Both keep the bare
relay's guarantee: consume the quorum ``<ns>.requests`` with manual ack, republish each message
persistent and mandatory on a confirm channel, ack the source only once that republish is
confirmed. A return or a nack raises and the source is never acked: FastStream hands it back
(nack, requeue), Dramatiq rejects it to the queue's dead-letter exchange; both are counted.

* ``faststream``: a RabbitBroker (aio-pika) whose publishing channel has publisher confirms and
  ``on_return_raises``; one subscriber with ``AckPolicy.MANUAL`` (prefetch as the bare relay's),
  whose handler awaits ``broker.publish(persist=True, mandatory=True)`` (its confirm) and then
  ``msg.ack()``. aio-pika runs one task per delivery, so up to ``prefetch`` confirms are in
  flight, but each publish waits for its own, and each ack is one ``basic.ack`` of one message;
  the ``msg: RabbitMessage`` parameter (FastStream's way to ack by hand) is resolved in a worker
  thread for every delivery.
* ``dramatiq``: a RabbitmqBroker with ``confirm_delivery=True`` and a Worker (``--threads``
  threads, Dramatiq's own prefetch of twice that) running one actor that sends the assignment
  to a substation queue (Dramatiq publishes to the default exchange, by queue name). Each send
  blocks its thread until the broker confirmed it (at most one confirm in flight per thread);
  Dramatiq acks once the actor returned.

The queues are the namespace's (quorum, the product's arguments): Dramatiq only checks that
they exist, since its own declaration (classic, with delay and dead-letter queues beside) would
be refused. Its messages are the same raw ChargeRequest and Assignment bodies as the other
relays': an encoder maps a raw body to a message of the relay actor and back.

The frameworks are the ``bench`` extra (``pip install -e '.[bench]'``), imported only here.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import sys
import threading
import time
import uuid
from typing import Any

from bench.throughput.bare import RelayJob, _relay_result, assignment_body

PEERS = ("faststream", "dramatiq")
# What each framework's relay cannot do that the bare relay does, for the tables.
LIMITS = {
    "faststream": "each publish awaits its own confirm in the task of its delivery (up to "
    "prefetch in flight, never batched); one basic.ack per message, never multiple; the "
    "injected `msg: RabbitMessage` is resolved in a worker thread for every delivery "
    "(FastDepends runs the sync Context resolver in a thread pool)",
    "dramatiq": "never pipelines confirms: each send blocks its worker thread until confirmed "
    "(at most one confirm in flight per thread); prefetch 2 per thread; one ack per message, "
    "once the actor returned",
}
DRAMATIQ_THREADS = 8  # Dramatiq's default worker threads


def missing_frameworks() -> list[str]:
    """The peers' frameworks that are not installed (the ``bench`` extra)."""
    from importlib.util import find_spec

    return [name for name in PEERS if find_spec(name) is None]


def as_message(body: bytes, queue: str, actor_name: str) -> dict[str, Any]:
    """A raw body (no Dramatiq envelope) as the fields of a Dramatiq message to ``actor_name``
    on ``queue``, the body its only argument."""
    return {
        "queue_name": queue,
        "actor_name": actor_name,
        "args": [body.decode()],
        "kwargs": {},
        "options": {},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }


def as_body(fields: dict[str, Any]) -> bytes:
    """What goes on the wire for a Dramatiq message: its only argument, raw."""
    (arg,) = fields["args"]
    return str(arg).encode()


def _state() -> dict[str, Any]:
    return {"relayed": 0, "acks": 0, "returned": 0, "nacked": 0, "t0": 0.0, "t1": 0.0}


def _elapsed(state: dict[str, Any]) -> float:
    """Seconds from the first delivery to the one that completed the count (to now if time ran
    out first); 0 if nothing came."""
    return (state["t1"] or time.perf_counter()) - state["t0"] if state["t0"] else 0.0


async def _faststream(job: RelayJob) -> dict[str, Any]:
    from aiormq.exceptions import DeliveryError, PublishError
    from faststream import AckPolicy
    from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
    from faststream.rabbit.annotations import RabbitMessage

    body = assignment_body()
    state = _state()
    done = asyncio.Event()
    turn = itertools.count()
    broker = RabbitBroker(
        job.url,
        default_channel=Channel(publisher_confirms=True, on_return_raises=True),
        log_level=logging.DEBUG,  # its per-message lines, under the WARNING level of the run
    )
    target = RabbitExchange(job.exchange, declare=False)
    source = RabbitQueue(job.queue, queue_type=QueueType.QUORUM, declare=False)

    @broker.subscriber(
        source, channel=Channel(prefetch_count=job.prefetch), ack_policy=AckPolicy.MANUAL
    )
    async def relay(message: RabbitMessage) -> None:
        if not state["t0"]:
            state["t0"] = time.perf_counter()
        try:
            await broker.publish(
                body,
                exchange=target,
                routing_key=job.key(next(turn)),
                persist=True,
                mandatory=True,
                content_type="application/json",
            )
        except PublishError:  # returned (unroutable): hand the source back
            state["returned"] += 1
            await message.nack(requeue=True)
            return
        except DeliveryError:  # nacked by the broker
            state["nacked"] += 1
            await message.nack(requeue=True)
            return
        await message.ack()
        state["acks"] += 1
        state["relayed"] += 1
        if state["relayed"] >= job.count:
            state["t1"] = time.perf_counter()
            done.set()

    await broker.start()
    try:
        await asyncio.wait_for(done.wait(), job.timeout_s)
    except TimeoutError:
        pass
    finally:
        await broker.stop()
    elapsed = _elapsed(state)
    return _relay_result("faststream", job.count, body, elapsed, state, nacked=state["nacked"])


def faststream_relay(job: RelayJob) -> dict[str, Any]:
    """Relay ``job.count`` messages with FastStream; its JSON result."""
    return asyncio.run(_faststream(job))


def dramatiq_relay(
    url: str,
    queue: str,
    targets: list[str],
    count: int,
    threads: int,
    timeout_s: float,
) -> dict[str, Any]:
    """Relay ``count`` messages with a Dramatiq actor; its JSON result."""
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.common import q_name
    from dramatiq.encoder import Encoder, MessageData
    from dramatiq.middleware import Middleware

    body = assignment_body()
    text = body.decode()
    actor_name = "bench_relay"
    state = _state()
    lock = threading.Lock()
    done = threading.Event()

    class RawBodies(Encoder):
        """A raw body (a ChargeRequest) is a message of the relay actor, and what the relay
        sends is its only argument, raw (an Assignment): the same bodies as the other relays."""

        def encode(self, data: MessageData) -> bytes:
            return as_body(data)

        def decode(self, data: bytes) -> MessageData:
            return as_message(data, queue, actor_name)

    class NamespaceQueues(RabbitmqBroker):
        """Dramatiq on the namespace's queues: checks that each exists, declares nothing (no
        delay queue, so that no consumer is started for one)."""

        def declare_queue(self, queue_name: str, *, ensure: bool = False) -> None:
            name = q_name(queue_name)
            if name in self.queues:
                return
            if ensure:
                self.channel.queue_declare(name, passive=True)
            self.emit_before("declare_queue", name)
            self.queues.add(name)
            self.emit_after("declare_queue", name)

    class CountAcks(Middleware):
        def after_ack(self, broker: Any, message: Any) -> None:
            with lock:
                state["acks"] += 1
                state["relayed"] += 1
                if state["relayed"] >= count and not done.is_set():
                    state["t1"] = time.perf_counter()
                    done.set()

        def after_nack(self, broker: Any, message: Any) -> None:
            with lock:
                state["nacked"] += 1

    logging.getLogger("dramatiq").setLevel(logging.WARNING)
    dramatiq.set_encoder(RawBodies())
    broker = NamespaceQueues(url=url, confirm_delivery=True)
    broker.add_middleware(CountAcks())
    dramatiq.set_broker(broker)
    turn = itertools.count()

    @dramatiq.actor(queue_name=queue, actor_name=actor_name, max_retries=0, broker=broker)
    def relay(request: str) -> None:
        if not state["t0"]:
            state["t0"] = time.perf_counter()
        target = targets[next(turn) % len(targets)]
        # blocks until the broker confirmed it; raises on a nack or a return (mandatory)
        broker.enqueue(dramatiq.Message(target, "bench_assignment", (text,), {}, {}))

    worker = dramatiq.Worker(broker, queues={queue}, worker_threads=threads)
    worker.start()
    try:
        done.wait(timeout_s)
    finally:
        worker.stop(timeout=15_000)
        broker.close()
    elapsed = _elapsed(state)
    return _relay_result("dramatiq", count, body, elapsed, state, nacked=state["nacked"])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput.peers",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("what", choices=PEERS)
    p.add_argument("--url", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--exchange", required=True, help="faststream: where it publishes")
    p.add_argument("--keys", required=True, help="faststream: comma-separated routing keys")
    p.add_argument("--targets", required=True, help="dramatiq: comma-separated queues")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--prefetch", type=int, default=1000, help="faststream")
    p.add_argument("--threads", type=int, default=DRAMATIQ_THREADS, help="dramatiq")
    p.add_argument("--timeout", type=float, default=60.0)
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    targets = [t for t in a.targets.split(",") if t]
    if a.what == "faststream":
        result = faststream_relay(RelayJob.of(a))
    else:
        result = dramatiq_relay(a.url, a.queue, targets, a.count, a.threads, a.timeout)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
