"""The demo: a broker, a local grid of three substations, a burst, a live view, a report.

Everything it starts it stops, and the namespace it made is deleted at the end, also after a
failure or a signal (SIGINT, SIGTERM: the report so far, exit 128 + the signal's number).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from contracts import Topology
from dispatcher.policies import PolicyName
from loadgen.bounded import BROKER_TIMEOUT_S
from loadgen.broker import BrokerSetupError, broker_for_run, delete_namespace
from loadgen.demo_stations import (
    FleetThread,
    StationsError,
    StationsOptions,
    StationsSummary,
    summarize,
    summary_lines,
    wait_for,
    walk_ins_drain_s,
    worker_counts,
)
from loadgen.grid import HOST, LocalGrid, SubstationSpec, free_ports
from loadgen.live import run_live
from loadgen.report import build_report, print_report
from loadgen.run import RunOptions, RunResult
from loadgen.signals import StopSignals
from loadgen.state import DEFAULT_TOP
from loadgen.view import print_error
from messaging import AmqpSettings, MessagingError, exit_codes

# Ctrl-C without a signal handler to tell which signal it was (a KeyboardInterrupt).
EXIT_INTERRUPTED = exit_codes.INTERRUPTED

DEMO_SUBSTATIONS = (
    SubstationSpec("s150", 150.0, 8),
    SubstationSpec("s300", 300.0, 16),
    SubstationSpec("s600", 600.0, 32),
)


@dataclass(frozen=True)
class DemoOptions:
    requests: int = 600
    concurrency: int = 64
    rate_per_s: float = 300.0
    seed: int | None = None
    timeout_s: float = 180.0
    policy: PolicyName = "headroom"
    time_scale: float = 3600.0
    heartbeat_interval_s: float = 1.0
    substations: tuple[SubstationSpec, ...] = DEMO_SUBSTATIONS
    log_root: Path = Path(".demo")
    keep_namespace: bool = False
    # Keep the grid up this long after the burst, e.g. to look at it in Prometheus.
    linger_s: float = 0.0
    top: int = DEFAULT_TOP
    broker_timeout_s: float = BROKER_TIMEOUT_S
    # With stations: one more substation, served by simulated OCPP stations (demo_stations).
    stations: StationsOptions | None = None

    @property
    def all_substations(self) -> tuple[SubstationSpec, ...]:
        extra = (self.stations.spec(),) if self.stations else ()
        return (*self.substations, *extra)


def run_demo(
    settings: AmqpSettings,
    opts: DemoOptions,
    console: Console,
    signals: StopSignals | None = None,
) -> int:
    """The whole demo; returns the exit code (0: every request accepted and completed).

    The broker is the one at the settings' URL, or one started for the demo: a RabbitMQ
    container (removed when the demo ends, however it ends) or a local rabbitmq-server."""
    interruptible = signals.raising if signals else contextlib.nullcontext
    with contextlib.ExitStack() as stack:
        try:
            # A signal while the broker starts removes a half-started container too.
            with interruptible():
                settings, how = stack.enter_context(broker_for_run(settings, say=console.print))
        except BrokerSetupError as exc:
            print_error(console, str(exc))
            return 1
        except KeyboardInterrupt:
            console.print("interrupted while getting a broker")
            return signals.exit_code if signals and signals.exit_code else EXIT_INTERRUPTED
        console.print(f"broker {settings.redacted_url()}: {how}")
        return _run_demo(settings, opts, console, signals)


def _run_demo(
    settings: AmqpSettings,
    opts: DemoOptions,
    console: Console,
    signals: StopSignals | None,
) -> int:
    interruptible = signals.raising if signals else contextlib.nullcontext
    namespace = f"demo-{secrets.token_hex(4)}"
    topology = Topology(namespace)
    settings = settings.model_copy(update={"namespace": namespace})
    substations = opts.all_substations
    process_env: dict[str, dict[str, str]] = {}
    fleet: FleetThread | None = None
    if opts.stations:
        (ocpp_port,) = free_ports(1)
        process_env[f"worker-{opts.stations.substation_id}"] = opts.stations.worker_env(ocpp_port)
        fleet = FleetThread(f"ws://{HOST}:{ocpp_port}/ocpp", opts.stations, opts.time_scale)
    grid = LocalGrid(
        substations,
        settings=settings,
        namespace=namespace,
        policy=opts.policy,
        time_scale=opts.time_scale,
        heartbeat_interval_s=opts.heartbeat_interval_s,
        log_dir=opts.log_root / namespace,
        log_level="INFO",
        process_env=process_env,
        # `make prometheus` (loadgen.local_prometheus) scrapes whatever is listed here.
        targets_dir=opts.log_root / "prometheus",
    )
    console.print(
        f"starting the grid in namespace [bold]{namespace}[/]: gateway, dispatcher "
        f"(policy {opts.policy}), "
        + ", ".join(f"{s.id} ({s.capacity_kw:.0f} kW, {s.bays} bays)" for s in substations)
        + f"; simulated time x{opts.time_scale:g}; logs in {grid.log_dir}/"
    )
    result: RunResult | None = None
    summary: StationsSummary | None = None
    failure: str | None = None
    try:
        with interruptible():
            grid.start()
            if fleet is not None and opts.stations is not None:
                failure = _start_stations(fleet, grid, opts, console)
        if failure is None:
            console.print(
                f"grid ready; sending {opts.requests} requests at {opts.rate_per_s:g}/s "
                f"to the gateway at {grid.gateway_url}"
            )
            options = RunOptions(
                via="http",
                profile="steady",
                rate=opts.rate_per_s,
                requests=opts.requests,
                concurrency=opts.concurrency,
                seed=opts.seed,
                settle_s=opts.timeout_s,
                gateway_url=grid.gateway_url,
                top=opts.top,
                broker_timeout_s=opts.broker_timeout_s,
            )
            if fleet is not None:
                fleet.start_walk_ins()
            result = run_live(settings, options, console, signals)
            if fleet is not None and opts.stations is not None and not result.interrupted:
                with interruptible():
                    summary = _finish_stations(fleet, grid, opts, result, console)
            if opts.linger_s > 0 and not result.interrupted:
                console.print(
                    f"the grid stays up for {opts.linger_s:g} s (Ctrl-C stops it); metrics: "
                    + ", ".join(grid.metrics_urls.values())
                )
                with interruptible():
                    time.sleep(opts.linger_s)
    except KeyboardInterrupt:
        console.print("interrupted; stopping the grid")
    except StationsError as exc:
        failure = f"OCPP substation: {exc}"
    finally:
        if fleet is not None:
            fleet.stop()
        grid.stop()
        if not opts.keep_namespace:
            _cleanup(settings, topology, [s.id for s in substations], console, opts)
    interrupted = signals.exit_code if signals and signals.exit_code else EXIT_INTERRUPTED
    if failure is not None and result is None:
        print_error(console, failure)
        return exit_codes.FAILURE
    if result is None:
        return interrupted
    report = build_report(result, [s.id for s in substations], opts.top)
    print_report(console, report, opts.top)
    if summary is not None:
        for text in summary_lines(summary):
            console.print(text, highlight=False, markup=False, soft_wrap=True)
    if failure is not None:  # the stations failed after the burst
        print_error(console, failure)
        return exit_codes.FAILURE
    if result.interrupted or (signals and signals.exit_code):
        console.print("[yellow]interrupted before every request completed[/]")
        return interrupted
    everyone = report.sent == report.accepted == opts.requests
    problems = summary.problems if summary is not None else []
    for problem in problems:
        print_error(console, f"OCPP substation: {problem}")
    if report.exit_code == exit_codes.OK and everyone and not problems:
        console.print(
            f"[green]all {report.accepted} accepted requests completed[/] in "
            f"{report.elapsed_s:.1f}s (policy {opts.policy}, time x{opts.time_scale:g})"
        )
        return exit_codes.OK
    if report.exit_code == exit_codes.UNFINISHED and everyone and not problems:
        console.print(f"[yellow]not done within --timeout {opts.timeout_s:g}s[/]")
        return exit_codes.UNFINISHED
    if problems:
        console.print("[red]the OCPP substation's figures do not add up[/]")
        return exit_codes.FAILURE
    console.print("[red]not every request was accepted and completed[/]")
    return exit_codes.FAILURE


# Stations connect, boot and get their profiles in well under a second on loopback.
STATIONS_READY_S = 30.0
# The worker counts a station's last Ended this long after the station sent it, at most.
WORKER_CATCH_UP_S = 10.0


def _start_stations(
    fleet: FleetThread, grid: LocalGrid, opts: DemoOptions, console: Console
) -> str | None:
    """Start the stations and wait until each has booted and got its profiles, and the worker
    counts them; None, or why not (the demo then fails)."""
    assert opts.stations is not None
    sid = opts.stations.substation_id
    metrics = grid.metrics_urls[f"worker-{sid}"]
    n = opts.stations.count
    fleet.start()

    def ready() -> str | None:
        snap = fleet.snapshot()
        connected = worker_counts(metrics, sid).stations_connected
        if snap.booted == snap.defaults_given == n and connected == n:
            return None
        counted = "?" if connected is None else f"{connected:g}"
        return (
            f"{snap.booted}/{n} stations booted, {snap.defaults_given}/{n} given their "
            f"profiles, the worker counts {counted} connected"
        )

    missing = wait_for(ready, STATIONS_READY_S)
    if missing is not None:
        log = grid.log_dir / f"worker-{sid}.log"
        return f"the stations were not ready within {STATIONS_READY_S:g}s: {missing} (see {log})"
    # The dispatcher learns the substation's EVSEs (its bays) from its next heartbeat.
    time.sleep(2 * opts.heartbeat_interval_s)
    console.print(
        f"{n} OCPP stations of {opts.stations.evses} EVSEs connected to {sid} at {fleet.url}; "
        f"{opts.stations.walk_ins} walk-ins to come"
    )
    fleet.ready_at = time.monotonic()
    return None


def _finish_stations(
    fleet: FleetThread,
    grid: LocalGrid,
    opts: DemoOptions,
    result: RunResult,
    console: Console,
) -> StationsSummary:
    """After the burst: no more walk-ins, those plugged in leave, the worker has counted every
    ended transaction; then the figures, compared."""
    assert opts.stations is not None
    sid = opts.stations.substation_id
    metrics = grid.metrics_urls[f"worker-{sid}"]
    fleet.stop_walk_ins()
    drain_s = walk_ins_drain_s(opts.time_scale)
    problems: list[str] = []

    def drained() -> str | None:
        charging = fleet.snapshot().charging
        return None if charging == 0 else f"{charging} cars still charging on the stations"

    console.print(f"waiting for the cars on the stations to leave (at most {drain_s:.0f}s)")
    still = wait_for(drained, drain_s)
    if still is not None:
        problems.append(f"{still} {drain_s:.0f}s after the burst (their drivers should have left)")

    def caught_up() -> str | None:
        snap = fleet.snapshot()
        counts = worker_counts(metrics, sid)
        if counts.sessions_completed == len(snap.ended_wh):
            return None
        return (
            f"the worker counted {counts.sessions_completed} completed sessions, the stations "
            f"ended {len(snap.ended_wh)}"
        )

    wait_for(caught_up, WORKER_CATCH_UP_S)
    return summarize(
        opts.stations,
        fleet.snapshot(since=fleet.ready_at),
        result.state.own_completions(),
        worker_counts(metrics, sid),
        problems,
    )


def _cleanup(
    settings: AmqpSettings,
    topology: Topology,
    substation_ids: list[str],
    console: Console,
    opts: DemoOptions,
) -> None:
    deleting = delete_namespace(
        settings, topology, substation_ids, call_timeout_s=opts.broker_timeout_s
    )
    try:
        if asyncio.run(deleting):
            return
        why = "the broker did not answer in time"
    except MessagingError as exc:
        why = str(exc)
    print_error(console, f"could not delete namespace {topology.namespace}: {why}")
