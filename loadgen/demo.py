"""The demo: a broker, a local grid of three substations, a burst, a live view, a report.

Everything it starts it stops, and the namespace it made is deleted at the end, also after a
failure or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console, Group
from rich.text import Text

from contracts import Topology
from loadgen.broker import BrokerSetupError, delete_namespace, ensure_broker
from loadgen.burst import BurstResult, burst
from loadgen.demand import sample_demands
from loadgen.grid import GridStartError, LocalGrid, SubstationSpec
from loadgen.observe import GridObserver
from loadgen.state import GridState
from loadgen.view import (
    LiveView,
    counts_text,
    print_error,
    report_table,
    status_line,
    substation_table,
)
from messaging import AmqpSettings, MessagingError

DEMO_SUBSTATIONS = (
    SubstationSpec("s150", 150.0, 8),
    SubstationSpec("s300", 300.0, 16),
    SubstationSpec("s600", 600.0, 32),
)


@dataclass(frozen=True)
class DemoOptions:
    requests: int = 600
    concurrency: int = 32
    rate_per_s: float | None = 300.0
    seed: int | None = None
    timeout_s: float = 180.0
    policy: str = "headroom"
    time_scale: float = 3600.0
    heartbeat_interval_s: float = 1.0
    substations: tuple[SubstationSpec, ...] = DEMO_SUBSTATIONS
    log_root: Path = Path(".demo")
    keep_namespace: bool = False


@dataclass
class DemoOutcome:
    state: GridState = field(default_factory=GridState)
    burst: BurstResult | None = None
    elapsed_s: float = 0.0
    timed_out: bool = False
    interrupted: bool = False

    @property
    def succeeded(self) -> bool:
        """The whole burst went out, and every request the gateway accepted completed."""
        return (
            not self.interrupted
            and self.burst is not None
            and self.burst.sent == self.burst.requested
            and bool(self.state.accepted)
            and self.state.all_accepted_completed()
        )


def run_demo(settings: AmqpSettings, opts: DemoOptions, console: Console) -> int:
    """The whole demo; returns the exit code (0: every accepted request completed)."""
    try:
        how = ensure_broker(settings, say=console.print)
    except BrokerSetupError as exc:
        print_error(console, str(exc))
        return 1
    console.print(f"broker {settings.redacted_url()}: {how}")

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
    )
    outcome = DemoOutcome()
    console.print(
        f"starting the grid in namespace [bold]{namespace}[/]: gateway, dispatcher "
        f"(policy {opts.policy}), "
        + ", ".join(f"{s.id} ({s.capacity_kw:.0f} kW, {s.bays} bays)" for s in opts.substations)
        + f"; simulated time x{opts.time_scale:g}; logs in {grid.log_dir}/"
    )
    try:
        grid.start()
        console.print(f"grid ready; gateway at {grid.gateway_url}")
        asyncio.run(_drive(settings, topology, grid, opts, outcome, console))
    except GridStartError as exc:
        print_error(console, str(exc))
        return 1
    except MessagingError as exc:
        print_error(console, f"lost the broker: {exc}")
        return 1
    except KeyboardInterrupt:
        outcome.interrupted = True
        console.print("interrupted; stopping the grid")
    finally:
        grid.stop()
        if not opts.keep_namespace:
            _cleanup(settings, topology, [s.id for s in opts.substations], console)

    _print_report(outcome, opts, console)
    return 0 if outcome.succeeded else 1


async def _drive(
    settings: AmqpSettings,
    topology: Topology,
    grid: LocalGrid,
    opts: DemoOptions,
    outcome: DemoOutcome,
    console: Console,
) -> None:
    state = outcome.state
    demands = sample_demands(opts.requests, opts.seed)
    async with GridObserver(settings, topology, state):
        started = time.monotonic()

        def elapsed() -> float:
            return time.monotonic() - started

        def render() -> Group:
            now = datetime.now(UTC)
            return Group(Text(counts_text(state, elapsed())), substation_table(state, now))

        done = asyncio.Event()
        view = LiveView(console, render, lambda: status_line(state, datetime.now(UTC), elapsed()))
        view_task = asyncio.create_task(view.run(done))
        sender = asyncio.create_task(
            burst(
                grid.gateway_url,
                demands,
                concurrency=opts.concurrency,
                rate_per_s=opts.rate_per_s,
                deadline_s=opts.timeout_s,
                on_sent=state.on_sent,
                on_result=state.on_ingress_result,
            )
        )
        try:
            while not (sender.done() and state.all_accepted_settled()):
                if elapsed() > opts.timeout_s:
                    outcome.timed_out = True
                    break
                await asyncio.sleep(0.1)
        finally:
            outcome.elapsed_s = elapsed()
            if not sender.done():
                sender.cancel()
            done.set()
            await view_task
        if sender.done() and not sender.cancelled():
            outcome.burst = sender.result()


def _cleanup(
    settings: AmqpSettings, topology: Topology, substation_ids: list[str], console: Console
) -> None:
    try:
        asyncio.run(delete_namespace(settings, topology, substation_ids))
    except MessagingError as exc:
        print_error(console, f"could not delete namespace {topology.namespace}: {exc}")


def _print_report(outcome: DemoOutcome, opts: DemoOptions, console: Console) -> None:
    state = outcome.state
    order = [s.id for s in opts.substations]
    console.print(report_table(state.report(order)))
    accepted = len(state.accepted)
    refused = {k: v for k, v in state.ingress_statuses.items() if k != "202"}
    console.print(
        f"sent {state.sent}, accepted {accepted}, completed {state.accepted_completed}"
        + (f", not accepted {dict(refused)}" if refused else "")
        + f" in {outcome.elapsed_s:.1f}s (policy {opts.policy}, time x{opts.time_scale:g})",
        highlight=False,
    )
    if outcome.succeeded:
        console.print(f"[green]all {accepted} accepted requests completed[/]")
    elif outcome.interrupted:
        console.print("[yellow]interrupted before every request completed[/]")
    elif outcome.timed_out:
        console.print(
            f"[red]timed out after {opts.timeout_s:.0f}s: "
            f"{accepted - state.accepted_completed} accepted requests did not complete[/]"
        )
    else:
        console.print("[red]not every request was accepted and completed[/]")
