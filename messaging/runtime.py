"""Process lifecycle shared by every service: logging, signals, exit codes, /metrics server."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from messaging import exit_codes
from messaging.errors import FatalBrokerError

S = TypeVar("S", bound=BaseModel)

# The shared table (messaging.exit_codes), under the names the services use.
EXIT_OK = exit_codes.OK
EXIT_FAILURE = exit_codes.FAILURE
EXIT_USAGE = exit_codes.USAGE
EXIT_BROKER_REFUSED = exit_codes.BROKER_REFUSED


# pika's loggers of a connection attempt: each failed attempt is 7 ERROR lines there, and one
# WARNING from messaging.link says the same with what to check.
PIKA_CONNECT_LOGGERS = (
    "pika.adapters.utils.connection_workflow",
    "pika.adapters.utils.io_services_utils",
    "pika.adapters.base_connection",
)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet_pika(debug=level.upper() == "DEBUG")


def quiet_pika(*, debug: bool = False) -> None:
    """pika at WARNING, its connection attempts silent (messaging.link reports those); all of
    it as configured at DEBUG."""
    logging.getLogger("pika").setLevel(logging.DEBUG if debug else logging.WARNING)
    for name in PIKA_CONNECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.CRITICAL)


def build_settings(cls: type[S], *, labels: Mapping[str, str] | None = None, **overrides: Any) -> S:
    """Settings from SMARTGRID_* env vars, CLI values (non-None) on top; exit 2 if invalid.

    Each problem is one line under the setting's ``labels`` entry (its option and variable,
    ``messaging.cli.option_labels``; by default its variable); one not tied to a field (a
    check across fields) is its message alone."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        lines = [f"  {line}" for line in settings_problems(exc, cls, labels)]
        die(EXIT_USAGE, "invalid settings:\n" + "\n".join(lines))


def settings_problems(
    exc: ValidationError, cls: type[BaseModel], labels: Mapping[str, str] | None = None
) -> list[str]:
    """One line per problem of ``exc``: ``<option (VARIABLE)>: <what is wrong>``."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    out = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = [str(p) for p in error["loc"]]
        if not loc:
            out.append(message)
            continue
        field, rest = loc[0], loc[1:]
        label = (labels or {}).get(field) or f"{prefix}{field.upper()}"
        where = label + "".join(f"[{p}]" for p in rest)
        if error["type"] == "missing":
            message = "required, and neither given nor set"
        out.append(f"{where}: {message}")
    return out


def die(code: int, message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def freeze_startup_heap() -> None:
    """Keep the objects of startup (modules, pydantic schemas, the app) out of every later
    garbage collection. A full collection otherwise walks all of them, stalling the event loop
    for tens of milliseconds: the gateway's p99 went from 5 to 30 ms at 2,500 requests/s."""
    gc.collect()
    gc.freeze()


def run_service(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(stop)`` on uvloop (if present) until it returns; SIGINT/SIGTERM set ``stop``."""

    async def _entry() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await main(stop)

    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    freeze_startup_heap()
    try:
        runner(_entry())
    except FatalBrokerError as exc:
        die(EXIT_BROKER_REFUSED, str(exc))


def start_metrics_server(host: str, port: int, registry: Any) -> None:
    """Serve ``registry`` at http://host:port/metrics from a daemon thread (0 disables)."""
    if port == 0:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        die(EXIT_USAGE, f"cannot serve metrics on {host}:{port}: {exc}")
