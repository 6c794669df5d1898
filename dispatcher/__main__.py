"""``smartgrid-dispatcher``: route charge requests to substations by their reported load."""

from __future__ import annotations

import asyncio

import typer

from dispatcher.policies import POLICIES

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def serve(
    policy: str | None = typer.Option(
        None, envvar="SMARTGRID_POLICY", help=f"One of: {', '.join(POLICIES)}. (default headroom)"
    ),
    hold_factor: float | None = typer.Option(
        None,
        envvar="SMARTGRID_HOLD_FACTOR",
        help="headroom: hold requests once every substation has this many times its capacity "
        "promised. (default 2.0)",
    ),
    prefetch: int | None = typer.Option(
        None, envvar="SMARTGRID_PREFETCH", help="Requests in flight at once. (default 1000)"
    ),
    seed: int | None = typer.Option(None, envvar="SMARTGRID_SEED", help="Seed random choices."),
    metrics_host: str | None = typer.Option(
        None, envvar="SMARTGRID_METRICS_HOST", help="Bind /metrics here. (default 127.0.0.1)"
    ),
    metrics_port: int | None = typer.Option(
        None, envvar="SMARTGRID_METRICS_PORT", help="/metrics port, 0 to disable. (default 9100)"
    ),
    namespace: str | None = typer.Option(
        None, envvar="SMARTGRID_NAMESPACE", help="Prefix of every exchange and queue."
    ),
    amqp_url: str | None = typer.Option(
        None, envvar="SMARTGRID_AMQP_URL", help="Broker URL (amqp:// or amqps://)."
    ),
    log_level: str | None = typer.Option(None, envvar="SMARTGRID_LOG_LEVEL"),
) -> None:
    """Consume <ns>.requests and republish each to the chosen <ns>.substation.<id>."""
    from prometheus_client import CollectorRegistry

    from dispatcher.service import build_dispatcher
    from dispatcher.settings import DispatcherSettings
    from messaging.runtime import (
        build_settings,
        configure_logging,
        run_service,
        start_metrics_server,
    )

    settings = build_settings(
        DispatcherSettings,
        policy=policy,
        hold_factor=hold_factor,
        prefetch=prefetch,
        seed=seed,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        namespace=namespace,
        amqp_url=amqp_url,
        log_level=log_level,
    )
    configure_logging(settings.log_level)
    registry = CollectorRegistry()

    async def main(stop: asyncio.Event) -> None:
        dispatcher = build_dispatcher(settings, registry)
        start_metrics_server(settings.metrics_host, settings.metrics_port, registry)
        await dispatcher.run(stop)

    run_service(main)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
