"""``smartgrid-gateway`` / ``python -m gateway``: serve the HTTP API with uvicorn."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import typer

from gateway.settings import GatewaySettings
from messaging.errors import FatalBrokerError
from messaging.runtime import EXIT_BROKER_REFUSED, EXIT_FAILURE, EXIT_OK, build_settings, die

if TYPE_CHECKING:
    import uvicorn

cli = typer.Typer(
    help="smartgrid gateway: HTTP charge requests in, confirmed AMQP messages out.",
    add_completion=False,
)

# Graceful shutdown waits this much beyond the confirm timeout for in-flight requests.
SHUTDOWN_GRACE_S = 5.0


@cli.command()
def serve(
    host: str | None = typer.Option(
        None,
        "--host",
        envvar="SMARTGRID_HTTP_HOST",
        help="Address to listen on. Default: 127.0.0.1.",
    ),
    port: int | None = typer.Option(
        None, "--port", envvar="SMARTGRID_HTTP_PORT", help="Port to listen on. Default: 8000."
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
        help="Broker URL, amqp://user:pass@host:port/vhost. Default: guest on localhost:5672.",
        show_default=False,
    ),
    log_level: str | None = typer.Option(
        None,
        "--log-level",
        envvar="SMARTGRID_LOG_LEVEL",
        help="DEBUG, INFO, WARNING. Default: INFO.",
    ),
    max_body_bytes: int | None = typer.Option(
        None,
        "--max-body-bytes",
        envvar="SMARTGRID_MAX_BODY_BYTES",
        help="Largest request body accepted; larger gets 413. Default: 16384.",
    ),
    confirm_timeout: float | None = typer.Option(
        None,
        "--confirm-timeout",
        envvar="SMARTGRID_CONFIRM_TIMEOUT_S",
        help="Seconds to wait for the broker's confirm before answering 503. Default: 5.",
    ),
    retry_after: int | None = typer.Option(
        None,
        "--retry-after",
        envvar="SMARTGRID_RETRY_AFTER_S",
        help="Retry-After seconds sent with a 503. Default: 1.",
    ),
) -> None:
    """Serve POST /v1/charge-requests, /healthz, /metrics and /docs."""
    settings = build_settings(
        GatewaySettings,
        http_host=host,
        http_port=port,
        namespace=namespace,
        amqp_url=amqp_url,
        log_level=log_level,
        max_body_bytes=max_body_bytes,
        confirm_timeout_s=confirm_timeout,
        retry_after_s=retry_after,
    )
    raise typer.Exit(run(settings))


def _server_class() -> type[uvicorn.Server]:
    import uvicorn

    class GatewayServer(uvicorn.Server):
        """uvicorn's server, ending like every smartgrid service: exit 0 after a graceful stop.

        uvicorn re-raises SIGINT/SIGTERM once shut down (the process then dies by the signal,
        status 143); here the signal only triggers the graceful shutdown. A second Ctrl-C still
        forces the exit (uvicorn's handle_exit).
        """

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return GatewayServer


def run(settings: GatewaySettings) -> int:
    """Serve until SIGINT/SIGTERM (graceful: in-flight requests finish) or a fatal broker error.

    uvicorn runs the app on uvloop; the broker connection lives on that same loop (pika's
    AsyncioConnection), so there are no threads. Returns the exit code.
    """
    import uvicorn

    from gateway.app import create_app
    from gateway.publisher import AmqpRequestPublisher
    from messaging.runtime import configure_logging

    configure_logging(settings.log_level)
    publisher = AmqpRequestPublisher(settings)
    app = create_app(settings, publisher)
    server = _server_class()(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            log_config=None,  # keep the process's own logging format
            log_level=settings.log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=int(settings.confirm_timeout_s + SHUTDOWN_GRACE_S),
        )
    )

    def fatal(_exc: BaseException) -> None:
        server.should_exit = True

    publisher.on_fatal = fatal
    server.run()
    err = publisher.fatal_error
    if err is not None:
        die(EXIT_BROKER_REFUSED if isinstance(err, FatalBrokerError) else EXIT_FAILURE, str(err))
    return EXIT_OK


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
