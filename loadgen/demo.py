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
from loadgen.bounded import BROKER_TIMEOUT_S
from loadgen.broker import BrokerSetupError, broker_for_run, delete_namespace
from loadgen.grid import LocalGrid, SubstationSpec
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
    policy: str = "headroom"
    time_scale: float = 3600.0
    heartbeat_interval_s: float = 1.0
    substations: tuple[SubstationSpec, ...] = DEMO_SUBSTATIONS
    log_root: Path = Path(".demo")
    keep_namespace: bool = False
    # Keep the grid up this long after the burst, e.g. to look at it in Prometheus.
    linger_s: float = 0.0
    top: int = DEFAULT_TOP
    broker_timeout_s: float = BROKER_TIMEOUT_S


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
    grid = LocalGrid(
        opts.substations,
        settings=settings,
        namespace=namespace,
        policy=opts.policy,
        time_scale=opts.time_scale,
        heartbeat_interval_s=opts.heartbeat_interval_s,
        log_dir=opts.log_root / namespace,
        log_level="INFO",
        # `make prometheus` (loadgen.local_prometheus) scrapes whatever is listed here.
        targets_dir=opts.log_root / "prometheus",
    )
    console.print(
        f"starting the grid in namespace [bold]{namespace}[/]: gateway, dispatcher "
        f"(policy {opts.policy}), "
        + ", ".join(f"{s.id} ({s.capacity_kw:.0f} kW, {s.bays} bays)" for s in opts.substations)
        + f"; simulated time x{opts.time_scale:g}; logs in {grid.log_dir}/"
    )
    result: RunResult | None = None
    try:
        with interruptible():
            grid.start()
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
        result = run_live(settings, options, console, signals)
        if opts.linger_s > 0 and not result.interrupted:
            console.print(
                f"the grid stays up for {opts.linger_s:g} s (Ctrl-C stops it); metrics: "
                + ", ".join(grid.metrics_urls.values())
            )
            with interruptible():
                time.sleep(opts.linger_s)
    except KeyboardInterrupt:
        console.print("interrupted; stopping the grid")
    finally:
        grid.stop()
        if not opts.keep_namespace:
            _cleanup(settings, topology, [s.id for s in opts.substations], console, opts)
    interrupted = signals.exit_code if signals and signals.exit_code else EXIT_INTERRUPTED
    if result is None:
        return interrupted
    report = build_report(result, [s.id for s in opts.substations], opts.top)
    print_report(console, report, opts.top)
    if result.interrupted or (signals and signals.exit_code):
        console.print("[yellow]interrupted before every request completed[/]")
        return interrupted
    everyone = report.sent == report.accepted == opts.requests
    if report.exit_code == exit_codes.OK and everyone:
        console.print(
            f"[green]all {report.accepted} accepted requests completed[/] in "
            f"{report.elapsed_s:.1f}s (policy {opts.policy}, time x{opts.time_scale:g})"
        )
        return exit_codes.OK
    if report.exit_code == exit_codes.UNFINISHED and everyone:
        console.print(f"[yellow]not done within --timeout {opts.timeout_s:g}s[/]")
        return exit_codes.UNFINISHED
    console.print("[red]not every request was accepted and completed[/]")
    return exit_codes.FAILURE


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
