"""``loadgen run``: send a demand profile open-loop, follow every request, then settle.

Open loop: request i leaves at its scheduled time whether or not earlier ones were answered, so a
slow grid shows up as latency and in-flight requests, never as a lower send rate (no coordinated
omission). Latencies are measured from the scheduled send, so time spent waiting for a free HTTP
connection counts too.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contracts import Topology
from loadgen.bounded import BROKER_TIMEOUT_S
from loadgen.choices import PROFILES, Profile, Via
from loadgen.demand import Demand, sample_demand
from loadgen.holdings import read_holdings
from loadgen.observe import GridObserver
from loadgen.profiles import arrivals, load_trace
from loadgen.senders import AmqpSender, HttpSender, Sender
from loadgen.state import DEFAULT_TOP, GridState
from loadgen.unfinished import Holdings
from messaging import AmqpSettings
from messaging.waiting import sleep_unless


@dataclass(frozen=True)
class RunOptions:
    via: Via = "http"
    profile: Profile = "steady"
    rate: float = 50.0
    requests: int | None = None
    duration_s: float | None = None
    trace: Path | None = None
    speed: float = 1.0
    concurrency: int = 64
    seed: int | None = None
    settle_s: float = 60.0
    request_timeout_s: float = 10.0
    gateway_url: str = "http://127.0.0.1:8000"
    api_key: str | None = field(default=None, repr=False)
    # Substations a live view and the printed report show at most (the busiest).
    top: int = DEFAULT_TOP
    # Every broker call (declare, bind, consume, delete, close) waits at most this long.
    broker_timeout_s: float = BROKER_TIMEOUT_S
    # RabbitMQ's management API, for what <ns>.requests holds (loadgen.holdings); None:
    # SMARTGRID_MANAGEMENT_URL, else the broker's host on 15672.
    management_url: str | None = None

    def __post_init__(self) -> None:
        if self.via not in ("http", "amqp"):
            raise ValueError("via must be http or amqp")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose from {', '.join(PROFILES)}")
        if self.profile == "replay":
            if self.trace is None:
                raise ValueError("the replay profile needs a trace file")
        elif (self.requests is None) == (self.duration_s is None):
            raise ValueError("give exactly one of requests or duration")
        if self.speed <= 0 or self.rate <= 0 or self.settle_s < 0 or self.concurrency < 1:
            raise ValueError("rate, speed and concurrency must be positive, settle >= 0")
        if self.top < 1 or self.broker_timeout_s <= 0:
            raise ValueError("top and the broker timeout must be positive")


@dataclass(frozen=True)
class Planned:
    """One request of the plan: when it leaves, what it asks for, how long its car stays."""

    offset_s: float
    demand: Demand
    dwell_h: float | None = None  # trace hours, run ``speed`` times faster as the arrivals are


def replay_departure(sent_at: datetime, dwell_h: float | None, speed: float) -> datetime | None:
    """The departure a replayed request carries: ``dwell_h`` trace hours after it was sent, on
    the replay's clock (``speed`` trace seconds per wall second, as the arrivals are). A worker
    at ``--time-scale`` equal to ``speed`` then sees the car stay ``dwell_h`` simulated hours.
    No dwell (the trace row has no departure_h): no departure, the car charges until full."""
    if dwell_h is None:
        return None
    return sent_at + timedelta(hours=dwell_h / speed)


def plan(options: RunOptions) -> list[Planned]:
    """The whole run, decided before the first send (and the same for the same seed)."""
    rng = random.Random(options.seed)
    if options.profile == "replay":
        assert options.trace is not None
        return [
            Planned(row.arrival_s / options.speed, row.demand, row.dwell_h)
            for row in load_trace(options.trace)
        ]
    times = arrivals(
        options.profile,
        options.rate,
        rng,
        requests=options.requests,
        duration_s=options.duration_s,
    )
    return [Planned(t, sample_demand(rng, i)) for i, t in enumerate(times)]


@dataclass
class Pacing:
    """When requests really left, against the plan."""

    planned: int = 0
    first_s: float | None = None
    last_s: float | None = None
    planned_span_s: float = 0.0
    max_late_s: float = 0.0

    def record(self, at_s: float, late_s: float) -> None:
        if self.first_s is None:
            self.first_s = at_s
        self.last_s = at_s
        self.max_late_s = max(self.max_late_s, late_s)

    @property
    def span_s(self) -> float:
        if self.first_s is None or self.last_s is None:
            return 0.0
        return self.last_s - self.first_s


@dataclass
class RunResult:
    options: RunOptions
    state: GridState
    pacing: Pacing = field(default_factory=Pacing)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    sending_s: float = 0.0
    elapsed_s: float = 0.0
    settled: bool = False
    interrupted: bool = False
    # What the grid said it holds of the unfinished requests (None: not asked, or nothing was
    # unfinished): how loadgen tells unfinished from lost (loadgen.unfinished).
    holdings: Holdings | None = None


def _sender(settings: AmqpSettings, topology: Topology, options: RunOptions) -> Sender:
    if options.via == "amqp":
        return AmqpSender(
            settings,
            topology,
            timeout_s=options.request_timeout_s,
            call_timeout_s=options.broker_timeout_s,
        )
    return HttpSender(
        options.gateway_url,
        concurrency=options.concurrency,
        timeout_s=options.request_timeout_s,
        api_key=options.api_key,
    )


async def run_load(
    settings: AmqpSettings,
    options: RunOptions,
    *,
    state: GridState | None = None,
    result: RunResult | None = None,
    on_tick: Callable[[RunResult], None] | None = None,
    tick_s: float = 0.25,
    stop: asyncio.Event | None = None,
    settled: Callable[[GridState], bool] = GridState.all_accepted_settled,
) -> RunResult:
    """Follow the grid, send the plan, wait up to ``settle_s`` for every accepted request.

    ``stop`` (e.g. set on Ctrl-C) ends sending and settling early, with ``interrupted`` set;
    ``settled`` says when to stop waiting (by default: every accepted request finished).
    ``result`` (see ``new_result``) is filled in as the run goes, so that a caller who gives up
    on the run still has what it saw; by default the state keeps only this run's requests.
    Raises IngressUnreachable / BrokerUnavailable (with a clear message) if the gateway or the
    broker does not answer at the start.
    """
    topology = settings.topology()
    schedule = plan(options)
    if result is None:
        result = new_result(options, state)
    result.pacing.planned = len(schedule)
    result.pacing.planned_span_s = schedule[-1].offset_s if schedule else 0.0
    observer = GridObserver(
        settings, topology, result.state, call_timeout_s=options.broker_timeout_s
    )
    async with observer, _sender(settings, topology, options) as sender:
        await _send_and_settle(
            sender, schedule, result, on_tick, tick_s, stop or asyncio.Event(), settled
        )
        if not result.settled and not result.interrupted:
            result.holdings = await _holdings(settings, topology, observer, options)
    return result


async def _holdings(
    settings: AmqpSettings, topology: Topology, observer: GridObserver, options: RunOptions
) -> Holdings:
    """Ask the grid what it holds where the requests not seen finished wait."""
    state = observer.state
    places = {state.place(rid) for rid in state.lost()}
    return await read_holdings(
        settings,
        topology,
        state,
        observer.session,
        places,
        datetime.now(UTC),
        timeout_s=options.broker_timeout_s,
        management=options.management_url,
    )


def new_result(options: RunOptions, state: GridState | None = None) -> RunResult:
    """An empty result for ``run_load`` to fill; its state keeps only the run's own requests."""
    return RunResult(options, state or GridState(keep_history=True, own_only=True))


async def _send_and_settle(
    sender: Sender,
    schedule: list[Planned],
    result: RunResult,
    on_tick: Callable[[RunResult], None] | None,
    tick_s: float,
    stop: asyncio.Event,
    settled: Callable[[GridState], bool],
) -> None:
    state, options = result.state, result.options
    loop = asyncio.get_running_loop()
    start = loop.time()
    result.started_at = datetime.now(UTC)
    pending: set[asyncio.Task[None]] = set()

    async def send_one(planned: Planned, request_id: uuid.UUID, sent_at: datetime) -> None:
        departure = replay_departure(sent_at, planned.dwell_h, options.speed)
        body = planned.demand.request_body(request_id, departure)
        if departure is not None:
            # Stamped by loadgen, not on receipt: a departure is only valid after requested_at,
            # and a short stay at a high speed is milliseconds of wall time after the send.
            body["requested_at"] = sent_at.isoformat()
        status = await sender.send(request_id, body)
        state.on_ingress_result(request_id, status, datetime.now(UTC))

    async def ticker() -> None:
        while True:
            result.elapsed_s = loop.time() - start
            if on_tick is not None:
                on_tick(result)
            await asyncio.sleep(tick_s)

    ticks = asyncio.create_task(ticker())
    try:
        for planned in schedule:
            delay = start + planned.offset_s - loop.time()
            if delay > 0:
                await sleep_unless(stop, delay)
            if stop.is_set():
                break
            now = loop.time()
            result.pacing.record(now - start, max(0.0, now - start - planned.offset_s))
            request_id, sent_at = uuid.uuid4(), datetime.now(UTC)
            state.on_sent(request_id, sent_at)
            task = asyncio.create_task(send_one(planned, request_id, sent_at))
            pending.add(task)
            task.add_done_callback(pending.discard)
        result.sending_s = loop.time() - start
        # Each send is bounded by the request timeout; a stop ends the wait at once.
        answers_until = time.monotonic() + options.request_timeout_s + 5
        while pending and not stop.is_set() and time.monotonic() < answers_until:
            await asyncio.wait(set(pending), timeout=0.1)
        settle_until = time.monotonic() + options.settle_s
        while not settled(state) and time.monotonic() < settle_until:
            await sleep_unless(stop, 0.1)
            if stop.is_set():
                break
        result.settled = settled(state)
        result.interrupted = stop.is_set()
    finally:
        for task in pending:
            task.cancel()
        ticks.cancel()
        result.elapsed_s = loop.time() - start
        if on_tick is not None:
            on_tick(result)
