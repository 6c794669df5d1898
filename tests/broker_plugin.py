"""The test session's broker when none answers at SMARTGRID_AMQP_URL and a Docker engine does:
a RabbitMQ container started with testcontainers for the session and removed at its end.

While it runs, SMARTGRID_AMQP_URL and SMARTGRID_MANAGEMENT_URL point at its mapped ports, so
fixtures, helpers and the processes tests start (which inherit the environment) all use it. In
every other case this does nothing: the URL's broker is used as it is, and a missing one is
reported by the ``amqp_settings`` fixture (``make test`` starts a local rabbitmq-server before
pytest when one is installed).

No Docker engine runs on the machine this project is developed on, so the container path is
proven there only against a fake container (tests/unit/test_broker_selection.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager

import pytest
from pydantic import ValidationError

from loadgen.broker import (
    BrokerFacts,
    BrokerSetupError,
    choose_broker,
    container_broker,
    gather_facts,
)
from loadgen.container import Container, ContainerSpec, RunningBroker
from messaging import AmqpSettings


@contextmanager
def exported(env: dict[str, str], environ: MutableMapping[str, str]) -> Iterator[None]:
    """Set ``env`` in ``environ`` for the block; put back what was there after it."""
    saved = {k: environ.get(k) for k in env}
    environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                environ.pop(k, None)
            else:
                environ[k] = v


@contextmanager
def session_broker_env(
    *,
    environ: MutableMapping[str, str] = os.environ,
    facts: Callable[[AmqpSettings], BrokerFacts] = gather_facts,
    make: Callable[[ContainerSpec], Container] | None = None,
    answers: Callable[[AmqpSettings], bool] | None = None,
    say: Callable[[str], None] = print,
) -> Iterator[RunningBroker | None]:
    """Yields the container started for the session (its URLs exported to ``environ``), or None
    when the session uses the URL's broker or has none (``amqp_settings`` then says so)."""
    try:
        settings = AmqpSettings(amqp_url=environ.get("SMARTGRID_AMQP_URL", _default_url()))
        choice = choose_broker(facts(settings))
    except (ValidationError, BrokerSetupError):
        yield None  # a bad URL or refused credentials: amqp_settings reports it
        return
    if choice.how != "testcontainers":
        yield None
        return
    with (
        container_broker(settings, say=say, make=make, answers=answers) as (_, broker),
        exported(broker.env(), environ),
    ):
        say(f"the session's broker: {broker.redacted_url}, management {broker.management_url}")
        yield broker


def _default_url() -> str:
    return AmqpSettings.model_fields["amqp_url"].default.get_secret_value()


@pytest.fixture(scope="session")
def session_broker(pytestconfig: pytest.Config) -> Iterator[RunningBroker | None]:
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    try:
        with session_broker_env(say=say) as broker:
            yield broker
    except BrokerSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
