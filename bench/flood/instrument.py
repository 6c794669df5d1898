"""Timing an in-process Dispatcher without changing it: its policy, its dispatch histogram,
its heartbeat handler and its admission probes are wrapped, and every sample goes to the
current phase's record.

* decisions: the policy itself is wrapped (``decider`` takes the round's ``chooser`` of
  whatever ``dispatcher.policy`` is), so every decision's call is timed (``perf_counter_ns``), not
  one in 16 into coarse buckets as the production histogram does; its CPU time too
  (``thread_time_ns``, read outside the wall-clock span), which leaves out the time the
  process waited for a core: on a shared 2-core machine that wait is what a p99 of a
  20 µs call mostly measures;
* dispatch latency: the ``dispatch_seconds`` histogram's ``observe`` (request received → its
  assignment confirmed, the dispatcher's own clock) is recorded as well as passed on;
* heartbeats: the consumer callback is timed (its count and total: the event-loop time the
  flood costs inside the handler; pika's frame parsing before it is not in it);
* probes: each admission probe's duration (passive declares run one at a time per session).
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from prometheus_client import Histogram

from dispatcher.load_table import LoadTable, SubstationState
from dispatcher.policies import Policy, RoundPolicy
from dispatcher.service import Dispatcher
from messaging import BrokerSession, Delivery


@dataclass
class PhaseRecord:
    name: str
    decisions_ns: array[int] = field(default_factory=lambda: array("q"))
    # The same decisions' CPU time (this thread's): what preemption on a busy machine leaves out.
    decisions_cpu_ns: array[int] = field(default_factory=lambda: array("q"))
    holds: int = 0
    dispatch_s: array[float] = field(default_factory=lambda: array("d"))
    heartbeats: int = 0
    heartbeat_ns: int = 0
    probes_s: array[float] = field(default_factory=lambda: array("d"))
    loop_lag_s: array[float] = field(default_factory=lambda: array("d"))
    table_max: int = 0
    eligible_min: int | None = None
    real_age_max_s: float = 0.0
    # Set when the phase starts and ends: wall and process CPU clocks, refusal counters.
    started: float = 0.0
    ended: float = 0.0
    cpu_started: float = 0.0
    cpu_ended: float = 0.0
    refused_start: dict[str, float] = field(default_factory=dict)
    refused_end: dict[str, float] = field(default_factory=dict)
    # CPU seconds used so far by the other processes (broker, load, workers).
    procs_start: dict[str, float] = field(default_factory=dict)
    procs_end: dict[str, float] = field(default_factory=dict)


class Recorder:
    """Where samples go: ``current`` is the record of the phase under way."""

    def __init__(self, first: str) -> None:
        self.records: dict[str, PhaseRecord] = {}
        self.current = self.switch(first, time.monotonic(), time.process_time(), {})

    def switch(
        self,
        name: str,
        wall: float,
        cpu: float,
        refused: dict[str, float],
        procs: dict[str, float] | None = None,
    ) -> PhaseRecord:
        """End the current phase's record at ``wall``, start (or resume) ``name``'s."""
        procs = procs or {}
        old = getattr(self, "current", None)
        if old is not None:
            old.ended, old.cpu_ended, old.refused_end, old.procs_end = wall, cpu, refused, procs
        record = self.records.setdefault(name, PhaseRecord(name))
        record.started, record.cpu_started = wall, cpu
        record.refused_start, record.procs_start = refused, procs
        self.current = record
        return record

    def decided(self, ns: int, cpu_ns: int, target: str | None) -> None:
        record = self.current
        record.decisions_ns.append(ns)
        record.decisions_cpu_ns.append(cpu_ns)
        if target is None:
            record.holds += 1


class TimedPolicy:
    """A policy whose every ``choose`` is timed into the recorder."""

    def __init__(self, inner: Policy, recorder: Recorder) -> None:
        self.inner = inner
        self.name = inner.name
        self._recorder = recorder

    def choose(self, candidates: Sequence[SubstationState], request_kw: float) -> str | None:
        cpu = time.thread_time_ns()
        started = time.perf_counter_ns()
        target = self.inner.choose(candidates, request_kw)
        ended = time.perf_counter_ns()
        self._recorder.decided(ended - started, time.thread_time_ns() - cpu, target)
        return target


class TimedIndexedPolicy(TimedPolicy):
    """The same for a policy with the index's fast path (headroom): ``decider`` takes its
    round's ``chooser``, each call of which is timed."""

    def __init__(self, inner: Policy, recorder: Recorder) -> None:
        super().__init__(inner, recorder)
        self._chooser = cast(RoundPolicy, inner).chooser

    def choose_in(self, table: LoadTable, now: float, request_kw: float) -> str | None:
        table.release_due(now)
        return self.chooser(table, now)(request_kw)

    def chooser(self, table: LoadTable, now: float) -> Callable[[float], str | None]:
        choose = self._chooser(table, now)
        decided = self._recorder.decided

        def timed(request_kw: float) -> str | None:
            cpu = time.thread_time_ns()
            started = time.perf_counter_ns()
            target = choose(request_kw)
            ended = time.perf_counter_ns()
            decided(ended - started, time.thread_time_ns() - cpu, target)
            return target

        return timed


def timed_policy(inner: Policy, recorder: Recorder) -> TimedPolicy:
    if getattr(inner, "chooser", None) is not None:
        return TimedIndexedPolicy(inner, recorder)
    return TimedPolicy(inner, recorder)


class _ObservedHistogram:
    """Records each observation, then passes it on to the real histogram."""

    def __init__(self, inner: Histogram, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder

    def observe(self, amount: float, exemplar: Any = None) -> None:
        self._recorder.current.dispatch_s.append(amount)
        self._inner.observe(amount, exemplar)


def instrument(dispatcher: Dispatcher, recorder: Recorder) -> None:
    """Wrap what is timed. Before ``dispatcher.run``: the heartbeat consumer is registered
    (by attribute) when it connects."""
    dispatcher.policy = timed_policy(dispatcher.policy, recorder)
    dispatcher.metrics.dispatch_seconds = cast(
        Histogram, _ObservedHistogram(dispatcher.metrics.dispatch_seconds, recorder)
    )
    on_heartbeat = dispatcher._on_heartbeat
    probe = dispatcher._probe

    def timed_heartbeat(delivery: Delivery) -> None:
        started = time.perf_counter_ns()
        try:
            on_heartbeat(delivery)
        finally:
            record = recorder.current
            record.heartbeats += 1
            record.heartbeat_ns += time.perf_counter_ns() - started

    async def timed_probe(session: BrokerSession, sid: str) -> None:
        started = time.perf_counter()
        try:
            await probe(session, sid)
        finally:
            recorder.current.probes_s.append(time.perf_counter() - started)

    dispatcher._on_heartbeat = timed_heartbeat  # type: ignore[method-assign]
    dispatcher._probe = timed_probe  # type: ignore[method-assign]


def sample_table(dispatcher: Dispatcher, real_ids: Sequence[str], recorder: Recorder) -> None:
    """One look at the load table: its size, the eligible count, the oldest real heartbeat."""
    record = recorder.current
    now = dispatcher.clock()
    table = dispatcher.table
    record.table_max = max(record.table_max, len(table))
    eligible = table.counts(now)["eligible"]
    if record.eligible_min is None or eligible < record.eligible_min:
        record.eligible_min = eligible
    for sid in real_ids:
        state = table.get(sid)
        if state is not None:
            record.real_age_max_s = max(record.real_age_max_s, now - state.last_seen)
