"""``smartgrid-worker`` / ``python -m substation_worker``: run one substation."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Run one smartgrid substation: consume its queue, simulate charging, heartbeat its load.",
    add_completion=False,
)


@app.command()
def run(
    substation_id: str | None = typer.Option(
        None,
        "--substation-id",
        envvar="SMARTGRID_SUBSTATION_ID",
        help="Lower-case id (queue <ns>.substation.<id>). Required.",
    ),
    capacity_kw: float | None = typer.Option(
        None,
        "--capacity-kw",
        envvar="SMARTGRID_CAPACITY_KW",
        help="Transformer capacity in kW, shared by the active sessions. Required.",
    ),
    bays: int | None = typer.Option(
        None,
        "--bays",
        envvar="SMARTGRID_BAYS",
        help="Charging bays: concurrent sessions, and the consumer prefetch. Required.",
    ),
    time_scale: float | None = typer.Option(
        None,
        "--time-scale",
        envvar="SMARTGRID_TIME_SCALE",
        help="Simulated seconds per wall second. Default: 60.",
    ),
    heartbeat_interval: float | None = typer.Option(
        None,
        "--heartbeat-interval",
        envvar="SMARTGRID_HEARTBEAT_INTERVAL_S",
        help="Seconds between load heartbeats. Default: 1.0 s.",
    ),
    charger_max_kw: float | None = typer.Option(
        None,
        "--charger-max-kw",
        envvar="SMARTGRID_CHARGER_MAX_KW",
        help="Highest power one charger delivers, kW. Default: 350 kW.",
    ),
    metrics_host: str | None = typer.Option(
        None,
        "--metrics-host",
        envvar="SMARTGRID_METRICS_HOST",
        help="Address to serve /metrics on. Default: 127.0.0.1.",
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        envvar="SMARTGRID_METRICS_PORT",
        help="Port of /metrics; 0 disables it. Default: 9200.",
    ),
    namespace: str | None = typer.Option(
        None,
        "--namespace",
        envvar="SMARTGRID_NAMESPACE",
        help="Prefix of every exchange and queue. Default: smartgrid.",
    ),
    amqp_url: str | None = typer.Option(
        None,
        "--amqp-url",
        envvar="SMARTGRID_AMQP_URL",
        help="amqp:// URL of the broker. Default: amqp://guest:***@localhost:5672/%2F.",
    ),
    log_level: str | None = typer.Option(
        None,
        "--log-level",
        envvar="SMARTGRID_LOG_LEVEL",
        help="DEBUG, INFO, WARNING or ERROR. Default: INFO.",
    ),
) -> None:
    """Run one substation worker until SIGINT/SIGTERM."""
    # Imported here so --help stays fast and free of pika.
    from messaging.runtime import build_settings, configure_logging, run_service
    from substation_worker.service import serve
    from substation_worker.settings import WorkerSettings

    settings = build_settings(
        WorkerSettings,
        substation_id=substation_id,
        capacity_kw=capacity_kw,
        bays=bays,
        time_scale=time_scale,
        heartbeat_interval_s=heartbeat_interval,
        charger_max_kw=charger_max_kw,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        namespace=namespace,
        amqp_url=amqp_url,
        log_level=log_level,
    )
    configure_logging(settings.log_level)
    run_service(lambda stop: serve(settings, stop))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
