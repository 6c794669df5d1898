"""The baselines: bare pika with the same guarantees as smartgrid, nothing else.

Run as a subprocess (one process each, like the services they are compared with), each prints
one JSON line with what it measured:

* ``publish``: a pipelined confirmed publisher (SelectConnection, ``window`` unconfirmed in
  flight, persistent, mandatory) of real serialized ChargeRequests with distinct request ids.
  Also used to pre-fill queues fast.
* ``relay``: the Shovel pattern, pipelined: consume with manual ack (prefetch ~1000), republish
  persistent + mandatory on a confirm channel, ack the source once the republish is confirmed
  (acks batched with ``multiple`` where the confirms allow it). The dispatcher's ceiling.
* ``intent``: the dispatcher's own protocol, bare: a confirmed intent first, then on its confirm
  the assignment, then on that confirm the ack. The ceiling of that protocol. With ``--batched``,
  one ``DispatchIntent`` for what one turn of the I/O loop delivered (the dispatcher's protocol);
  without, one ``dispatched`` ChargeEvent per request (what a per-request announcement costs).
* ``naive``: the same relay waiting for each confirm (BlockingConnection + confirm_delivery).

This module is the baseline, not product code: it uses pika directly on purpose.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
import pika.channel
import pika.frame
import pika.spec
from pika.adapters.select_connection import SelectConnection

from contracts import Assignment, ChargeEvent, ChargeRequest, DispatchIntent, EventKind, Route
from contracts.messages import MAX_INTENT_ROUTES, LoadSnapshot

PERSISTENT_JSON = pika.BasicProperties(content_type="application/json", delivery_mode=2)


@dataclass(frozen=True)
class RelayJob:
    """What every relay is given, bare or a framework's: drain ``count`` messages from
    ``queue`` (at most ``prefetch`` unacked), republish each to ``exchange`` with the routing
    ``keys`` in turn, within ``timeout_s``."""

    url: str
    queue: str
    exchange: str
    keys: tuple[str, ...]
    count: int
    prefetch: int
    timeout_s: float

    @classmethod
    def of(cls, args: argparse.Namespace) -> RelayJob:
        """From a relay's command line (``--keys`` comma-separated)."""
        keys = tuple(k for k in args.keys.split(",") if k)
        return cls(
            args.url, args.queue, args.exchange, keys, args.count, args.prefetch, args.timeout
        )

    def key(self, n: int) -> str:
        """The routing key for the ``n``-th message: the keys in turn."""
        return self.keys[n % len(self.keys)]


def request_bodies(n: int) -> list[bytes]:
    """``n`` real serialized ChargeRequests, distinct request ids, all of the same size."""
    template = ChargeRequest(vehicle_id="EV-000001", energy_kwh=30.5, max_power_kw=11)
    text = template.model_dump_json()
    old = str(template.request_id)
    return [text.replace(old, str(uuid.uuid4())).encode() for _ in range(n)]


def assignment_body() -> bytes:
    """A real serialized Assignment: what the relay republishes (same size as the dispatcher's)."""
    request = ChargeRequest(vehicle_id="EV-000001", energy_kwh=30.5, max_power_kw=11)
    snapshot = LoadSnapshot(
        load_kw=1234.5,
        capacity_kw=1_000_000,
        committed_kw=1234.5,
        pending_kw=55.0,
        heartbeat_seq=12,
        heartbeat_age_s=0.25,
    )
    a = Assignment(request=request, substation_id="s1", snapshot=snapshot, policy="headroom")
    return a.model_dump_json().encode()


def event_body() -> bytes:
    """A real serialized ``dispatched`` ChargeEvent: the intent-first relay's announcement."""
    event = ChargeEvent(
        request_id=uuid.uuid4(), kind=EventKind.DISPATCHED, substation_id="s1", attempt=1
    )
    return event.model_dump_json().encode()


@functools.cache
def intent_body(routes: int) -> bytes:
    """A real serialized DispatchIntent of ``routes`` routes: the batched relay's announcement."""
    intent = DispatchIntent(
        dispatcher="bench-intent",
        routes=[Route(request_id=uuid.uuid4(), substation_id="s1") for _ in range(routes)],
    )
    return intent.model_dump_json().encode()


class _Confirms:
    """Publisher confirms in publish order: which prefix of the publishes is fully confirmed."""

    def __init__(self) -> None:
        self.next_tag = 1
        self.outstanding: deque[int] = deque()
        self.early: set[int] = set()  # confirmed out of order, ahead of an unconfirmed one
        self.failed = 0

    def published(self) -> int:
        tag = self.next_tag
        self.next_tag += 1
        self.outstanding.append(tag)
        return tag

    def on_confirm(self, frame: pika.frame.Method) -> int:
        """Apply a Basic.Ack/Nack; return how many publishes the confirmed prefix grew by."""
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self.failed += 1
        tag = method.delivery_tag
        if not method.multiple:
            self.early.add(tag)
        grown = 0
        while self.outstanding:
            head = self.outstanding[0]
            if (method.multiple and head <= tag) or head in self.early:
                self.outstanding.popleft()
                self.early.discard(head)
                grown += 1
            else:
                break
        return grown


def _connection(url: str, on_open: Any, name: str) -> SelectConnection:
    params = pika.URLParameters(url)
    params.client_properties = {"connection_name": name}

    def on_open_error(_c: Any, exc: BaseException) -> None:
        raise SystemExit(f"cannot connect: {exc}")

    def on_close(conn: SelectConnection, _exc: BaseException) -> None:
        conn.ioloop.stop()

    return SelectConnection(
        params,
        on_open_callback=on_open,
        on_open_error_callback=on_open_error,
        on_close_callback=on_close,
    )


def _run(conn: SelectConnection, timeout_s: float) -> None:
    """Run the I/O loop until the connection closed (or ``timeout_s`` closes it)."""

    def give_up() -> None:
        if conn.is_open:
            conn.close()

    conn.ioloop.call_later(timeout_s, give_up)
    conn.ioloop.start()


def _run_confirming(
    url: str,
    name: str,
    timeout_s: float,
    holder: dict[str, Any],
    state: dict[str, Any],
    on_confirm: Any,
    on_ready: Callable[[pika.channel.Channel], None],
) -> None:
    """Open connection ``name`` with one confirm channel, whose returns are counted in
    ``state``, hand it to ``on_ready`` once confirms are on, and run until the connection closes
    (or ``timeout_s`` closes it). ``holder`` gets "conn" and "ch"."""

    def on_return(*_a: Any) -> None:
        state["returned"] += 1

    def on_channel(ch: pika.channel.Channel) -> None:
        holder["ch"] = ch
        ch.add_on_return_callback(on_return)
        ch.confirm_delivery(on_confirm, callback=lambda _f: on_ready(ch))

    conn = _connection(url, lambda c: c.channel(on_open_callback=on_channel), name)
    holder["conn"] = conn
    _run(conn, timeout_s)


def publish(url: str, exchange: str, count: int, window: int, timeout_s: float) -> dict[str, Any]:
    bodies = request_bodies(count)
    confirms = _Confirms()
    out: dict[str, Any] = {"what": "publish", "count": count, "bytes": len(bodies[0])}
    state = {"sent": 0, "done": 0, "returned": 0}
    clock = {"t0": 0.0, "t1": 0.0}
    holder: dict[str, Any] = {}

    def pump(ch: pika.channel.Channel) -> None:
        while state["sent"] < count and state["sent"] - state["done"] < window:
            ch.basic_publish(exchange, "", bodies[state["sent"]], PERSISTENT_JSON, mandatory=True)
            confirms.published()
            state["sent"] += 1

    def on_confirm(frame: pika.frame.Method) -> None:
        state["done"] += confirms.on_confirm(frame)
        if state["done"] >= count:
            clock["t1"] = time.perf_counter()
            holder["conn"].close()
        else:
            pump(holder["ch"])

    def start(ch: pika.channel.Channel) -> None:
        clock["t0"] = time.perf_counter()
        pump(ch)

    _run_confirming(url, "bench-publish", timeout_s, holder, state, on_confirm, start)
    elapsed = (clock["t1"] or time.perf_counter()) - clock["t0"]
    out.update(
        confirmed=state["done"],
        seconds=elapsed,
        rate=state["done"] / elapsed if elapsed > 0 else 0.0,
        nacked=confirms.failed,
        returned=state["returned"],
    )
    return out


def _relay_result(
    what: str, count: int, body: bytes, elapsed: float, state: dict[str, Any], *, nacked: int
) -> dict[str, Any]:
    return {
        "what": what,
        "count": count,
        "bytes": len(body),
        "relayed": state["relayed"],
        "seconds": elapsed,
        "rate": state["relayed"] / elapsed if elapsed > 0 else 0.0,
        "acks_sent": state["acks"],
        "nacked": nacked,
        "returned": state["returned"],
    }


def _run_relay(
    job: RelayJob,
    name: str,
    holder: dict[str, Any],
    state: dict[str, Any],
    on_message: Any,
    on_confirm: Any,
) -> None:
    """On a confirm channel, consume the job's queue with its prefetch until the relay closes
    the connection (``holder`` gets "conn" and "ch"; returns are counted in ``state``)."""

    def consume(ch: pika.channel.Channel) -> None:
        ch.basic_qos(
            prefetch_count=job.prefetch, callback=lambda _f: ch.basic_consume(job.queue, on_message)
        )

    _run_confirming(job.url, name, job.timeout_s, holder, state, on_confirm, consume)


def relay(job: RelayJob) -> dict[str, Any]:
    """Consume ``job.count`` messages and relay each, acking the source only after its confirm."""
    body = assignment_body()
    confirms = _Confirms()
    # publish tag -> source delivery tag, in publish order (= delivery order)
    sources: deque[int] = deque()
    state = {"relayed": 0, "t0": 0.0, "t1": 0.0, "returned": 0, "acks": 0}
    holder: dict[str, Any] = {}

    def on_message(ch: pika.channel.Channel, method: Any, _props: Any, _body: bytes) -> None:
        if not state["t0"]:
            state["t0"] = time.perf_counter()
        tag = confirms.published()
        sources.append(method.delivery_tag)
        ch.basic_publish(job.exchange, job.key(tag), body, PERSISTENT_JSON, mandatory=True)

    def on_confirm(frame: pika.frame.Method) -> None:
        grown = confirms.on_confirm(frame)
        if not grown:
            return
        last = 0
        for _ in range(grown):
            last = sources.popleft()
        # Every delivery up to ``last`` is confirmed downstream: one ack covers them all.
        holder["ch"].basic_ack(last, multiple=True)
        state["acks"] += 1
        state["relayed"] += grown
        if state["relayed"] >= job.count:
            state["t1"] = time.perf_counter()
            holder["conn"].close()

    _run_relay(job, "bench-relay", holder, state, on_message, on_confirm)
    elapsed = (state["t1"] or time.perf_counter()) - state["t0"]
    return _relay_result("relay", job.count, body, elapsed, state, nacked=confirms.failed)


def intent_relay(job: RelayJob, events_exchange: str, *, batched: bool) -> dict[str, Any]:
    """The dispatcher's protocol, bare: announce (a confirmed intent), then on its confirm the
    assignments, then on their confirms the acks (coalesced with ``multiple`` where possible).
    ``batched``: one intent for the deliveries of one I/O-loop turn; else one per delivery."""
    body, event = assignment_body(), event_body()
    next_tag = [1]
    # publish tag -> (is an assignment, the source delivery tags it stands for), publish order
    waiting: dict[int, tuple[bool, list[int]]] = {}
    delivered: deque[int] = deque()
    done: set[int] = set()
    unannounced: list[int] = []
    state = {"relayed": 0, "returned": 0, "nacked": 0, "acks": 0}
    clock = {"t0": 0.0, "t1": 0.0}
    holder: dict[str, Any] = {}

    def publish(ch: pika.channel.Channel, assignment: bool, dtags: list[int]) -> None:
        waiting[next_tag[0]] = (assignment, dtags)
        next_tag[0] += 1
        if assignment:
            ch.basic_publish(job.exchange, job.key(dtags[0]), body, PERSISTENT_JSON, mandatory=True)
        elif batched:
            announcement = intent_body(len(dtags))
            ch.basic_publish(events_exchange, "intent.dispatched", announcement, PERSISTENT_JSON)
        else:
            ch.basic_publish(events_exchange, "event.dispatched", event, PERSISTENT_JSON)

    def announce() -> None:
        while unannounced:
            publish(holder["ch"], False, unannounced[:MAX_INTENT_ROUTES])
            del unannounced[:MAX_INTENT_ROUTES]

    def on_message(ch: pika.channel.Channel, method: Any, _props: Any, _body: bytes) -> None:
        if not clock["t0"]:
            clock["t0"] = time.perf_counter()
        delivered.append(method.delivery_tag)
        if not batched:
            publish(ch, False, [method.delivery_tag])
            return
        if not unannounced:  # the first of this turn: announce them all once it ends
            holder["conn"].ioloop.call_later(0, announce)
        unannounced.append(method.delivery_tag)

    def on_confirm(frame: pika.frame.Method) -> None:
        ch = holder["ch"]
        m = frame.method
        if isinstance(m, pika.spec.Basic.Nack):
            state["nacked"] += 1
        if m.multiple:
            tags = list(itertools.takewhile(lambda t: t <= m.delivery_tag, waiting))
        else:
            tags = [m.delivery_tag] if m.delivery_tag in waiting else []
        for t in tags:
            assignment, dtags = waiting.pop(t)
            if assignment:
                done.update(dtags)
            else:
                for dtag in dtags:
                    publish(ch, True, [dtag])
        last = 0
        while delivered and delivered[0] in done:
            last = delivered.popleft()
            done.discard(last)
            state["relayed"] += 1
        if last:
            ch.basic_ack(last, multiple=True)
            state["acks"] += 1
        if state["relayed"] >= job.count:
            clock["t1"] = time.perf_counter()
            holder["conn"].close()

    what = "intent-batched" if batched else "intent"
    _run_relay(job, f"bench-{what}", holder, state, on_message, on_confirm)
    elapsed = (clock["t1"] or time.perf_counter()) - clock["t0"]
    return _relay_result(what, job.count, body, elapsed, state, nacked=state["nacked"])


def naive(job: RelayJob) -> dict[str, Any]:
    """The relay waiting for each confirm before acking (BlockingConnection)."""
    body = assignment_body()
    conn = pika.BlockingConnection(pika.URLParameters(job.url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_qos(prefetch_count=job.prefetch)
    relayed = 0
    t0 = 0.0
    deadline = time.monotonic() + job.timeout_s
    for method, _props, _body in ch.consume(job.queue, inactivity_timeout=5):
        if method is None or time.monotonic() > deadline:
            break
        if not t0:
            t0 = time.perf_counter()
        ch.basic_publish(job.exchange, job.key(relayed), body, PERSISTENT_JSON, True)
        assert method.delivery_tag is not None
        ch.basic_ack(method.delivery_tag)
        relayed += 1
        if relayed >= job.count:
            break
    elapsed = time.perf_counter() - t0 if t0 else 0.0
    ch.cancel()
    conn.close()
    return {
        "what": "naive",
        "count": job.count,
        "bytes": len(body),
        "relayed": relayed,
        "seconds": elapsed,
        "rate": relayed / elapsed if elapsed > 0 else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("what", choices=["publish", "relay", "intent", "intent-batched", "naive"])
    p.add_argument("--events-exchange", default="", help="intent: where announcements go")
    p.add_argument("--url", required=True)
    p.add_argument("--exchange", required=True)
    p.add_argument("--queue", default="")
    p.add_argument("--keys", default="", help="comma-separated routing keys (relays)")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--window", type=int, default=1000, help="publisher: unconfirmed in flight")
    p.add_argument("--prefetch", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args(argv)
    if a.what == "publish":
        result = publish(a.url, a.exchange, a.count, a.window, a.timeout)
    elif a.what == "relay":
        result = relay(RelayJob.of(a))
    elif a.what in ("intent", "intent-batched"):
        result = intent_relay(RelayJob.of(a), a.events_exchange, batched=a.what == "intent-batched")
    else:
        result = naive(RelayJob.of(a))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
