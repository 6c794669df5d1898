"""``smartgrid-worker`` / ``python -m substation_worker``: run one substation."""

from __future__ import annotations

from messaging.cli import new_app, settings_command
from substation_worker.settings import WorkerSettings


def run(settings: WorkerSettings) -> None:
    # Imported here so --help stays fast and free of pika.
    from messaging.runtime import configure_logging, run_service
    from substation_worker.service import serve

    configure_logging(settings.log_level)
    run_service(lambda stop: serve(settings, stop))


app = new_app()
app.command(
    help="Run one smartgrid substation until SIGINT/SIGTERM: consume <ns>.substation.<id>, "
    "simulate charging within its capacity, heartbeat its load, serve /metrics. "
    "Example: smartgrid-worker --substation-id s1 --capacity-kw 300 --bays 4"
)(settings_command(WorkerSettings, run, doc="Run one substation worker."))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
