"""Every settings field is a CLI option beside its environment variable; the CLI wins."""

from __future__ import annotations

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from typer import Typer
from typer.testing import CliRunner

from dispatcher.settings import DispatcherSettings
from gateway.settings import GatewaySettings
from messaging.cli import settings_command, settings_options
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


def test_invalid_or_missing_settings_exit_2_naming_the_field() -> None:
    seen: list[Demo] = []
    missing = CliRunner().invoke(_app(seen), [], env={})
    assert missing.exit_code == 2
    assert "capacity_kw" in missing.output
    negative = CliRunner().invoke(_app(seen), ["--capacity-kw", "-1"], env={})
    assert negative.exit_code == 2
    assert "capacity_kw" in negative.output
    assert seen == []


@pytest.mark.parametrize("cls", [GatewaySettings, DispatcherSettings, WorkerSettings])
def test_every_service_setting_has_an_option_and_an_env_var(cls: type[BaseSettings]) -> None:
    options = {p.name: p.default for p in settings_options(cls)}
    assert set(options) == set(cls.model_fields)
    assert "namespace" in options
    for name, option in options.items():
        assert option.envvar == f"SMARTGRID_{name.upper()}"
        assert option.help, name
