"""``smartgrid-loadgen`` / ``python -m loadgen``: drive and watch a smartgrid.

Commands: ``demo`` (everything, locally), ``burst`` (POST requests to a gateway), ``watch`` (live
substation table from heartbeats), ``ensure-broker`` (start a local RabbitMQ if none answers).
Exit codes: 0 ok, 1 the run failed (or no broker), 2 invalid settings or options.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

app = typer.Typer(
    help="Drive load into a smartgrid and watch what it does.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# -- options shared by several commands -----------------------------------------------------

AMQP_URL = typer.Option(
    None, "--amqp-url", envvar="SMARTGRID_AMQP_URL", help="Broker URL.", show_default=False
)
NAMESPACE = typer.Option(
    None, "--namespace", envvar="SMARTGRID_NAMESPACE", help="Namespace of the grid to follow."
)
LOG_LEVEL = typer.Option(
    None, "--log-level", envvar="SMARTGRID_LOG_LEVEL", help="Log level. (default WARNING)"
)
SEED = typer.Option(None, "--seed", help="Seed the demand (energy, power) for a repeatable run.")
CONCURRENCY = typer.Option(32, "--concurrency", min=1, max=1000, help="Requests in flight.")
RATE = typer.Option(
    None, "--rate", min=0.1, help="Requests per second at most (default: as fast as allowed)."
)


def _settings(**overrides: Any) -> Any:
    from loadgen.settings import LoadgenSettings
    from messaging.runtime import build_settings, configure_logging

    overrides.setdefault("log_level", None)
    settings = build_settings(LoadgenSettings, **overrides)
    # Quiet by default: loadgen's own output is the point; SMARTGRID_LOG_LEVEL turns it up.
    level = (overrides["log_level"] or "WARNING").upper()
    configure_logging(level)
    if level != "DEBUG":
        # pika logs every refused connection as ERROR; loadgen reports those itself.
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    return settings


@contextmanager
def _friendly_errors(console: Console) -> Iterator[None]:
    """Known failures become one clear line and exit 1, never a traceback."""
    from loadgen.broker import BrokerSetupError
    from loadgen.grid import GridStartError
    from loadgen.view import print_error
    from messaging.errors import MessagingError

    try:
        yield
    except (BrokerSetupError, GridStartError, MessagingError) as exc:
        print_error(console, str(exc))
        raise typer.Exit(EXIT_FAILED) from None


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # CI logs and pipes: rich would assume 80 columns and fold the tables.
        console.width = 140
    return console


@app.command("ensure-broker")
def ensure_broker_cmd(amqp_url: str | None = AMQP_URL) -> None:
    """Make sure RabbitMQ answers; start a local one (Docker or rabbitmq-server) if not."""
    from loadgen.broker import ensure_broker

    console = _console()
    settings = _settings(amqp_url=amqp_url)
    with _friendly_errors(console):
        how = ensure_broker(settings, say=console.print)
    console.print(f"RabbitMQ at {settings.redacted_url()}: {how}")


@app.command("burst")
def burst_cmd(
    requests: int = typer.Option(100, "--requests", "-n", min=1, max=100_000, help="How many."),
    gateway_url: str | None = typer.Option(
        None, "--gateway-url", envvar="SMARTGRID_GATEWAY_URL", help="(default 127.0.0.1:8000)"
    ),
    concurrency: int = CONCURRENCY,
    rate: float | None = RATE,
    seed: int | None = SEED,
    timeout: float = typer.Option(300.0, "--timeout", min=1, help="Give up after seconds."),
) -> None:
    """POST charge requests to the gateway and count the answers (202 = accepted)."""
    from loadgen.burst import burst
    from loadgen.demand import sample_demands

    console = _console()
    settings = _settings(gateway_url=gateway_url)
    demands = sample_demands(requests, seed)
    try:
        result = asyncio.run(
            burst(
                settings.gateway_url,
                demands,
                concurrency=concurrency,
                rate_per_s=rate,
                deadline_s=timeout,
            )
        )
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(result.outcomes.items()))
    console.print(
        f"sent {result.sent}/{result.requested} to {settings.gateway_url} in "
        f"{result.elapsed_s:.1f}s ({result.sent / max(result.elapsed_s, 1e-9):.0f}/s); "
        f"answers {answers or 'none'}" + ("; timed out" if result.timed_out else "")
    )
    if len(result.accepted) != result.requested:
        raise typer.Exit(EXIT_FAILED)


@app.command("watch")
def watch_cmd(
    namespace: str | None = NAMESPACE,
    amqp_url: str | None = AMQP_URL,
    duration: float | None = typer.Option(
        None, "--duration", min=0.1, help="Stop after seconds (default: until Ctrl-C)."
    ),
    log_level: str | None = LOG_LEVEL,
) -> None:
    """Live table of every substation, from its heartbeats."""
    from loadgen.watch import watch

    console = _console()
    settings = _settings(namespace=namespace, amqp_url=amqp_url, log_level=log_level)
    # Ctrl-C is the normal way to end a watch.
    with _friendly_errors(console), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch(settings, console, duration))


@app.command("demo")
def demo_cmd(
    requests: int = typer.Option(600, "--requests", "-n", min=1, max=100_000),
    policy: str = typer.Option("headroom", "--policy", help="Dispatch policy to demonstrate."),
    time_scale: float = typer.Option(
        3600.0, "--time-scale", min=1, help="Simulated seconds per wall second."
    ),
    concurrency: int = CONCURRENCY,
    rate: float | None = typer.Option(300.0, "--rate", min=0.1, help="Requests per second."),
    seed: int | None = SEED,
    timeout: float = typer.Option(
        180.0, "--timeout", min=1, help="Give up if not all done after seconds."
    ),
    keep_namespace: bool = typer.Option(
        False, "--keep-namespace", help="Leave the demo's queues and exchanges for inspection."
    ),
    amqp_url: str | None = AMQP_URL,
    log_level: str | None = LOG_LEVEL,
) -> None:
    """Local grid of 150/300/600 kW substations, a burst through the gateway, live load, report.

    Starts a broker if none answers, runs everything in a fresh namespace, stops every process
    and deletes the namespace at the end. Exit 0 when every accepted request completed.
    """
    from dispatcher.policies import POLICIES
    from loadgen.demo import DemoOptions, run_demo

    if policy not in POLICIES:
        raise typer.BadParameter(f"choose one of {', '.join(POLICIES)}", param_hint="--policy")
    console = _console()
    settings = _settings(amqp_url=amqp_url, log_level=log_level)
    opts = DemoOptions(
        requests=requests,
        concurrency=concurrency,
        rate_per_s=rate,
        seed=seed,
        timeout_s=timeout,
        policy=policy,
        time_scale=time_scale,
        keep_namespace=keep_namespace,
    )
    with _friendly_errors(console):
        code = run_demo(settings, opts, console)
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
