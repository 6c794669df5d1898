"""Get a RabbitMQ to talk to, and clean up a namespace afterwards.

``ensure_broker`` only ever starts a broker on this machine (loopback URLs); a remote broker is
the operator's business, so for one that does not answer it says how to get one and stops.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from contracts import Topology
from loadgen.bounded import BROKER_TIMEOUT_S, attempt
from messaging import AmqpSettings, Session
from messaging.errors import FatalBrokerError, MessagingError
from messaging.settings import is_loopback_host

REPO_ROOT = Path(__file__).resolve().parents[1]
# A broker-only compose file: it needs no env file, unlike the full stack (deploy/compose.yaml).
COMPOSE_FILE = REPO_ROOT / "deploy" / "dev-broker.compose.yaml"
# Debian puts the server scripts in /usr/sbin, which a non-root PATH often lacks.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
START_TIMEOUT_S = 60.0
DEFAULT_AMQP_PORT = 5672

HOW_TO_GET_A_BROKER = """\
No RabbitMQ answers at {url}{why}.
Get one in any of these ways, then run the command again:
  * Debian/Ubuntu:  sudo apt-get install rabbitmq-server && sudo rabbitmq-server -detached
  * Docker:         docker compose -f deploy/dev-broker.compose.yaml up -d --wait
  * elsewhere:      export SMARTGRID_AMQP_URL=amqp://user:pass@host:5672/%2F"""


class BrokerSetupError(Exception):
    """No broker, and none could be started: the message says what to do."""


@dataclass(frozen=True)
class StartPlan:
    """How to get a broker: "docker", "rabbitmq-server" (with its path) or "none" (and why)."""

    how: str
    detail: str = ""


def plan_start(
    host: str | None,
    port: int,
    *,
    docker_ok: bool,
    compose_file: Path | None,
    server_path: str | None,
) -> StartPlan:
    """Pure decision: start a broker only for a loopback URL; Docker first, then the package."""
    if not is_loopback_host(host):
        return StartPlan("none", f" (host {host!r} is not this machine; not starting one)")
    if port != DEFAULT_AMQP_PORT:
        # Both the package and the compose service listen on 5672.
        return StartPlan("none", f" (a broker started here would listen on 5672, not {port})")
    if docker_ok and compose_file is not None:
        return StartPlan("docker", str(compose_file))
    if server_path:
        return StartPlan("rabbitmq-server", server_path)
    return StartPlan("none", " (no Docker engine and no rabbitmq-server installed)")


def broker_answers(settings: AmqpSettings) -> bool:
    """True if an AMQP connection opens. A broker that refuses us (credentials) is an error."""
    try:
        asyncio.run(_probe(settings))
    except FatalBrokerError as exc:
        raise BrokerSetupError(f"RabbitMQ at {settings.redacted_url()} refused us: {exc}") from exc
    except MessagingError:
        return False
    return True


async def _probe(settings: AmqpSettings) -> None:
    session = await Session.open(settings, "smartgrid-loadgen-probe")
    await attempt(session.close(), BROKER_TIMEOUT_S, "closing the probe connection")


def find_rabbitmq_server() -> str | None:
    found = shutil.which("rabbitmq-server")
    if found:
        return found
    for d in SBIN_DIRS:
        candidate = Path(d) / "rabbitmq-server"
        if candidate.is_file():
            return str(candidate)
    return None


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "info"],
            capture_output=True,
            timeout=20,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def ensure_broker(
    settings: AmqpSettings,
    *,
    timeout_s: float = START_TIMEOUT_S,
    say: Callable[[str], None] = print,
) -> str:
    """Make sure a broker answers at ``settings.amqp_url``; say what was done.

    Returns "already running", "started with docker compose" or "started rabbitmq-server".
    Raises BrokerSetupError (with instructions) when there is none and none can be started.
    """
    if broker_answers(settings):
        return "already running"
    url = urlparse(settings.amqp_url.get_secret_value())
    host, port = url.hostname, url.port or DEFAULT_AMQP_PORT
    plan = plan_start(
        host,
        port,
        docker_ok=is_loopback_host(host) and docker_engine_answers(),
        compose_file=COMPOSE_FILE if COMPOSE_FILE.is_file() else None,
        server_path=find_rabbitmq_server(),
    )
    if plan.how == "none":
        how_to = HOW_TO_GET_A_BROKER.format(url=settings.redacted_url(), why=plan.detail)
        raise BrokerSetupError(how_to)
    if plan.how == "docker":
        cmd = ["docker", "compose", "-f", plan.detail, "up", "-d", "--wait", "rabbitmq"]
        result = "started with docker compose"
    else:
        cmd = [plan.detail, "-detached"]
        result = "started rabbitmq-server"
    say(f"no broker at {settings.redacted_url()}; running: {' '.join(cmd)}")
    try:
        # The compose healthcheck can take a while on a cold image; -detached returns at once.
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerSetupError(
            f"`{' '.join(cmd)}` failed: {exc}\n"
            + HOW_TO_GET_A_BROKER.format(url=settings.redacted_url(), why="")
        ) from exc
    if done.returncode != 0:
        # `rabbitmq-server -detached` also fails when a node is already booting: keep waiting.
        say(f"`{' '.join(cmd)}` exited {done.returncode}: {_tail(done.stderr or done.stdout)}")
    deadline = time.monotonic() + timeout_s
    assert host is not None  # loopback, checked by plan_start
    while time.monotonic() < deadline:
        if port_open(host, port) and broker_answers(settings):
            return result
        time.sleep(0.5)
    raise BrokerSetupError(
        f"started the broker (`{' '.join(cmd)}`) but {settings.redacted_url()} did not answer "
        f"within {timeout_s:.0f}s.\n"
        + HOW_TO_GET_A_BROKER.format(url=settings.redacted_url(), why="")
    )


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"


async def delete_namespace(
    settings: AmqpSettings,
    topology: Topology,
    substation_ids: Iterable[str] = (),
    *,
    call_timeout_s: float = BROKER_TIMEOUT_S,
) -> bool:
    """Delete a namespace's exchanges and its durable queues (substation queues by id).

    Exclusive queues (heartbeat and event followers) go away with their connections. Each
    call is bounded; after the first that fails the rest is given up (a broker that did not
    answer one will not answer the next in time either), with one line in the log. Returns
    whether everything was deleted; raises BrokerUnavailable if no connection opens.
    """
    session = await Session.open(settings, "smartgrid-loadgen-cleanup")
    try:
        queues = [
            topology.requests_queue,
            topology.dead_queue,
            topology.dead_watch_queue,
            *(topology.substation_queue(s) for s in sorted(set(substation_ids))),
        ]
        for q in queues:
            if not await attempt(session.delete_queue(q), call_timeout_s, f"deleting {q}"):
                return False
        for ex in topology.exchanges():
            deleting = session.delete_exchange(ex.name)
            if not await attempt(deleting, call_timeout_s, f"deleting {ex.name}"):
                return False
        return True
    finally:
        await attempt(session.close(), call_timeout_s, "closing the cleanup connection")
