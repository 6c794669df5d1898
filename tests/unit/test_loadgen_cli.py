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
        (["run", "--via", "pigeon", "-n", "1"], "'pigeon' is not one of 'http', 'amqp'"),
        (["run", "--profile", "sawtooth", "-n", "1"], "is not one of 'steady', 'rush-hour'"),
        (["run", "-n", "0"], "greater than or equal to 1"),
        (["demo", "--policy", "psychic"], "'psychic' is not one of 'headroom'"),
        (["stations", "--url", "http://127.0.0.1:9000/ocpp"], "must start with ws://"),
        (["stations", "--prefix", "a/b"], "letters, digits"),
        (["stations", "--count", "1001"], "less than or equal to 1000"),
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


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        (
            "arrival_s,energy_kwh",
            "0,20",
            "bad.csv: the header lacks max_power_kw: a trace has the columns arrival_s, "
            "energy_kwh, max_power_kw, and optionally departure_h",
        ),
        ("arrival_s,energy_kwh,max_power_kw", "0,x,11", "bad.csv:2: energy_kwh is not a number"),
        ("arrival_s,energy_kwh,max_power_kw,departure_h", "0,20,11,soon", "departure_h is not a"),
    ],
)
def test_a_bad_trace_is_one_plain_line_before_connecting(
    tmp_path: Path, header: str, row: str, message: str
) -> None:
    """Newcomer point 4: no Python tuple, the optional column called optional, the column
    named, and nothing printed about connecting (the trace is checked first)."""
    trace = tmp_path / "bad.csv"
    trace.write_text(f"{header}\n{row}\n")
    args = ["run", "--profile", "replay", "--trace", str(trace)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert message in result.output
    assert "('arrival_s'" not in result.output  # no Python tuple
    assert "connecting" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_flags_as_flags_and_the_defaults_of_settings(name: str) -> None:
    """Newcomer point 4: ``--help`` without ``<bool>``; the options whose value may come from
    the environment (namespace, gateway, broker) say their default."""
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "100"})
    text = " ".join(result.output.split())
    assert "--help Show this message and exit." in text
    assert "<bool>" not in text
    params = {p.name for p in COMMANDS[name].params}
    if "namespace" in params:
        assert "[default: smartgrid]" in text
    if "gateway_url" in params:
        assert "[default: http://127.0.0.1:8000]" in text
    if "amqp_url" in params:
        assert "[default: amqp://guest:guest@localhost:5672/%2F]" in text
    if "log_level" in params:
        assert "[default: WARNING]" in text


def test_a_settings_error_names_the_option() -> None:
    """Newcomer point 4: an invalid namespace is named as --namespace / SMARTGRID_NAMESPACE."""
    result = CliRunner().invoke(app, ["watch", "--namespace", "a b"], env={})
    assert result.exit_code == 2
    assert "--namespace (SMARTGRID_NAMESPACE): must match" in result.output
