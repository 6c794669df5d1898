"""``python -m bench.flood.load CONFIG_JSON``: the flood bench's load, in a process of its own.

Apart from the dispatcher so that sending costs it nothing (the bench process holds only the
dispatcher and its instruments). Connects, follows ``event.completed`` (and the failures),
prints ``ready``, reads the start time (``time.monotonic``, system-wide) from stdin, then:

* requests at a fixed rate, straight into ``<ns>.requests`` (persistent, confirmed), through
  every phase; each labelled with the phase it was due in;
* during the flood phase, the fake heartbeats of ``bench.flood.schedule.flood_schedule``
  (not persistent, confirmed, at most ``MAX_OUTSTANDING`` unconfirmed);
* then waits (bounded) for every request to complete, and prints one JSON line of results.

Every loop is bounded in count (the schedule's) and in time (the phases plus a grace).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.flood.schedule import Phase, fake_ids, flood_schedule, phase_at, plan_phases, requests_in
from contracts import ChargeRequest, Heartbeat, Topology
from contracts.topology import BindingSpec, QueueSpec
from loadgen.demand import sample_demand
from messaging import AmqpSettings, Delivery, MessagingError, Session

log = logging.getLogger("bench.flood.load")

MAX_OUTSTANDING = 10_000
# A load loop that falls this far behind its schedule stops (and says so).
LATE_LIMIT_S = 5.0
START_TIMEOUT_S = 30.0


@dataclass
class LoadPlan:
    """What the bench asks of the load process: the real requests' rate, the phases' lengths,
    how many fake substations flood, the seed."""

    rate: float
    warmup_s: float
    quiet_s: float
    flood_s: float
    after_s: float
    fakes: int
    seed: int


@dataclass
class LoadConfig(LoadPlan):
    namespace: str
    settle_s: float = 30.0

    def phases(self) -> list[Phase]:
        return plan_phases(self.warmup_s, self.quiet_s, self.flood_s, self.after_s)


@dataclass
class LoadResult:
    sent: dict[str, int] = field(default_factory=dict)
    completed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    publish_failures: int = 0
    completed_by_substation: dict[str, int] = field(default_factory=dict)
    requests_late_max_s: float = 0.0
    fake_published: int = 0
    fake_confirmed: int = 0
    fake_failed: int = 0
    fake_rounds: int = 0
    first_round_s: float | None = None
    flood_late_max_s: float = 0.0
    stopped_early: str | None = None
    settled: bool = False


def _template() -> tuple[bytes, bytes, bytes, bytes]:
    """A fake heartbeat's JSON cut around its id, seq and sent_at: filling it in costs the
    load process a fraction of building the model (the flood's sender should not compete
    with the dispatcher for the machine more than it must)."""
    beat = Heartbeat(
        substation_id="placeholder-id", capacity_kw=100_000, bays=10_000, load_kw=0,
        active_sessions=0, queued=0, seq=7, assignments_received=0, interval_s=1.0,
        sent_at=datetime(2000, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    text = beat.model_dump_json().encode()
    head, rest = text.split(b'"placeholder-id"', 1)
    middle, rest = rest.split(b'"seq":7', 1)
    between, tail = rest.split(b'"2000-01-01T00:00:00Z"', 1)
    return head, middle + b'"seq":', between, tail


_HEAD, _SEQ, _SENT_AT, _TAIL = _template()


def fake_heartbeat(sid: str, seq: int, sent_at: datetime | None = None) -> bytes:
    """What a hostile peer sends (as in tests/chaos/test_hostile_peers.py): a huge substation."""
    at = (sent_at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    return b"".join(
        (_HEAD, b'"', sid.encode(), b'"', _SEQ, str(seq).encode(), _SENT_AT, b'"',
         at.encode(), b'"', _TAIL)
    )  # fmt: skip


class Load:
    def __init__(self, config: LoadConfig, settings: AmqpSettings) -> None:
        self.config = config
        self.settings = settings
        self.topology = Topology(config.namespace)
        self.phases = config.phases()
        self.result = LoadResult()
        self.phase_of: dict[str, str] = {}  # request id -> phase it was sent in
        self.done: set[str] = set()
        self._sent = Counter[str]()
        self._completed = Counter[str]()
        self._failed = Counter[str]()
        self._by_substation = Counter[str]()
        # Set once sending is over and every request sent has completed (or failed).
        self._sending_over = False
        self._all_done = asyncio.Event()

    async def follow(self, session: Session) -> None:
        name = f"{self.topology.events_exchange}.bench-flood-{uuid.uuid4().hex[:8]}"
        await session.declare_queue(
            QueueSpec(name, durable=False, exclusive=True, auto_delete=True)
        )
        for kind in ("completed", "rejected", "dead_lettered"):
            await session.bind(BindingSpec(name, self.topology.events_exchange, f"event.{kind}"))
        await session.consume(name, self._on_event, auto_ack=True)

    def _on_event(self, delivery: Delivery) -> None:
        event = json.loads(delivery.body)
        rid = str(event.get("request_id"))
        phase = self.phase_of.get(rid)
        if phase is None or rid in self.done:
            return  # not ours, or a duplicate
        self.done.add(rid)
        if event.get("kind") == "completed":
            self._completed[phase] += 1
            self._by_substation[str(event.get("substation_id"))] += 1
        else:
            self._failed[phase] += 1
        self._check_done()

    def _check_done(self) -> None:
        if self._sending_over and len(self.done) == len(self.phase_of):
            self._all_done.set()

    async def send_requests(self, session: Session, t0: float) -> None:
        cfg = self.config
        end = self.phases[-1].end_s
        total = requests_in(end, cfg.rate)
        rng = random.Random(cfg.seed + 1)
        exchange = self.topology.requests_exchange
        outstanding: deque[asyncio.Future[None]] = deque()
        for i in range(total):
            due = i / cfg.rate
            late = await _pace(t0 + due)
            if late > LATE_LIMIT_S:
                self.result.stopped_early = f"requests {late:.1f} s behind schedule"
                break
            self.result.requests_late_max_s = max(self.result.requests_late_max_s, late)
            demand = sample_demand(rng, i)
            request = ChargeRequest(
                vehicle_id=demand.vehicle_id,
                energy_kwh=demand.energy_kwh,
                max_power_kw=demand.max_power_kw,
            )
            rid = str(request.request_id)
            phase = phase_at(self.phases, due)
            self.phase_of[rid] = phase
            self._sent[phase] += 1
            fut = session.publish(exchange, "", request.model_dump_json().encode(), message_id=rid)
            fut.add_done_callback(self._request_confirmed)
            outstanding.append(fut)
            await _keep_window(outstanding)
        await _wait_confirms(outstanding)

    def _request_confirmed(self, fut: asyncio.Future[None]) -> None:
        if _failed(fut):
            self.result.publish_failures += 1

    async def flood(self, session: Session, t0: float) -> None:
        cfg = self.config
        (flood,) = [p for p in self.phases if p.name == "flood"]
        ids = fake_ids(cfg.fakes, cfg.seed)
        slices = flood_schedule(len(ids), flood.seconds)
        start = t0 + flood.start_s
        exchange = self.topology.heartbeats_exchange
        outstanding: deque[asyncio.Future[None]] = deque()
        res = self.result
        first_round_end = max((s.at_s for s in slices if s.round == 0), default=0.0)
        for s in slices:
            late = await _pace(start + s.at_s)
            if late > LATE_LIMIT_S:
                res.stopped_early = f"flood {late:.1f} s behind schedule"
                break
            res.flood_late_max_s = max(res.flood_late_max_s, late)
            sent_at = datetime.now(UTC)
            for sid in ids[s.lo : s.hi]:
                fut = session.publish(
                    exchange, "", fake_heartbeat(sid, s.round + 1, sent_at), persistent=False,
                    mandatory=False,
                )  # fmt: skip
                fut.add_done_callback(self._beat_confirmed)
                outstanding.append(fut)
            res.fake_published += s.hi - s.lo
            res.fake_rounds = max(res.fake_rounds, s.round + 1)
            if s.round == 0 and s.at_s == first_round_end:
                res.first_round_s = time.monotonic() - start
            await _keep_window(outstanding)
        await _wait_confirms(outstanding)

    def _beat_confirmed(self, fut: asyncio.Future[None]) -> None:
        if _failed(fut):
            self.result.fake_failed += 1
        else:
            self.result.fake_confirmed += 1

    async def settle(self) -> None:
        self._sending_over = True
        self._check_done()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_done.wait(), self.config.settle_s)
        self.result.settled = len(self.done) == len(self.phase_of)

    def finish(self) -> LoadResult:
        res = self.result
        res.sent = dict(self._sent)
        res.completed = dict(self._completed)
        res.failed = dict(self._failed)
        res.completed_by_substation = dict(self._by_substation)
        return res


async def _main(config: LoadConfig) -> LoadResult:
    settings = AmqpSettings(namespace=config.namespace)
    load = Load(config, settings)
    requests = await Session.open(settings, "bench-flood-requests")
    beats = await Session.open(settings, "bench-flood-fakes")
    try:
        await load.follow(requests)
        print("ready", flush=True)
        line = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline),
            START_TIMEOUT_S,
        )
        t0 = float(line)
        await asyncio.gather(load.send_requests(requests, t0), load.flood(beats, t0))
        await load.settle()
    finally:
        for s in (beats, requests):
            try:
                await asyncio.wait_for(s.close(), 10)
            except (MessagingError, TimeoutError) as exc:
                log.warning("closing a connection: %s", exc)
    return load.finish()


async def _pace(at: float) -> float:
    """How late it is for a send due at ``at`` (``time.monotonic``), in seconds; early, it
    sleeps until then (and the lateness is negative)."""
    late = time.monotonic() - at
    if late < 0:
        await asyncio.sleep(-late)
    return late


def _failed(confirm: asyncio.Future[None]) -> bool:
    """A publish's confirm that did not come: cancelled, or the publish failed."""
    return confirm.cancelled() or confirm.exception() is not None


async def _wait_confirms(outstanding: deque[asyncio.Future[None]]) -> None:
    """Wait for the confirms still outstanding at the end of a send loop, at most
    ``LATE_LIMIT_S``."""
    if outstanding:
        await asyncio.wait(set(outstanding), timeout=LATE_LIMIT_S)


async def _keep_window(outstanding: deque[asyncio.Future[None]]) -> None:
    """Drop confirmed publishes from the front; wait while more than MAX_OUTSTANDING remain."""
    while outstanding and outstanding[0].done():
        outstanding.popleft()
    while len(outstanding) > MAX_OUTSTANDING:
        await asyncio.wait({outstanding.popleft()})


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    config = LoadConfig(**json.loads(args[0]))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        import uvloop

        result = uvloop.run(_main(config))
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        result = asyncio.run(_main(config))
    print(json.dumps({"result": asdict(result)}), flush=True)
    return 0


def config_json(config: LoadConfig) -> str:
    return json.dumps(asdict(config))


def parse_result(line: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(line)["result"]
    return doc


if __name__ == "__main__":
    raise SystemExit(main())
