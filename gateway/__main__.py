"""``smartgrid-gateway`` / ``python -m gateway``: serve the HTTP API with uvicorn."""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import signal
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.settings import GatewaySettings
from messaging.cli import new_app, settings_command
from messaging.errors import FatalBrokerError
from messaging.runtime import EXIT_BROKER_REFUSED, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, die

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

log = logging.getLogger("gateway")

# Graceful shutdown waits this much beyond the confirm timeout for in-flight requests.
SHUTDOWN_GRACE_S = 5.0
# Open files needed beside the HTTP connections: the listener, the broker, logs, the runtime.
SPARE_FILES = 64


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


def uvicorn_config(app: FastAPI, settings: GatewaySettings) -> uvicorn.Config:
    """How the gateway serves HTTP (also what bench.throughput serves its no-broker twin with)."""
    import uvicorn

    from gateway.limits import ConnectionLimits, limited_protocol

    refused = app.state.metrics.refused_connections
    limits = ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=settings.max_connections,
        retry_after_s=settings.retry_after_s,
        on_refusal=lambda status: refused.labels(str(status)).inc(),
    )
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        http=limited_protocol(limits),  # httptools, with limits on what precedes the body
        ws="none",  # no WebSocket route: an upgrade would leave the protocol (and its limits)
        timeout_keep_alive=settings.keep_alive_timeout_s,
        lifespan="on",
        log_config=None,  # keep the process's own logging format
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=int(settings.confirm_timeout_s + SHUTDOWN_GRACE_S),
    )


def allow_open_files(connections: int) -> None:
    """Raise the soft open-file limit (up to the hard one) so ``connections`` sockets fit.

    Beyond it accept() fails before max_connections is reached, and so does reconnecting to
    the broker; many hosts start services with a soft limit of 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = connections + SPARE_FILES
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    allowed = need if hard == resource.RLIM_INFINITY else min(need, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (allowed, hard))
    if allowed < need:
        log.warning(
            "open files limited to %d: fewer than SMARTGRID_MAX_CONNECTIONS=%d connections fit",
            allowed,
            connections,
        )


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_listener(host: str, port: int) -> socket.socket:
    """The gateway's listening socket, bound (as uvicorn binds it: SO_REUSEADDR, inheritable);
    a port that is taken or an address that cannot be bound exits 2 with one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = _host_port(host, port)
        if exc.errno == errno.EADDRINUSE:
            die(
                EXIT_USAGE,
                f"cannot listen on {where}: the port is in use (another gateway?); "
                "choose another with --port / SMARTGRID_HTTP_PORT",
            )
        die(EXIT_USAGE, f"cannot listen on {where}: {exc.strerror or exc}")
    sock.set_inheritable(True)
    return sock


def run(settings: GatewaySettings) -> int:
    """Serve until SIGINT/SIGTERM (graceful: in-flight requests finish) or a fatal broker error.

    uvicorn runs the app on uvloop; the broker connection lives on that same loop (pika's
    AsyncioConnection), so there are no threads. Returns the exit code.
    """

    from gateway.app import create_app
    from gateway.publisher import AmqpRequestPublisher
    from messaging.runtime import configure_logging, freeze_startup_heap

    configure_logging(settings.log_level)
    allow_open_files(settings.max_connections)
    # The port first: one taken is a usage error, found before any broker connection.
    listener = bind_listener(settings.http_host, settings.http_port)
    publisher = AmqpRequestPublisher(settings)
    app = create_app(settings, publisher)
    server = _server_class()(uvicorn_config(app, settings))

    def fatal(_exc: BaseException) -> None:
        server.should_exit = True

    publisher.on_fatal = fatal
    freeze_startup_heap()
    log.info("listening on http://%s", _host_port(settings.http_host, settings.http_port))
    server.run(sockets=[listener])
    err = publisher.fatal_error
    if err is not None:
        die(EXIT_BROKER_REFUSED if isinstance(err, FatalBrokerError) else EXIT_FAILURE, str(err))
    return EXIT_OK


cli = new_app()
cli.command(
    help="smartgrid gateway: serve POST /v1/charge-requests (202 once the broker confirmed), "
    "/healthz, /metrics and /docs until SIGINT/SIGTERM."
)(
    settings_command(
        GatewaySettings,
        run,
        doc="Serve the HTTP API.",
        aliases={"http_host": ["--host"], "http_port": ["--port"]},
    )
)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
