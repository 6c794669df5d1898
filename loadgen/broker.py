"""Get a RabbitMQ to talk to, and clean up a namespace afterwards.

How a run gets its broker (``choose_broker``, a pure function of what was found): the one at
``SMARTGRID_AMQP_URL`` when it answers; otherwise, for a loopback URL only (a remote broker is the
operator's business), a RabbitMQ container started with testcontainers for the run and removed
after it when a Docker engine answers (loadgen/container.py), else Debian's ``rabbitmq-server``
started in the background, else a message saying how to get one.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlparse

from pydantic import SecretStr

from contracts import Topology
from loadgen.bounded import BROKER_TIMEOUT_S, attempt
from loadgen.container import (
    Container,
    ContainerSpec,
    RunningBroker,
    container_spec,
    docker_container,
    run_container,
)
from messaging import AmqpSettings, Session
from messaging.errors import FatalBrokerError, MessagingError
from messaging.settings import is_loopback_host

# Debian puts the server scripts in /usr/sbin, which a non-root PATH often lacks.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
START_TIMEOUT_S = 60.0
DEFAULT_AMQP_PORT = 5672

HOW_TO_GET_A_BROKER = """\
No RabbitMQ answers at {url}{why}.
Get one in any of these ways, then run the command again:
  * Debian/Ubuntu:  sudo apt-get install rabbitmq-server && sudo rabbitmq-server -detached
  * Docker:         with a Docker engine running, `make test` and `make demo` start a RabbitMQ
                    container for their run (testcontainers, installed by `make install`)
  * elsewhere:      export SMARTGRID_AMQP_URL=amqp://user:pass@host:5672/%2F"""

How = Literal["as-is", "testcontainers", "rabbitmq-server", "how-to"]
S = TypeVar("S", bound=AmqpSettings)


class BrokerSetupError(Exception):
    """No broker, and none could be started: the message says what to do."""


@dataclass(frozen=True)
class BrokerFacts:
    """What was found about the broker URL and this machine."""

    answers: bool
    loopback: bool
    port: int
    docker_ok: bool
    testcontainers_ok: bool
    server_path: str | None


@dataclass(frozen=True)
class BrokerChoice:
    """``how`` to get a broker; ``detail`` is the server's path (rabbitmq-server) or why none
    can be started (how-to, a parenthesis for HOW_TO_GET_A_BROKER)."""

    how: How
    detail: str = ""


def choose_broker(facts: BrokerFacts) -> BrokerChoice:
    """Pure decision. Start nothing for a non-loopback URL; a container maps its own ports, so
    it serves any port; the package listens on 5672 only."""
    if facts.answers:
        return BrokerChoice("as-is")
    if not facts.loopback:
        return BrokerChoice("how-to", " (its host is not this machine; not starting one)")
    if facts.docker_ok and facts.testcontainers_ok:
        return BrokerChoice("testcontainers")
    if facts.server_path and facts.port == DEFAULT_AMQP_PORT:
        return BrokerChoice("rabbitmq-server", facts.server_path)
    why = []
    if facts.docker_ok:
        why.append("a Docker engine answers but testcontainers is not installed: make install")
    if facts.server_path:
        why.append(f"a rabbitmq-server started here would listen on 5672, not {facts.port}")
    if not why:
        why.append("no Docker engine and no rabbitmq-server installed")
    return BrokerChoice("how-to", f" ({'; '.join(why)})")


def gather_facts(settings: AmqpSettings) -> BrokerFacts:
    """Probe the URL, then (only when it does not answer and is loopback) this machine."""
    url = urlparse(settings.amqp_addresses()[0].secret_url)
    port = url.port or DEFAULT_AMQP_PORT
    loopback = is_loopback_host(url.hostname)
    answers = broker_answers(settings)
    look = not answers and loopback
    return BrokerFacts(
        answers=answers,
        loopback=loopback,
        port=port,
        docker_ok=look and docker_engine_answers(),
        testcontainers_ok=look and testcontainers_installed(),
        server_path=find_rabbitmq_server() if look else None,
    )


def testcontainers_installed() -> bool:
    return importlib.util.find_spec("testcontainers") is not None


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
    """Asks the engine the way testcontainers reaches it (the Docker SDK: DOCKER_HOST or the
    local socket); without the SDK, through the docker CLI."""
    try:
        import docker
    except ImportError:
        return _docker_cli_answers()
    try:
        client = docker.from_env(timeout=10)
    except Exception:  # the SDK raises DockerException and whatever its transport raises
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _docker_cli_answers() -> bool:
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
    """Make sure a broker answers at ``settings.amqp_url`` before a run; say what was done.

    Starts only a broker that may outlive the command (Debian's rabbitmq-server). When the
    container path is chosen it starts nothing: the container belongs to the run that needs it
    (the pytest session, the demo), which starts it and removes it after. Returns "already
    running", "started rabbitmq-server" or what the run will do. Raises BrokerSetupError (with
    instructions) when there is none and none can be started.
    """
    choice = choose_broker(gather_facts(settings))
    if choice.how == "as-is":
        return "already running"
    if choice.how == "testcontainers":
        return (
            "none yet; a Docker engine answers, so `make test` and `make demo` start a RabbitMQ "
            "container (testcontainers) for their run and remove it after"
        )
    return _start_server(settings, choice, timeout_s=timeout_s, say=say)


@contextmanager
def broker_for_run(
    settings: S,
    *,
    timeout_s: float = START_TIMEOUT_S,
    say: Callable[[str], None] = print,
    make_container: Callable[[ContainerSpec], Container] | None = None,
) -> Iterator[tuple[S, str]]:
    """A broker for one run: yields the settings to use (the container's URL when one was
    started) and what was done. A container started here is removed when the block ends, also
    after a failure or an interrupt; a started rabbitmq-server stays (it is the machine's)."""
    choice = choose_broker(gather_facts(settings))
    if choice.how != "testcontainers":
        how = "already running" if choice.how == "as-is" else None
        yield settings, how or _start_server(settings, choice, timeout_s=timeout_s, say=say)
        return
    with container_broker(settings, say=say, make=make_container) as (run_settings, broker):
        yield (
            run_settings,
            (
                f"a RabbitMQ container for this run at {broker.redacted_url} (management UI "
                f"{broker.management_url}, metrics {broker.prometheus_url}); removed when it ends"
            ),
        )


@contextmanager
def container_broker(
    settings: S,
    *,
    say: Callable[[str], None] = print,
    make: Callable[[ContainerSpec], Container] | None = None,
    answers: Callable[[AmqpSettings], bool] | None = None,
    spec: ContainerSpec | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> Iterator[tuple[S, RunningBroker]]:
    """Start a RabbitMQ container, wait until AMQP answers on its mapped port, and yield the
    settings pointing at it with its URLs; the container is removed when the block ends. A
    container that cannot be started is a BrokerSetupError; errors of the run pass through."""
    spec = spec or container_spec()
    answers = answers or broker_answers
    say(
        f"no broker at {settings.redacted_url()}; starting a {spec.image} container "
        "with testcontainers for this run"
    )
    with ExitStack() as stack:
        try:
            broker = stack.enter_context(run_container(spec, make or docker_container))
            run_settings = settings.model_copy(update={"amqp_url": SecretStr(broker.amqp_url)})
            if not _answers_within(run_settings, timeout_s, answers):
                raise BrokerSetupError(
                    f"the RabbitMQ container started but {broker.redacted_url} did not answer "
                    f"within {timeout_s:.0f}s"
                )
        except BrokerSetupError:
            raise
        except Exception as exc:
            # testcontainers' and Docker's errors (no image, no engine, a boot that timed out)
            raise BrokerSetupError(
                f"could not start a RabbitMQ container: {type(exc).__name__}: {exc}\n"
                + HOW_TO_GET_A_BROKER.format(url=settings.redacted_url(), why="")
            ) from exc
        yield run_settings, broker


def _answers_within(
    settings: AmqpSettings, timeout_s: float, answers: Callable[[AmqpSettings], bool]
) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if answers(settings):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _start_server(
    settings: AmqpSettings,
    choice: BrokerChoice,
    *,
    timeout_s: float,
    say: Callable[[str], None],
) -> str:
    """Start Debian's rabbitmq-server in the background (``choice.how`` "rabbitmq-server") and
    wait for the URL to answer; for "how-to", raise BrokerSetupError with the instructions."""
    if choice.how != "rabbitmq-server":
        how_to = HOW_TO_GET_A_BROKER.format(url=settings.redacted_url(), why=choice.detail)
        raise BrokerSetupError(how_to)
    url = urlparse(settings.amqp_addresses()[0].secret_url)
    host, port = url.hostname, url.port or DEFAULT_AMQP_PORT
    assert host is not None  # loopback, checked by choose_broker
    cmd = [choice.detail, "-detached"]
    say(f"no broker at {settings.redacted_url()}; running: {' '.join(cmd)}")
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerSetupError(
            f"`{' '.join(cmd)}` failed: {exc}\n"
            + HOW_TO_GET_A_BROKER.format(url=settings.redacted_url(), why="")
        ) from exc
    if done.returncode != 0:
        # `rabbitmq-server -detached` also fails when a node is already booting: keep waiting.
        say(f"`{' '.join(cmd)}` exited {done.returncode}: {_tail(done.stderr or done.stdout)}")
    if _answers_within(settings, timeout_s, lambda s: port_open(host, port) and broker_answers(s)):
        return "started rabbitmq-server"
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
