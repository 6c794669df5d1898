"""``smartgrid-dispatcher`` / ``python -m dispatcher``: route charge requests to substations."""

from __future__ import annotations

import asyncio

from dispatcher.settings import DispatcherSettings
from messaging.cli import new_app, settings_command


def run(settings: DispatcherSettings) -> None:
    from prometheus_client import CollectorRegistry

    from dispatcher.service import build_dispatcher
    from messaging.runtime import configure_logging, run_service, start_metrics_server

    configure_logging(settings.log_level)
    registry = CollectorRegistry()

    async def main(stop: asyncio.Event) -> None:
        dispatcher = build_dispatcher(settings, registry)
        start_metrics_server(settings.metrics_host, settings.metrics_port, registry)
        await dispatcher.run(stop)

    run_service(main)


app = new_app()
app.command(
    help="Consume <ns>.requests and republish each request to the substation the policy "
    "chooses (<ns>.substation.<id>), acking it once the broker confirmed; until SIGINT/SIGTERM."
)(settings_command(DispatcherSettings, run, doc="Run the dispatcher."))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
