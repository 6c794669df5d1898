"""A throwaway RabbitMQ in Docker for one run (a pytest session, a demo), started with
testcontainers and removed after the run, whatever its outcome.

What the container is (image, environment, ports, plugins) and the URLs derived from its mapped
ports are built by plain functions (``container_spec``, ``broker_urls``) so they can be checked
without Docker; ``run_container`` takes the container factory as an argument so its lifecycle
(start, URLs, stop also after a failure) can be checked with a fake container.

No Docker engine runs on the machine this project is developed and tested on: the real container
path (testcontainers talking to an engine, the image booting, its wait strategy) is unproven
there. Only the settings and the lifecycle are tested, against a fake engine
(tests/unit/test_broker_selection.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

# The tag deploy/dev-broker.compose.yaml uses, so both Docker paths run the same broker (a unit
# test holds them together).
IMAGE = "rabbitmq:4-management"
# deploy/rabbitmq/enabled_plugins lists the same: the management API (tests read queues and users
# through it) and the Prometheus endpoint (what an operator scrapes).
PLUGINS = ("rabbitmq_management", "rabbitmq_prometheus")
AMQP_PORT = 5672
MANAGEMENT_PORT = 15672
PROMETHEUS_PORT = 15692
USER = "smartgrid-dev"
# RabbitMQ logs this once its listeners and plugins are up.
READY_LOG = "Server startup complete"
# Booting, not pulling: testcontainers pulls the image before it starts waiting.
START_TIMEOUT_S = 120


@dataclass(frozen=True)
class ContainerSpec:
    """What to run. The password is the run's own: Docker publishes the mapped ports on every
    interface of the engine's host, and a placeholder password is only for loopback."""

    image: str
    user: str
    password: str
    env: Mapping[str, str]
    ports: tuple[int, ...]
    plugins: tuple[str, ...]
    ready_log: str = READY_LOG
    start_timeout_s: int = START_TIMEOUT_S


def container_spec(password: str | None = None, image: str = IMAGE) -> ContainerSpec:
    password = password if password is not None else secrets.token_urlsafe(18)
    env = {
        "RABBITMQ_DEFAULT_USER": USER,
        "RABBITMQ_DEFAULT_PASS": password,
        "RABBITMQ_DEFAULT_VHOST": "/",
        # Read at boot instead of the image's enabled_plugins file (a fresh node every run).
        "RABBITMQ_ENABLED_PLUGINS": ",".join(PLUGINS),
    }
    return ContainerSpec(
        image=image,
        user=USER,
        password=password,
        env=env,
        ports=(AMQP_PORT, MANAGEMENT_PORT, PROMETHEUS_PORT),
        plugins=PLUGINS,
    )


@dataclass(frozen=True)
class RunningBroker:
    """Where the container's broker answers on this side of Docker's port mapping."""

    amqp_url: str = field(repr=False)  # holds the password
    management_url: str
    prometheus_url: str
    redacted_url: str

    def env(self) -> dict[str, str]:
        """The variables that point smartgrid's processes and tests at this broker."""
        return {
            "SMARTGRID_AMQP_URL": self.amqp_url,
            "SMARTGRID_MANAGEMENT_URL": self.management_url,
        }


def broker_urls(spec: ContainerSpec, host: str, port_of: Callable[[int], int]) -> RunningBroker:
    """The URLs of a started container; ``port_of`` maps a container port to its host port."""
    netloc_host = f"[{host}]" if ":" in host else host
    amqp = port_of(AMQP_PORT)
    auth = f"{quote(spec.user, safe='')}:{quote(spec.password, safe='')}"
    return RunningBroker(
        amqp_url=f"amqp://{auth}@{netloc_host}:{amqp}/%2F",
        management_url=f"http://{netloc_host}:{port_of(MANAGEMENT_PORT)}",
        prometheus_url=f"http://{netloc_host}:{port_of(PROMETHEUS_PORT)}/metrics",
        redacted_url=f"amqp://{spec.user}:***@{netloc_host}:{amqp}/%2F",
    )


class Container(Protocol):
    """The part of testcontainers' DockerContainer that a run uses."""

    def start(self) -> object: ...

    def stop(self) -> None: ...

    def get_container_host_ip(self) -> str: ...

    def get_exposed_port(self, port: int) -> int: ...


def docker_container(spec: ContainerSpec) -> Container:
    """The real container: testcontainers' generic DockerContainer with random host ports, ready
    when RabbitMQ says so, its management API lets the user in and its metrics answer."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import (
        CompositeWaitStrategy,
        HttpWaitStrategy,
        LogMessageWaitStrategy,
    )

    ready = CompositeWaitStrategy(
        LogMessageWaitStrategy(spec.ready_log),
        HttpWaitStrategy(MANAGEMENT_PORT, "/api/overview")
        .with_basic_credentials(spec.user, spec.password)
        .for_status_code(200),
        HttpWaitStrategy(PROMETHEUS_PORT, "/metrics").for_status_code(200),
    ).with_startup_timeout(spec.start_timeout_s)
    container = DockerContainer(spec.image)
    container.with_envs(**spec.env)
    container.with_exposed_ports(*spec.ports)
    container.waiting_for(ready)
    return container


@contextmanager
def run_container(
    spec: ContainerSpec,
    make: Callable[[ContainerSpec], Container] = docker_container,
) -> Iterator[RunningBroker]:
    """Start the container, yield its URLs, and remove it when the run ends: also when the run
    fails, is interrupted, or the container never became ready (``stop`` tolerates that)."""
    container = make(spec)
    try:
        container.start()
        yield broker_urls(spec, container.get_container_host_ip(), container.get_exposed_port)
    finally:
        container.stop()
