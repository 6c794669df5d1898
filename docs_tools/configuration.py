"""docs/configuration.md, generated from the settings classes and the commands' own options.

``python -m docs_tools.configuration`` writes the page; ``--check`` writes nothing and exits 1
when the page differs from what the code says (tests/unit/test_configuration_doc.py does the
same), so a setting cannot change without its documentation changing with it.

What each row says comes from the code: a settings field's environment variable, type, default,
bounds and ``description=``; the CLI spelling from the click command typer builds for each
program (aliases and ``--no-`` forms included), so the page shows what ``--help`` shows. The
only hand-written text is the sections' introductions, help for the few typer options that have
none (``MISSING_HELP``) and the variables read outside any settings class (``OTHER_VARIABLES``).
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from contracts.definitions import MIN_PASSWORD_LENGTH, SUBSTATION_USER, password_env_var, roles
from contracts.topology import DEFAULT_NAMESPACE, Topology
from dispatcher.settings import DispatcherSettings
from gateway.settings import GatewaySettings
from loadgen.settings import LoadgenSettings
from messaging.settings import AmqpSettings
from substation_worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
GENERATE = "make configuration"
MODULE = "python -m docs_tools.configuration"

# The click commands come from typer, which vendors its own click: they are read by attribute
# (name, opts, secondary_opts, envvar, default, help, min, max), never by click's types.
Command = Any
Param = Any

NONE = "—"

# AmqpSettings fields that are about TLS: their own section, the rest is "Broker connection".
TLS_FIELDS = ("amqp_ca_file", "amqp_cert_file", "amqp_key_file", "amqp_tls_verify_hostname")

# Help for typer options declared without one: (command label, parameter name) -> text. The
# page must say what every option does; the right place for these is the option's help=.
MISSING_HELP: dict[tuple[str, str], str] = {
    ("contracts definitions", "namespace"): "Namespace whose topology the definitions declare "
    "and whose names the users' permissions allow.",
    ("contracts definitions", "vhost"): "Virtual host the definitions create and grant on.",
}


@dataclass(frozen=True)
class OtherVariable:
    """An environment variable read outside the settings classes (``os.environ``)."""

    name: str
    read_by: str
    default: str
    description: str


OTHER_VARIABLES: tuple[OtherVariable, ...] = (
    OtherVariable(
        "SMARTGRID_MANAGEMENT_URL",
        "the tests (`tests/management.py`), `bench.flood`",
        "`http://<AMQP host>:15672`",
        "Base URL of RabbitMQ's management HTTP API, used with the AMQP URL's credentials. "
        "bench.flood uses it only when it is on loopback.",
    ),
)


@dataclass(frozen=True)
class SettingsSection:
    """One table of settings fields, and the commands whose options are looked up for them."""

    title: str
    intro: str
    cls: type[BaseSettings]
    fields: tuple[str, ...]
    # Command labels (or their first word, "loadgen") whose options are these fields'.
    programs: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Row:
    env: str
    cli: str
    type: str
    default: str
    constraint: str
    description: str


HEADER = ("Environment variable", "CLI option", "Type", "Default", "Constraint", "Description")


# -- the commands ------------------------------------------------------------------------------


def commands() -> dict[str, Command]:
    """Every command that takes settings, by label ("gateway", "loadgen run", ...), in the
    order the page lists them."""
    import typer.main

    from contracts.__main__ import app as contracts_app
    from dispatcher.__main__ import app as dispatcher_app
    from gateway.__main__ import cli as gateway_app
    from loadgen.__main__ import app as loadgen_app
    from substation_worker.__main__ import app as worker_app

    found: dict[str, Command] = {
        "gateway": typer.main.get_command(gateway_app),
        "dispatcher": typer.main.get_command(dispatcher_app),
        "worker": typer.main.get_command(worker_app),
    }
    for name, command in typer.main.get_command(loadgen_app).commands.items():  # type: ignore[attr-defined]
        found[f"loadgen {name}"] = command
    contracts = typer.main.get_command(contracts_app)
    found["contracts definitions"] = contracts.commands["definitions"]  # type: ignore[attr-defined]
    return found


def options(command: Command) -> list[Param]:
    """The command's options (not its arguments, not --help), in its order."""
    return [
        p
        for p in command.params
        if getattr(p, "opts", None) and p.opts[0].startswith("-") and not p.hidden
    ]


def envvars(param: Param) -> list[str]:
    env = param.envvar
    if env is None:
        return []
    return [env] if isinstance(env, str) else list(env)


def spelling(param: Param) -> str:
    """How the CLI spells the option: every flag, and the --no- form of a boolean."""
    flags = ", ".join(f"`{o}`" for o in param.opts)
    if param.secondary_opts:
        flags += " / " + ", ".join(f"`{o}`" for o in param.secondary_opts)
    return flags


def _in(label: str, programs: tuple[str, ...] | None) -> bool:
    return programs is None or any(label == p or label.startswith(p + " ") for p in programs)


def cli_cell(
    env: str,
    cmds: dict[str, Command],
    programs: tuple[str, ...] | None,
    class_envs: set[str],
) -> str:
    """The options reading ``env`` on those commands, and on which of them when not on every
    command that takes some setting of the class (whose variables are ``class_envs``)."""
    scope = {label: c for label, c in cmds.items() if _in(label, programs)}
    by_spelling: dict[str, list[str]] = {}
    for label, command in scope.items():
        for p in options(command):
            if env in envvars(p):
                by_spelling.setdefault(spelling(p), []).append(label)
    if not by_spelling:
        return f"{NONE} (environment only)"
    if len(scope) == 1:
        return " ".join(by_spelling)
    # The commands that take any setting of the class: where an option could be expected.
    takers = [
        label
        for label, c in scope.items()
        if any(e in class_envs for p in options(c) for e in envvars(p))
    ]
    parts = []
    for flags, labels in by_spelling.items():
        missing = [label for label in takers if label not in labels]
        if not missing:
            parts.append(flags)
        elif len(missing) < len(labels):
            parts.append(f"{flags} (all but {', '.join(missing)})")
        else:
            parts.append(f"{flags} ({', '.join(labels)})")
    return "; ".join(parts)


# -- what a field or option says --------------------------------------------------------------


def env_names(cls: type[BaseSettings], name: str) -> list[str]:
    """The environment variables pydantic-settings reads a field from."""
    info = cls.model_fields[name]
    alias = info.validation_alias or info.alias
    if isinstance(alias, str):
        return [alias.upper()]
    if isinstance(alias, AliasChoices):
        return [c.upper() for c in alias.choices if isinstance(c, str)]
    prefix = cls.model_config.get("env_prefix") or ""
    return [f"{prefix}{name}".upper()]


def type_text(annotation: Any) -> str:
    """What an operator may write: a plain type name, the values of a Literal or an Enum."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(type_text(a) for a in args)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        kinds = [getattr(m, "path_type", None) for m in metadata]
        for kind, text in (("file", "an existing file"), ("dir", "an existing directory")):
            if kind in kinds:
                return f"path ({text})"
        return type_text(base)
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
        if issubclass(annotation, bool):
            return "bool (`true`/`false`)"
        if issubclass(annotation, SecretStr):
            return "string (secret)"
        if issubclass(annotation, Path):
            return "path"
        names = {int: "integer", float: "number", str: "string"}
        for base, text in names.items():
            if issubclass(annotation, base):
                return text
    return str(getattr(annotation, "__name__", annotation))


def _value(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        value = "true" if value else "false"
    if isinstance(value, Enum):
        value = value.value
    return f"`{value}`" if str(value) else "empty"


def field_default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    return "unset" if default is None else _value(default)


# How each bound pydantic records reads on the page: (its type, its attribute, the words).
_BOUNDS: tuple[tuple[type, str, str], ...] = (
    (annotated_types.Gt, "gt", "> {}"),
    (annotated_types.Ge, "ge", "≥ {}"),
    (annotated_types.Lt, "lt", "< {}"),
    (annotated_types.Le, "le", "≤ {}"),
    (annotated_types.MinLen, "min_length", "length ≥ {}"),
    (annotated_types.MaxLen, "max_length", "length ≤ {}"),
)


def field_constraint(info: FieldInfo) -> str:
    parts: list[str] = []
    for m in info.metadata:
        bound = next((b for b in _BOUNDS if isinstance(m, b[0])), None)
        if bound is not None:
            parts.append(bound[2].format(getattr(m, bound[1])))
        elif getattr(m, "pattern", None):
            parts.append(f"matches `{m.pattern}`")
    return ", ".join(parts)


def settings_rows(section: SettingsSection, cmds: dict[str, Command]) -> list[Row]:
    class_envs = {e for n in section.cls.model_fields for e in env_names(section.cls, n)}
    rows = []
    for name in section.fields:
        info = section.cls.model_fields[name]
        for env in env_names(section.cls, name):
            rows.append(
                Row(
                    env=f"`{env}`",
                    cli=cli_cell(env, cmds, section.programs, class_envs),
                    type=type_text(info.annotation),
                    default=field_default(info),
                    constraint=field_constraint(info),
                    description=info.description or "",
                )
            )
    return rows


_STATED_DEFAULT = re.compile(r"\s*\[default: ([^\]]+)\]")


def option_help(label: str, param: Param) -> str:
    return (param.help or MISSING_HELP.get((label, param.name), "")).strip()


def option_rows(label: str, command: Command, settings: type[BaseSettings] | None) -> list[Row]:
    """A command's own typer options, as it declares them. An option with no default of its
    own that feeds a settings field shows the default its help states, else the field's."""
    fed = {}
    if settings is not None:
        fed = {
            env: settings.model_fields[n]
            for n in settings.model_fields
            for env in env_names(settings, n)
        }
    rows = []
    for p in options(command):
        help_text = option_help(label, p)
        stated = _STATED_DEFAULT.search(help_text)
        description = _STATED_DEFAULT.sub("", help_text)
        env = envvars(p)
        if p.required:
            default = "required"
        elif p.default is not None:
            default = _value(p.default)
        elif stated:
            # A value is shown as code, prose ("until Ctrl-C") as it is.
            value = stated.group(1)
            default = value if " " in value else f"`{value}`"
        elif any(e in fed for e in env):
            default = field_default(next(fed[e] for e in env if e in fed))
        else:
            default = "unset"
        bounds = [
            f"≥ {p.min}" if p.min is not None else "",
            f"≤ {p.max}" if p.max is not None else "",
        ]
        rows.append(
            Row(
                env=", ".join(f"`{e}`" for e in env) or NONE,
                cli=spelling(p),
                type=_option_type(p),
                default=default,
                constraint=", ".join(b for b in bounds if b),
                description=description,
            )
        )
    return rows


def _option_type(param: Param) -> str:
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    if annotation is not None:
        return type_text(annotation)
    if getattr(param, "is_flag", False):
        return type_text(bool)
    name = getattr(getattr(param, "type", None), "name", "")
    return str(name) or "string"


# -- the page ----------------------------------------------------------------------------------

_CODE_SPAN = re.compile(r"(`[^`]*`)")


def cell(text: str) -> str:
    """Table-safe markdown: one line, no bare |, and <ns>-style placeholders kept visible
    (outside code spans a renderer would take them for HTML tags)."""
    parts = _CODE_SPAN.split(" ".join(text.split()))
    out = [p if p.startswith("`") else p.replace("<", "&lt;") for p in parts]
    return "".join(out).replace("|", "\\|")


def table(rows: Iterable[Row], header: Sequence[str] = HEADER) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        values = (r.env, r.cli, r.type, r.default, r.constraint, r.description)
        lines.append("| " + " | ".join(cell(v) if v else NONE for v in values) + " |")
    return lines


def _own(cls: type[BaseSettings]) -> tuple[str, ...]:
    inherited = {n for base in cls.__mro__[1:] for n in getattr(base, "model_fields", {})}
    return tuple(n for n in cls.model_fields if n not in inherited)


def sections() -> list[SettingsSection]:
    broker = tuple(n for n in AmqpSettings.model_fields if n not in TLS_FIELDS)
    return [
        SettingsSection(
            "Broker connection (every process)",
            "Read by the gateway, the dispatcher, every substation worker and loadgen. Where the "
            "CLI column names no commands, every command that takes settings has the option.",
            AmqpSettings,
            broker,
        ),
        SettingsSection(
            "TLS to the broker (every process)",
            "With an `amqps://` URL the broker's certificate is always verified (TLS 1.2 or "
            "later); one that does not verify is a fatal error (exit 3), not retried. The files "
            "are refused with an `amqp://` URL.",
            AmqpSettings,
            TLS_FIELDS,
        ),
        SettingsSection(
            "Gateway (`smartgrid-gateway`)",
            "The HTTP API and its limits; the broker settings above apply too.",
            GatewaySettings,
            _own(GatewaySettings),
            ("gateway",),
        ),
        SettingsSection(
            "Dispatcher (`smartgrid-dispatcher`)",
            "The broker settings above apply too.",
            DispatcherSettings,
            _own(DispatcherSettings),
            ("dispatcher",),
        ),
        SettingsSection(
            "Substation worker (`smartgrid-worker`)",
            "One process per substation; the broker settings above apply too.",
            WorkerSettings,
            _own(WorkerSettings),
            ("worker",),
        ),
        SettingsSection(
            "Load generator (`smartgrid-loadgen`)",
            "The settings every loadgen command reads (with the broker settings above); each "
            "command's own options follow.",
            LoadgenSettings,
            _own(LoadgenSettings),
            ("loadgen",),
        ),
    ]


def documented_fields() -> set[tuple[type[BaseSettings], str]]:
    """(class, field) of every settings field the page has a row for."""
    return {(s.cls, n) for s in sections() for n in s.fields}


def _password_rows() -> list[Row]:
    def row(user: str, description: str) -> Row:
        return Row(
            env=f"`{password_env_var(user)}`",
            cli=f"{NONE} (environment only)",
            type=type_text(SecretStr),
            default="required",
            constraint=f"length ≥ {MIN_PASSWORD_LENGTH}",
            description=description,
        )

    topology = Topology(DEFAULT_NAMESPACE)
    rows = [row(r.name, f"Password of user `{r.name}` ({r.description}).") for r in roles(topology)]
    own = SUBSTATION_USER.format(substation_id="<id>")
    rows.append(
        row(
            own,
            f"Password of user `{own}`, for each id of `--substation-users` (upper case, `-` as "
            "`_`); those substations have no use for the shared `substation` user.",
        )
    )
    return rows


def render(cmds: dict[str, Command] | None = None) -> str:
    cmds = commands() if cmds is None else cmds
    out = [
        f"Generated by `{GENERATE}` (`{MODULE}`) from the settings classes and the commands' "
        "options: edit those, then regenerate.",
        "",
        "# Configuration",
        "",
        "Every setting is an environment variable; most are also an option of the command that "
        "reads it, and a value given on the command line wins over the environment. `--help` "
        "on each command lists its options. Invalid settings stop the process with exit code 2, "
        "every problem listed.",
    ]
    by_program = {"loadgen": LoadgenSettings}
    for section in sections():
        out += ["", f"## {section.title}", "", section.intro, ""]
        out += table(settings_rows(section, cmds))
        if section.cls is LoadgenSettings:
            for label, command in cmds.items():
                if not label.startswith("loadgen "):
                    continue
                out += ["", f"### `smartgrid-{label}`", ""]
                doc = (command.help or "").strip().split("\n\n")[0]
                if doc:
                    out += [" ".join(doc.split()), ""]
                out += table(option_rows(label, command, by_program["loadgen"]))
    definitions = "contracts definitions"
    out += [
        "",
        "## RabbitMQ definitions (`smartgrid-contracts definitions`)",
        "",
        "Writes the broker's definitions file: the vhost, one least-privilege user per role, the "
        "core topology. Passwords come from the environment only; the file holds their salted "
        "hashes.",
        "",
    ]
    out += table(option_rows(definitions, cmds[definitions], None))
    out += ["", "### Passwords", ""]
    out += table(_password_rows())
    out += [
        "",
        "## Other environment variables",
        "",
        "Read outside the settings classes, by tools rather than by the grid's processes.",
        "",
        "| Environment variable | Read by | Default | Description |",
        "| --- | --- | --- | --- |",
    ]
    for v in OTHER_VARIABLES:
        out.append(
            f"| `{v.name}` | {cell(v.read_by)} | {cell(v.default)} | {cell(v.description)} |"
        )
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 if {PAGE.relative_to(ROOT)} is not current"
    )
    args = parser.parse_args(argv)
    page = render()
    current = PAGE.read_text() if PAGE.exists() else ""
    name = PAGE.relative_to(ROOT)
    if args.check:
        if current != page:
            print(f"{name} is out of date: run `{GENERATE}`", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(page)
    print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
