"""docs/configuration.md is what the code says: every settings field and every environment
variable the code names has its row, every row says what it does, and the committed page is
the generated one (a changed setting without `make configuration` fails here)."""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import re
from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings

from docs_tools import configuration
from gateway.settings import GatewaySettings

ROOT = configuration.ROOT
# The project's packages (tests aside): where settings classes live.
PACKAGES = tuple(
    sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")
)
# Where the code that reads environment variables is: not the documentation, not the caches
# and virtualenvs in hidden directories.
SCANNED_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".sh", ".conf", ".example"}
SCANNED_NAMES = {"Dockerfile", "Makefile"}
SCANNED_DIRS = {".ci"}  # scripts, whatever their names
SKIPPED_DIRS = {"docs", "node_modules", "__pycache__", "results"}
ENV_NAME = re.compile(r"\b(?:SMARTGRID|LOADGEN)_[A-Z0-9_]*[A-Z0-9]\b")


def _settings_classes() -> list[type[BaseSettings]]:
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            importlib.import_module(info.name)
    found: list[type[BaseSettings]] = []
    todo = list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.split(".")[0] in PACKAGES and cls not in found:
            found.append(cls)
    return sorted(found, key=lambda c: c.__qualname__)


SETTINGS = _settings_classes()
PAGE = configuration.render()


def test_the_committed_page_is_the_generated_one() -> None:
    committed = configuration.PAGE.read_text() if configuration.PAGE.exists() else ""
    assert committed == PAGE, "docs/configuration.md is out of date: run `make configuration`"


def test_the_page_says_it_is_generated_and_how() -> None:
    first = PAGE.splitlines()[0]
    assert "Generated" in first
    assert configuration.GENERATE in first


def test_the_settings_classes_are_found() -> None:
    # The search must see the services' classes, or the tests below check nothing.
    assert {"messaging", "gateway", "loadgen", "docs_tools"} <= set(PACKAGES)
    names = {c.__name__ for c in SETTINGS}
    assert {"AmqpSettings", "GatewaySettings", "DispatcherSettings", "WorkerSettings"} <= names
    assert "LoadgenSettings" in names


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_every_field_of_every_settings_class_has_a_row(cls: type[BaseSettings]) -> None:
    documented = configuration.documented_fields()
    for name in cls.model_fields:
        owners = [b for b in cls.__mro__ if name in getattr(b, "model_fields", {})]
        assert any((b, name) in documented for b in owners), f"{cls.__name__}.{name} has no row"
        for env in configuration.env_names(cls, name):
            assert f"| `{env}` |" in PAGE, f"{env} ({cls.__name__}.{name}) not in a table"


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_every_field_says_what_it_does(cls: type[BaseSettings]) -> None:
    for name, info in cls.model_fields.items():
        description = (info.description or "").strip()
        assert len(description) >= 10, f"{cls.__name__}.{name} needs a description="


def test_every_typer_option_says_what_it_does() -> None:
    for label, command in configuration.commands().items():
        for param in configuration.options(command):
            assert configuration.option_help(label, param), f"{label} {param.opts[0]}: no help"


def test_every_row_of_the_page_has_a_description() -> None:
    rows = [line for line in PAGE.splitlines() if line.startswith("| `")]
    assert len(rows) > 50
    for row in rows:
        description = row.rstrip(" |").rsplit(" | ", 1)[-1]
        assert description not in ("", configuration.NONE), row


def test_cli_options_are_spelled_as_the_commands_spell_them() -> None:
    # The gateway's aliases and a boolean's --no- form come from the click command itself.
    rows = {line.split(" | ")[0]: line for line in PAGE.splitlines() if line.startswith("| `")}
    assert "| `--http-host`, `--host` |" in rows["| `SMARTGRID_HTTP_HOST`"]
    flags = "| `--accepted-events` / `--no-accepted-events` |"
    assert flags in rows["| `SMARTGRID_ACCEPTED_EVENTS`"]


def test_a_field_added_without_regenerating_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Extended(GatewaySettings):
        drain_grace_s: float = Field(default=1.0, gt=0, description="A setting not yet listed.")

    sections = configuration.sections()
    gateway = next(i for i, s in enumerate(sections) if s.cls is GatewaySettings)
    s = sections[gateway]
    sections[gateway] = configuration.SettingsSection(
        s.title, s.intro, Extended, (*s.fields, "drain_grace_s"), s.programs
    )
    monkeypatch.setattr(configuration, "sections", lambda: sections)
    page = configuration.render()
    assert "| `SMARTGRID_DRAIN_GRACE_S` | — (environment only) |" in page
    assert page != configuration.PAGE.read_text()


def _scanned_files() -> list[Path]:
    files = []
    for top, dirs, names in os.walk(ROOT):
        dirs[:] = [
            d
            for d in dirs
            if (d in SCANNED_DIRS or not d.startswith("."))
            and d not in SKIPPED_DIRS
            and not d.endswith(".egg-info")
        ]
        for name in names:
            path = Path(top, name)
            if path == Path(__file__).resolve():
                continue  # names a setting that does not exist, on purpose
            script = Path(top).name in SCANNED_DIRS
            if script or path.suffix in SCANNED_SUFFIXES or name in SCANNED_NAMES:
                files.append(path)
    return files


def _assigned_names(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _named_variables() -> dict[str, set[str]]:
    """Every SMARTGRID_/LOADGEN_ name in the code and where; a name the code assigns as a
    Python constant (``SMARTGRID_COMMANDS = ...``) is not an environment variable."""
    where: dict[str, set[str]] = {}
    constants: set[str] = set()
    for path in _scanned_files():
        text = path.read_text(errors="replace")
        if path.suffix == ".py":
            constants |= _assigned_names(text)
        for name in ENV_NAME.findall(text):
            where.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return {n: w for n, w in where.items() if n not in constants}


def test_every_environment_variable_the_code_names_is_on_the_page() -> None:
    named = _named_variables()
    # The scan sees the code: a settings field's variable and a typer option's.
    assert "SMARTGRID_AMQP_URL" in named
    assert "LOADGEN_TOP" in named
    missing = {n: sorted(w) for n, w in named.items() if f"`{n}`" not in PAGE}
    assert not missing, (
        "named in the code but not in docs/configuration.md (a settings field, a typer option "
        f"with envvar=, or configuration.OTHER_VARIABLES): {missing}"
    )
