"""One run of the flood bench: workers, the instrumented dispatcher, the load process, the
phases, the checks afterwards and the cleanup. See ``bench.flood`` for the design."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bench.flood.grid import (
    Worker,
    Workers,
    broker_pid,
    cleanup,
    management_view,
    queues_that_exist,
    stand_in,
)
from bench.flood.instrument import PhaseRecord, Recorder, instrument, sample_table
from bench.flood.load import LoadConfig, LoadPlan, config_json, parse_result
from bench.flood.report import OTHERS, OUTCOMES, PhaseFigures, percentile
from bench.flood.schedule import DRAIN, PHASES, Phase, fake_ids
from bench.procfs import preemptions, process_cpu_s
from bench.throughput.broker import new_namespace
from dispatcher.service import Dispatcher, build_dispatcher
from dispatcher.settings import DispatcherSettings

log = logging.getLogger(__name__)

WORKERS = (Worker("s150", 150, 16), Worker("s300", 300, 32), Worker("s600", 600, 64))
READY_TIMEOUT_S = 60.0
LOOP_LAG_TICK_S = 0.01
TABLE_TICK_S = 0.1
# Every outcome of smartgrid_dispatcher_heartbeats_total, snapshotted at each phase switch.
HEARTBEAT_OUTCOMES = ("applied", "stale", "invalid", "future", "forbidden", *OUTCOMES)


@dataclass
class Options(LoadPlan):
    time_scale: float
    heartbeat_s: float
    log_dir: Path


@dataclass
class Outcome:
    namespace: str
    phases: list[PhaseFigures]
    load: dict[str, Any]
    settings: dict[str, Any]
    table_at_end: int = 0
    fake_probed: int = 0
    fake_queues: int | None = None
    fake_queue_ids: list[str] = field(default_factory=list)
    real_queues_seen: int = 0
    management: dict[str, Any] | None = None
    heartbeats_total: dict[str, int] = field(default_factory=dict)
    aborted: str | None = None

    def phase(self, name: str) -> PhaseFigures:
        (p,) = [p for p in self.phases if p.name == name]
        return p

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "phases": [asdict(p) for p in self.phases],
            "load": self.load,
            "settings": self.settings,
            "table_at_end": self.table_at_end,
            "fake_probed": self.fake_probed,
            "fake_queues": self.fake_queues,
            "fake_queue_ids": self.fake_queue_ids,
            "real_queues_seen": self.real_queues_seen,
            "management": self.management,
            "heartbeats_total": self.heartbeats_total,
            "aborted": self.aborted,
        }


def _refusals(registry: CollectorRegistry) -> dict[str, float]:
    return {
        o: registry.get_sample_value("smartgrid_dispatcher_heartbeats_total", {"outcome": o}) or 0.0
        for o in HEARTBEAT_OUTCOMES
    }


async def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def figures(record: PhaseRecord, phase: Phase | None, load: dict[str, Any]) -> PhaseFigures:
    """One phase's row from what the dispatcher's instruments and the load process recorded."""
    name = record.name
    wall = max(1e-9, record.ended - record.started)
    decisions = [ns / 1e3 for ns in record.decisions_ns]
    decisions_cpu = [ns / 1e3 for ns in record.decisions_cpu_ns]
    dispatch = [s * 1e3 for s in record.dispatch_s]
    lags = [s * 1e3 for s in record.loop_lag_s]
    probes = [s * 1e3 for s in record.probes_s]
    start, end = record.refused_start, record.refused_end
    start_procs, end_procs = record.procs_start, record.procs_end
    refused = {o: round(end.get(o, 0) - start.get(o, 0)) for o in HEARTBEAT_OUTCOMES}
    beats = record.heartbeats
    return PhaseFigures(
        name=name,
        seconds=round(phase.seconds if phase is not None else wall, 2),
        sent=int(load.get("sent", {}).get(name, 0)),
        completed=int(load.get("completed", {}).get(name, 0)),
        failed=int(load.get("failed", {}).get(name, 0)),
        decisions=len(decisions),
        holds=record.holds,
        decision_p50_us=percentile(decisions, 50),
        decision_p99_us=percentile(decisions, 99),
        decision_max_us=max(decisions, default=None),
        decision_cpu_p50_us=percentile(decisions_cpu, 50),
        decision_cpu_p99_us=percentile(decisions_cpu, 99),
        dispatched=len(dispatch),
        dispatch_p50_ms=percentile(dispatch, 50),
        dispatch_p99_ms=percentile(dispatch, 99),
        heartbeats=beats,
        fake_published=int(load.get("fake_published", 0)) if name == "flood" else 0,
        heartbeat_mean_us=record.heartbeat_ns / beats / 1e3 if beats else None,
        heartbeat_busy_pct=100 * record.heartbeat_ns / 1e9 / wall,
        probes=len(probes),
        probe_p99_ms=percentile(probes, 99),
        loop_lag_p99_ms=percentile(lags, 99),
        loop_lag_max_ms=max(lags, default=None),
        cpu_pct=100 * (record.cpu_ended - record.cpu_started) / wall,
        others_cpu_pct={
            k: round(100 * (end_procs[k] - start_procs[k]) / wall, 1)
            for k in OTHERS
            if k in start_procs and k in end_procs
        },
        preempted_per_s=(
            round((end_procs["preemptions"] - start_procs["preemptions"]) / wall, 1)
            if "preemptions" in start_procs and "preemptions" in end_procs
            else None
        ),
        refused=refused,
        table_max=record.table_max,
        eligible_min=record.eligible_min,
        real_heartbeat_age_max_s=record.real_age_max_s,
    )


class Bench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.topology = new_namespace("flood")
        self.registry = CollectorRegistry()
        self.settings = DispatcherSettings(
            namespace=self.topology.namespace, metrics_port=0, seed=opts.seed
        )
        self.recorder = Recorder("startup")
        self.real_ids = [w.id for w in WORKERS]
        self.fakes = fake_ids(opts.fakes, opts.seed)
        self.workers = Workers(
            self.settings, self.topology, WORKERS, time_scale=opts.time_scale,
            heartbeat_s=opts.heartbeat_s, log_dir=opts.log_dir,
        )  # fmt: skip
        self.load_proc: asyncio.subprocess.Process | None = None
        self.aborted: str | None = None
        self.broker_pid = broker_pid(self.settings)

    def _procs_cpu(self) -> dict[str, float]:
        """CPU seconds so far of the other processes on the machine that take part."""
        out: dict[str, float] = {}
        broker = process_cpu_s(self.broker_pid)
        if broker is not None:
            out["broker"] = broker
        if self.load_proc is not None:
            load = process_cpu_s(self.load_proc.pid)
            if load is not None:
                out["load"] = load
        workers = [process_cpu_s(pid) for pid in self.workers.pids]
        if workers and None not in workers:
            out["workers"] = sum(w for w in workers if w is not None)
        switched = preemptions()
        if switched is not None:
            out["preemptions"] = switched
        return out

    def _config(self) -> LoadConfig:
        plan = {f.name: getattr(self.opts, f.name) for f in fields(LoadPlan)}
        return LoadConfig(**plan, namespace=self.topology.namespace)

    def _switch(self, name: str) -> None:
        self.recorder.switch(
            name,
            time.monotonic(),
            time.process_time(),
            _refusals(self.registry),
            self._procs_cpu(),
        )

    async def _watch_loop(self) -> None:
        """Event-loop lag: how late a 10 ms sleep wakes (uvloop's timers have 1 ms steps)."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LOOP_LAG_TICK_S)
            self.recorder.current.loop_lag_s.append(time.perf_counter() - started - LOOP_LAG_TICK_S)

    async def _watch_table(self, dispatcher: Dispatcher) -> None:
        """The table's size, every 0.1 s; a fake id in it stops the flood at once (a dispatcher
        that admits fakes may also declare queues for them, which wedged the shared broker)."""
        while True:
            sample_table(dispatcher, self.real_ids, self.recorder)
            extra = len(dispatcher.table) - len(self.real_ids)
            if extra > 0 and self.aborted is None:
                self.aborted = f"{extra} fake ids admitted to the table: flood stopped"
                print(f"ABORT: {self.aborted}", file=sys.stderr, flush=True)
                if self.load_proc is not None and self.load_proc.returncode is None:
                    self.load_proc.terminate()
            await asyncio.sleep(TABLE_TICK_S)

    async def _wait_ready(self, dispatcher: Dispatcher) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while dispatcher.table.counts(dispatcher.clock())["eligible"] < len(self.real_ids):
            dead = self.workers.dead()
            if dead:
                tails = "\n".join(f"--- {s}:\n{self.workers.log_tail(s)}" for s in dead)
                raise RuntimeError(f"workers exited while starting: {dead}\n{tails}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the dispatcher did not hear every worker within {READY_TIMEOUT_S:.0f} s; "
                    f"logs in {self.opts.log_dir}"
                )
            await asyncio.sleep(0.1)

    async def _run_load(self) -> dict[str, Any]:
        o = self.opts
        config = self._config()
        phases = config.phases()
        stderr = (o.log_dir / "load.log").open("ab")
        try:
            proc = self.load_proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.flood.load", config_json(config),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                preexec_fn=stand_in(),  # gone if this process dies; niced
            )  # fmt: skip
            assert proc.stdin is not None
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
            if line.strip() != b"ready":
                raise RuntimeError(f"the load process said {line!r}; see {o.log_dir}/load.log")
            t0 = time.monotonic() + 0.2
            proc.stdin.write(f"{t0!r}\n".encode())
            await proc.stdin.drain()
            for p in phases:
                await _sleep_until(t0 + p.start_s)
                self._switch(p.name)
                print(f"  {p.name} ({p.seconds:g} s)", file=sys.stderr, flush=True)
            await _sleep_until(t0 + phases[-1].end_s)
            self._switch(DRAIN)
            # Its own bounds: the settling (30 s) and 5 s per load loop, beyond the phases.
            line = await asyncio.wait_for(proc.stdout.readline(), config.settle_s + 30)
            await asyncio.wait_for(proc.wait(), 15)
            if not line:
                raise RuntimeError(f"the load process ended early; see {o.log_dir}/load.log")
            return parse_result(line.decode())
        finally:
            stderr.close()

    async def run(self) -> Outcome:
        dispatcher = build_dispatcher(self.settings, self.registry)
        instrument(dispatcher, self.recorder)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        outcome = Outcome(
            self.topology.namespace, [], {},
            {"admit_per_s": self.settings.admit_per_s,
             "admit_burst": 2 * self.settings.admit_per_s,
             "max_substations": self.settings.max_substations,
             "policy": self.settings.policy, "prefetch": self.settings.prefetch},
        )  # fmt: skip
        dispatching: asyncio.Task[None] | None = None
        try:
            self.workers.start()
            dispatching = asyncio.create_task(dispatcher.run(stop))
            await self._wait_ready(dispatcher)
            tasks = [
                asyncio.create_task(self._watch_loop()),
                asyncio.create_task(self._watch_table(dispatcher)),
            ]
            outcome.load = await self._run_load()
            await asyncio.sleep(0.5)  # the last confirms and heartbeats
            self._switch("end")
            outcome.table_at_end = len(dispatcher.table)
            outcome.heartbeats_total = {k: round(v) for k, v in _refusals(self.registry).items()}
        finally:
            for t in tasks:
                t.cancel()
            if self.load_proc is not None and self.load_proc.returncode is None:
                self.load_proc.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.load_proc.wait(), 10)
            stop.set()
            if dispatching is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dispatching, 20)
            await asyncio.to_thread(self.workers.stop)
            print("  checking the fake ids' queues", file=sys.stderr, flush=True)
            try:
                await self._check_queues(outcome)
            finally:
                await cleanup(
                    self.settings, self.topology, [*self.real_ids, *outcome.fake_queue_ids]
                )
        outcome.aborted = self.aborted
        phases = {p.name: p for p in self._config().phases()}
        outcome.phases = [
            figures(self.recorder.records[name], phases.get(name), outcome.load)
            for name in PHASES
            if name in self.recorder.records
        ]
        return outcome

    async def _check_queues(self, outcome: Outcome) -> None:
        try:
            found = await queues_that_exist(self.settings, self.topology, self.fakes)
            real = await queues_that_exist(self.settings, self.topology, self.real_ids)
        except Exception as exc:  # reported as not checked; cleanup goes on
            log.warning("probing the fake ids' queues failed: %s", exc)
            print(f"probing the fake ids' queues failed: {exc}", file=sys.stderr)
        else:
            outcome.fake_probed = len(self.fakes)
            outcome.fake_queues = len(found)
            outcome.fake_queue_ids = found
            outcome.real_queues_seen = len(real)
        outcome.management = await asyncio.to_thread(management_view, self.settings, self.topology)
