"""Every settings field is a CLI option beside its environment variable; the CLI wins."""

from __future__ import annotations

import pytest
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from typer import Typer
from typer.testing import CliRunner

from dispatcher.__main__ import app as dispatcher_app
from dispatcher.settings import DispatcherSettings
from gateway.__main__ import cli as gateway_cli
from gateway.settings import GatewaySettings
from messaging.cli import settings_command, settings_options
from substation_worker.__main__ import app as worker_app
from substation_worker.settings import WorkerSettings


class Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMARTGRID_", extra="ignore")
    url: SecretStr = SecretStr("amqp://u:p@localhost/")
    verbose: bool = False


class Demo(Base):
    capacity_kw: float = Field(gt=0, description="Capacity.")
    bays: int = 4
    seed: int | None = None


def _app(seen: list[Demo]) -> Typer:
    def run(settings: Demo) -> int:
        seen.append(settings)
        return 0

    app = Typer()
    app.command()(settings_command(Demo, run, doc="demo"))
    return app


def test_options_follow_the_fields_own_first() -> None:
    names = [p.name for p in settings_options(Demo)]
    assert names == ["capacity_kw", "bays", "seed", "url", "verbose"]


def test_cli_values_win_over_the_environment() -> None:
    seen: list[Demo] = []
    result = CliRunner().invoke(
        _app(seen),
        ["--capacity-kw", "300", "--verbose"],
        env={"SMARTGRID_CAPACITY_KW": "150", "SMARTGRID_BAYS": "8"},
    )
    assert result.exit_code == 0, result.output
    (s,) = seen
    assert (s.capacity_kw, s.bays, s.seed, s.verbose) == (300.0, 8, None, True)
    assert s.url.get_secret_value() == "amqp://u:p@localhost/"


def test_invalid_or_missing_settings_exit_2_naming_the_option_and_variable() -> None:
    """Newcomer point 4: a setting is named as the user sets it (``--capacity-kw`` or
    ``SMARTGRID_CAPACITY_KW``), never as the Python field (``capacity_kw``)."""
    seen: list[Demo] = []
    missing = CliRunner().invoke(_app(seen), [], env={})
    assert missing.exit_code == 2
    assert "--capacity-kw (SMARTGRID_CAPACITY_KW): required" in missing.output
    assert "capacity_kw" not in missing.output
    negative = CliRunner().invoke(_app(seen), ["--capacity-kw", "-1"], env={})
    assert negative.exit_code == 2
    assert "--capacity-kw (SMARTGRID_CAPACITY_KW): Input should be greater than 0" in (
        negative.output
    )
    assert seen == []


class Paired(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")
    cert: str | None = None
    key: str | None = None

    @model_validator(mode="after")
    def _together(self) -> Paired:
        if (self.cert is None) != (self.key is None):
            raise ValueError("DEMO_CERT and DEMO_KEY go together")
        return self


def test_a_problem_across_fields_is_its_message_alone() -> None:
    """Newcomer point 4: no ``-: Value error, `` before a check that spans several settings."""
    app = Typer()
    app.command()(settings_command(Paired, lambda _s: 0, doc="paired"))
    result = CliRunner().invoke(app, ["--cert", "c.pem"], env={})
    assert result.exit_code == 2
    assert result.output == ("error: invalid settings:\n  DEMO_CERT and DEMO_KEY go together\n")


def test_the_services_settings_errors_name_their_options() -> None:
    """Newcomer point 4, as a user meets it: the worker without its required settings, and the
    gateway's aliased port."""
    worker = CliRunner().invoke(worker_app, [], env={})
    assert worker.exit_code == 2
    assert "--substation-id (SMARTGRID_SUBSTATION_ID): required" in worker.output
    assert "substation_id" not in worker.output
    gateway = CliRunner().invoke(gateway_cli, ["--port", "-5"], env={})
    assert gateway.exit_code == 2
    assert "--http-port / --port (SMARTGRID_HTTP_PORT):" in gateway.output


SERVICE_APPS = {"gateway": gateway_cli, "dispatcher": dispatcher_app, "worker": worker_app}
SERVICE_SETTINGS: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "dispatcher": DispatcherSettings,
    "worker": WorkerSettings,
}


@pytest.mark.parametrize("name", sorted(SERVICE_APPS))
def test_help_shows_flags_as_flags_and_every_default(name: str) -> None:
    """Newcomer point 4: ``--help`` is not followed by ``<bool>``, a boolean setting reads
    ``--x / --no-x``, and every option says its default (or that it is required), also those
    whose value may come from the environment."""
    result = CliRunner().invoke(SERVICE_APPS[name], ["--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "--help Show this message and exit." in text
    assert "<bool>" not in text
    assert "--amqp-tls-verify-hostname / --no-amqp-tls-verify-hostname" in text
    assert "Default: smartgrid." in text  # --namespace
    for option in settings_options(SERVICE_SETTINGS[name]):
        help_text = option.default.help
        assert "Default:" in help_text or "Required." in help_text, option.name


@pytest.mark.parametrize("cls", [GatewaySettings, DispatcherSettings, WorkerSettings])
def test_every_service_setting_has_an_option_and_an_env_var(cls: type[BaseSettings]) -> None:
    options = {p.name: p.default for p in settings_options(cls)}
    assert set(options) == set(cls.model_fields)
    assert "namespace" in options
    for name, option in options.items():
        assert option.envvar == f"SMARTGRID_{name.upper()}"
        assert option.help, name
