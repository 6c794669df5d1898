"""loadgen's CLI: every option has its environment variable, usage errors exit 2 (no broker
needed to find out)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from loadgen.__main__ import app

# typer vendors its own click; look at the parameters by what they are, not by class.
COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_an_env_var_and_help(name: str) -> None:
    command = COMMANDS[name]
    assert command.help, name
    options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
    assert options, name
    for param in options:
        assert param.envvar, (name, param.name)
        assert str(param.envvar).startswith(("SMARTGRID_", "LOADGEN_")), param.envvar
        assert param.help, (name, param.name)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_reads(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "Usage:" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--requests", "5", "--duration", "3"], "exactly one of"),
        (["run"], "exactly one of"),
        (["run", "--profile", "replay"], "needs --trace"),
        (["run", "--via", "pigeon", "-n", "1"], "http or amqp"),
        (["run", "--profile", "sawtooth", "-n", "1"], "choose one of steady"),
        (["run", "-n", "0"], "greater than or equal to 1"),
        (["demo", "--policy", "psychic"], "choose one of"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_bad_trace_exits_2_naming_the_row(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("arrival_s,energy_kwh,max_power_kw\n0,20,11\n1,-3,11\n")
    result = CliRunner().invoke(app, ["run", "--profile", "replay", "--trace", str(trace)])
    assert result.exit_code == 2
    assert "bad.csv:3: energy_kwh" in result.output


@pytest.mark.parametrize("command", ["run", "watch", "demo"])
def test_the_view_limit_and_the_broker_timeout_are_options(command: str) -> None:
    """Finding 9: how many substations a view shows and how long one broker call may take
    are options of every command that follows a grid (with their variables), checked early."""
    params = {p.name: p for p in COMMANDS[command].params}
    assert params["top"].envvar == "LOADGEN_TOP"
    assert params["broker_timeout"].envvar == "LOADGEN_BROKER_TIMEOUT"
    for bad in (["--top", "0"], ["--broker-timeout", "0"]):
        args = [command, *(["-n", "1"] if command == "run" else []), *bad]
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 2, result.output
        assert "greater than or equal to" in result.output
