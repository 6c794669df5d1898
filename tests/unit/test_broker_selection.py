"""How a run gets its broker: the pure choice, the container's settings, and the container's
lifecycle (start, URLs exported, removed also when the run fails).

No Docker engine runs on the machine this project is developed on: the container path is
tested here against a fake container and a fake engine only, so a real container booting under
testcontainers is unproven there.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from rich.console import Console

import loadgen.broker as broker_mod
from loadgen.broker import (
    BrokerFacts,
    BrokerSetupError,
    broker_for_run,
    choose_broker,
    container_broker,
    ensure_broker,
    gather_facts,
)
from loadgen.container import (
    IMAGE,
    PLUGINS,
    USER,
    ContainerSpec,
    broker_urls,
    container_spec,
    docker_container,
    run_container,
)
from messaging import AmqpSettings
from tests.broker_plugin import exported, session_broker_env

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {5672: 32768, 15672: 32769, 15692: 32770}

NOTHING = BrokerFacts(
    answers=False,
    loopback=True,
    port=5672,
    docker_ok=False,
    testcontainers_ok=False,
    server_path=None,
)


def facts(**changes: Any) -> BrokerFacts:
    return dataclasses.replace(NOTHING, **changes)


# -- the choice -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "how", "detail"),
    [
        # A broker that answers is used as it is, wherever it is.
        (facts(answers=True), "as-is", ""),
        (facts(answers=True, loopback=False, docker_ok=True, testcontainers_ok=True), "as-is", ""),
        # Nothing is started for another machine's URL, whatever this one has.
        (
            facts(loopback=False, docker_ok=True, testcontainers_ok=True, server_path="/s"),
            "how-to",
            "not this machine",
        ),
        # Docker with testcontainers first, on any port: the container maps its own.
        (facts(docker_ok=True, testcontainers_ok=True), "testcontainers", ""),
        (facts(docker_ok=True, testcontainers_ok=True, port=5673), "testcontainers", ""),
        (
            facts(docker_ok=True, testcontainers_ok=True, server_path="/usr/sbin/rabbitmq-server"),
            "testcontainers",
            "",
        ),
        # The package, on 5672 only.
        (facts(server_path="/usr/sbin/rabbitmq-server"), "rabbitmq-server", "/usr/sbin/"),
        (
            facts(docker_ok=True, server_path="/usr/sbin/rabbitmq-server"),
            "rabbitmq-server",
            "/usr/sbin/",
        ),
        (facts(server_path="/usr/sbin/rabbitmq-server", port=5673), "how-to", "not 5673"),
        # Otherwise one message, saying what is missing.
        (facts(docker_ok=True), "how-to", "testcontainers is not installed"),
        (facts(testcontainers_ok=True), "how-to", "no Docker engine and no rabbitmq-server"),
        (NOTHING, "how-to", "no Docker engine and no rabbitmq-server"),
    ],
)
def test_choose_broker(given: BrokerFacts, how: str, detail: str) -> None:
    choice = choose_broker(given)
    assert choice.how == how
    assert detail in choice.detail
    if how in ("as-is", "testcontainers"):
        assert choice.detail == ""


def test_facts_probe_nothing_else_when_the_url_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    def probed(*_: object) -> bool:
        raise AssertionError("a broker that answers needs no Docker or server lookup")

    monkeypatch.setattr(broker_mod, "broker_answers", lambda _s: True)
    monkeypatch.setattr(broker_mod, "docker_engine_answers", probed)
    monkeypatch.setattr(broker_mod, "find_rabbitmq_server", probed)
    got = gather_facts(AmqpSettings(amqp_url="amqp://guest:guest@127.0.0.1:5673/%2F"))
    assert got == BrokerFacts(True, True, 5673, False, False, None)


def test_facts_of_a_silent_loopback_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod, "broker_answers", lambda _s: False)
    monkeypatch.setattr(broker_mod, "docker_engine_answers", lambda: True)
    monkeypatch.setattr(broker_mod, "find_rabbitmq_server", lambda: "/usr/sbin/rabbitmq-server")
    got = gather_facts(AmqpSettings(amqp_url="amqp://guest:guest@localhost/%2F"))
    # testcontainers is a dev dependency, so it is importable in the test environment
    assert got == BrokerFacts(False, True, 5672, True, True, "/usr/sbin/rabbitmq-server")


# -- the container's settings ---------------------------------------------------------------


def test_the_container_runs_the_dev_compose_brokers_image_and_plugins() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "dev-broker.compose.yaml").read_text())
    assert compose["services"]["rabbitmq"]["image"] == IMAGE
    enabled = (ROOT / "deploy" / "rabbitmq" / "enabled_plugins").read_text()
    assert set(re.findall(r"\w+", enabled)) == set(PLUGINS)


def test_container_spec() -> None:
    spec = container_spec(password="pw")
    assert spec.image == "rabbitmq:4-management"
    assert spec.ports == (5672, 15672, 15692)
    assert spec.env == {
        "RABBITMQ_DEFAULT_USER": USER,
        "RABBITMQ_DEFAULT_PASS": "pw",
        "RABBITMQ_DEFAULT_VHOST": "/",
        "RABBITMQ_ENABLED_PLUGINS": "rabbitmq_management,rabbitmq_prometheus",
    }
    # Without one given, each run gets a password of its own.
    a, b = container_spec(), container_spec()
    assert len(a.password) >= 20
    assert a.password != b.password
    assert a.env["RABBITMQ_DEFAULT_PASS"] == a.password


def test_urls_come_from_the_mapped_ports() -> None:
    spec = container_spec(password="p/w@:x")
    running = broker_urls(spec, "localhost", MAPPED.__getitem__)
    settings = AmqpSettings(amqp_url=running.amqp_url)
    url = urlparse(settings.amqp_url.get_secret_value())
    assert (url.hostname, url.port, url.username) == ("localhost", 32768, USER)
    assert running.amqp_url == f"amqp://{USER}:p%2Fw%40%3Ax@localhost:32768/%2F"
    assert running.management_url == "http://localhost:32769"
    assert running.prometheus_url == "http://localhost:32770/metrics"
    assert "p%2Fw" not in running.redacted_url
    assert running.redacted_url == f"amqp://{USER}:***@localhost:32768/%2F"
    assert "p%2Fw" not in repr(running)
    assert running.env() == {
        "SMARTGRID_AMQP_URL": running.amqp_url,
        "SMARTGRID_MANAGEMENT_URL": "http://localhost:32769",
    }


def test_urls_of_an_ipv6_engine_host() -> None:
    running = broker_urls(container_spec(password="pw"), "::1", MAPPED.__getitem__)
    assert running.amqp_url == f"amqp://{USER}:pw@[::1]:32768/%2F"
    assert running.management_url == "http://[::1]:32769"


class FakeDockerClient:
    """Stands in for testcontainers' client of the engine, which would connect at once."""

    def __init__(self, **_: Any) -> None:
        pass


def test_docker_container_is_configured_from_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    import testcontainers.core.container as tc_container
    from testcontainers.core.wait_strategies import (
        CompositeWaitStrategy,
        HttpWaitStrategy,
        LogMessageWaitStrategy,
    )

    monkeypatch.setattr(tc_container, "DockerClient", FakeDockerClient)
    spec = container_spec(password="pw")
    made: Any = docker_container(spec)
    assert isinstance(made, tc_container.DockerContainer)
    assert made.image.endswith(IMAGE)
    assert made.env == dict(spec.env)
    # Exposed without a host port: the engine picks free ones, get_exposed_port tells which.
    assert made.ports == {"5672": None, "15672": None, "15692": None}
    wait = made._wait_strategy
    assert isinstance(wait, CompositeWaitStrategy)
    steps: list[Any] = wait._strategies
    assert [type(s) for s in steps] == [LogMessageWaitStrategy, HttpWaitStrategy, HttpWaitStrategy]
    assert steps[0]._message.pattern == "Server startup complete"
    # The management API answers the run's user; the Prometheus endpoint needs no login.
    assert [(s._port, s._path, s._basic_auth) for s in steps[1:]] == [
        (15672, "/api/overview", (USER, "pw")),
        (15692, "/metrics", None),
    ]
    assert wait._startup_timeout == spec.start_timeout_s


# -- the lifecycle, with a fake container ---------------------------------------------------


class FakeContainer:
    """Records what a run does to its container."""

    def __init__(self, spec: ContainerSpec, *, fail_start: bool = False) -> None:
        self.spec = spec
        self.fail_start = fail_start
        self.calls: list[str] = []

    def start(self) -> FakeContainer:
        self.calls.append("start")
        if self.fail_start:
            raise TimeoutError("Container did not emit logs containing 'Server startup complete'")
        return self

    def stop(self) -> None:
        self.calls.append("stop")

    def get_container_host_ip(self) -> str:
        return "localhost"

    def get_exposed_port(self, port: int) -> int:
        assert "start" in self.calls, "ports are mapped once the container runs"
        return MAPPED[port]


class Engine:
    """A fake Docker engine: makes FakeContainers and keeps them for the test to look at."""

    def __init__(self, *, fail_start: bool = False) -> None:
        self.fail_start = fail_start
        self.made: list[FakeContainer] = []

    def __call__(self, spec: ContainerSpec) -> FakeContainer:
        self.made.append(FakeContainer(spec, fail_start=self.fail_start))
        return self.made[-1]

    @property
    def calls(self) -> list[str]:
        (only,) = self.made
        return only.calls


def test_run_container_starts_yields_urls_and_stops() -> None:
    engine = Engine()
    with run_container(container_spec(password="pw"), engine) as running:
        assert engine.calls == ["start"]
        assert running.amqp_url == f"amqp://{USER}:pw@localhost:32768/%2F"
    assert engine.calls == ["start", "stop"]


def test_run_container_stops_when_the_run_fails() -> None:
    engine = Engine()
    with pytest.raises(RuntimeError, match="the run failed"):  # noqa: SIM117 (the order matters)
        with run_container(container_spec(), engine):
            raise RuntimeError("the run failed")
    assert engine.calls == ["start", "stop"]


def test_run_container_stops_when_the_container_never_gets_ready() -> None:
    engine = Engine(fail_start=True)
    with pytest.raises(TimeoutError), run_container(container_spec(), engine):
        pytest.fail("no run without a started container")
    assert engine.calls == ["start", "stop"]


SILENT = AmqpSettings(amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F")


def test_container_broker_points_the_settings_at_the_container() -> None:
    engine = Engine()
    probed: list[str] = []

    def answers(s: AmqpSettings) -> bool:
        probed.append(s.amqp_url.get_secret_value())
        return True

    with container_broker(SILENT, say=lambda _: None, make=engine, answers=answers) as (s, run):
        assert s.amqp_url.get_secret_value() == run.amqp_url
        assert urlparse(run.amqp_url).port == 32768
        assert probed == [run.amqp_url]
        assert s.namespace == SILENT.namespace
    assert engine.calls == ["start", "stop"]


def test_container_broker_that_cannot_start_says_how_to_get_one() -> None:
    engine = Engine(fail_start=True)
    with (
        pytest.raises(BrokerSetupError, match=r"could not start a RabbitMQ container: Timeout"),
        container_broker(SILENT, say=lambda _: None, make=engine, answers=lambda _: True),
    ):
        pytest.fail("no run without a broker")
    assert engine.calls == ["start", "stop"]


def test_container_broker_whose_amqp_never_answers_is_removed() -> None:
    engine = Engine()
    with (
        pytest.raises(BrokerSetupError, match="did not answer within 0s"),
        container_broker(
            SILENT, say=lambda _: None, make=engine, answers=lambda _: False, timeout_s=0
        ),
    ):
        pytest.fail("no run without a broker")
    assert engine.calls == ["start", "stop"]


def test_container_broker_passes_the_runs_errors_through() -> None:
    engine = Engine()
    with (
        pytest.raises(KeyboardInterrupt),
        container_broker(SILENT, say=lambda _: None, make=engine, answers=lambda _: True),
    ):
        raise KeyboardInterrupt
    assert engine.calls == ["start", "stop"]


@pytest.fixture
def docker_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """gather_facts finds no broker, a Docker engine and testcontainers."""
    found = facts(docker_ok=True, testcontainers_ok=True)
    monkeypatch.setattr(broker_mod, "gather_facts", lambda _s: found)
    monkeypatch.setattr(broker_mod, "broker_answers", lambda _s: True)  # the container's probe


@pytest.mark.usefixtures("docker_only")
def test_ensure_broker_leaves_the_container_to_the_run() -> None:
    said: list[str] = []
    how = ensure_broker(SILENT, say=said.append)
    assert "start a RabbitMQ container (testcontainers) for their run" in how
    assert said == []


def test_ensure_broker_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod, "gather_facts", lambda _s: NOTHING)
    with pytest.raises(BrokerSetupError) as err:
        ensure_broker(SILENT, say=lambda _: None)
    message = str(err.value)
    assert "No RabbitMQ answers at amqp://guest:***@127.0.0.1:5672/%2F (no Docker engine" in message
    assert "sudo apt-get install rabbitmq-server" in message


@pytest.mark.usefixtures("docker_only")
def test_broker_for_run_removes_its_container_after_the_run() -> None:
    engine = Engine()
    seen: list[tuple[str, str, list[str]]] = []

    def demo() -> None:
        with broker_for_run(SILENT, say=lambda _: None, make_container=engine) as (settings, how):
            seen.append((settings.amqp_url.get_secret_value(), how, list(engine.calls)))
            raise RuntimeError("demo failed")

    with pytest.raises(RuntimeError, match="demo failed"):
        demo()
    ((url, how, calls),) = seen
    assert url.startswith(f"amqp://{USER}:")
    assert "removed when it ends" in how
    assert calls == ["start"]
    assert engine.calls == ["start", "stop"]


def test_broker_for_run_uses_an_answering_broker_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker_mod, "gather_facts", lambda _s: facts(answers=True))
    engine = Engine()
    with broker_for_run(SILENT, make_container=engine) as (settings, how):
        assert settings is SILENT
        assert how == "already running"
    assert engine.made == []


# -- the test session's broker --------------------------------------------------------------


def test_exported_puts_back_what_was_there() -> None:
    environ = {"SMARTGRID_AMQP_URL": "amqp://before", "OTHER": "x"}
    with exported({"SMARTGRID_AMQP_URL": "amqp://a", "SMARTGRID_MANAGEMENT_URL": "m"}, environ):
        assert environ == {
            "SMARTGRID_AMQP_URL": "amqp://a",
            "SMARTGRID_MANAGEMENT_URL": "m",
            "OTHER": "x",
        }
    assert environ == {"SMARTGRID_AMQP_URL": "amqp://before", "OTHER": "x"}


def test_session_broker_exports_the_containers_urls_and_stops_it() -> None:
    engine = Engine()
    environ: dict[str, str] = {}
    docker = facts(docker_ok=True, testcontainers_ok=True)
    seen: list[tuple[str, dict[str, str]]] = []

    def session() -> None:
        with session_broker_env(
            environ=environ,
            facts=lambda _s: docker,
            make=engine,
            answers=lambda _s: True,
            say=lambda _: None,
        ) as running:
            assert running is not None
            seen.append((running.amqp_url, dict(environ)))
            raise RuntimeError("session failed")

    with pytest.raises(RuntimeError, match="session failed"):
        session()
    ((url, during),) = seen
    assert during == {
        "SMARTGRID_AMQP_URL": url,
        "SMARTGRID_MANAGEMENT_URL": "http://localhost:32769",
    }
    assert AmqpSettings(amqp_url=during["SMARTGRID_AMQP_URL"]).amqp_user() == USER
    assert engine.calls == ["start", "stop"]
    assert environ == {}


@pytest.mark.parametrize(
    "found",
    [facts(answers=True), facts(server_path="/usr/sbin/rabbitmq-server"), NOTHING],
    ids=["answers", "rabbitmq-server", "none"],
)
def test_session_broker_does_nothing_off_the_container_path(found: BrokerFacts) -> None:
    engine = Engine()
    environ = {"SMARTGRID_AMQP_URL": "amqp://guest:guest@localhost:5672/%2F"}
    with session_broker_env(environ=environ, facts=lambda _s: found, make=engine) as running:
        assert running is None
    assert engine.made == []
    assert environ == {"SMARTGRID_AMQP_URL": "amqp://guest:guest@localhost:5672/%2F"}


class FakeClient:
    def __init__(self, ping: bool | Exception) -> None:
        self._ping = ping
        self.closed = False

    def ping(self) -> bool:
        if isinstance(self._ping, Exception):
            raise self._ping
        return self._ping

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("ping", "expected"),
    [(True, True), (ConnectionError("no socket"), False)],
)
def test_docker_engine_answers_through_the_sdk(
    monkeypatch: pytest.MonkeyPatch, ping: bool | Exception, expected: bool
) -> None:
    import docker

    client = FakeClient(ping)
    monkeypatch.setattr(docker, "from_env", lambda **_: client)
    assert broker_mod.docker_engine_answers() is expected
    assert client.closed


def test_docker_engine_answers_no_when_the_sdk_finds_no_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import docker

    def no_engine(**_: Any) -> FakeClient:
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(docker, "from_env", no_engine)
    assert broker_mod.docker_engine_answers() is False


# -- the demo's broker ----------------------------------------------------------------------


@pytest.mark.usefixtures("docker_only")
@pytest.mark.parametrize("outcome", [0, RuntimeError("the grid failed")], ids=["ok", "fails"])
def test_the_demo_runs_inside_its_container(
    monkeypatch: pytest.MonkeyPatch, outcome: int | Exception
) -> None:
    import loadgen.demo as demo

    engine = Engine()
    monkeypatch.setattr(broker_mod, "docker_container", engine)
    seen: list[tuple[str, list[str]]] = []

    def run(settings: AmqpSettings, *_: Any) -> int:
        seen.append((settings.amqp_url.get_secret_value(), list(engine.calls)))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(demo, "_run_demo", run)
    console = Console(file=io.StringIO(), width=200)
    if isinstance(outcome, Exception):
        with pytest.raises(RuntimeError, match="the grid failed"):
            demo.run_demo(SILENT, demo.DemoOptions(), console)
    else:
        assert demo.run_demo(SILENT, demo.DemoOptions(), console) == 0
    ((url, calls),) = seen
    assert urlparse(url).port == 32768
    assert calls == ["start"]
    assert engine.calls == ["start", "stop"]
