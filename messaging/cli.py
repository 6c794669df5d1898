"""A typer command whose options are a settings class's fields, so every SMARTGRID_* variable
has its CLI option beside it by construction (and the two can never drift apart).

Each field ``foo_bar`` becomes ``--foo-bar`` (plus any aliases), showing its environment variable
and default in ``--help``. Values given on the command line win over the environment; pydantic
validates both, and invalid settings exit 2 with every problem listed, each under the option and
variable that set it (``build_settings``).

Every smartgrid command is built with ``new_app``: click's plain help, which renders a flag as a
flag (typer's rich panels print ``--help <bool>``), keeps literal brackets in help texts and
wraps long variable names instead of cutting them at 80 columns.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, get_args, get_origin

import typer
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from messaging.runtime import build_settings

S = TypeVar("S", bound=BaseSettings)

_PLAIN = (bool, int, float, str)


def _cli_type(annotation: Any) -> type:
    """The type typer parses: int/float/bool/str, unwrapping ``X | None``; anything else str."""
    if annotation in _PLAIN:
        return annotation  # type: ignore[no-any-return]
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is not None and len(args) == 1 and args[0] in _PLAIN:
        return args[0]  # type: ignore[no-any-return]
    return str


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "Required."
    default = info.get_default(call_default_factory=True)
    if isinstance(default, SecretStr):
        return "Default: a loopback development URL."
    if default is None:
        return "Default: unset."
    return f"Default: {default}."


def new_app(**kwargs: Any) -> typer.Typer:
    """A typer app as every smartgrid command has it (see the module docstring)."""
    kwargs.setdefault("add_completion", False)
    kwargs.setdefault("pretty_exceptions_enable", False)
    return typer.Typer(rich_markup_mode=None, **kwargs)


def env_var(cls: type[BaseSettings], name: str) -> str:
    prefix = str(cls.model_config.get("env_prefix") or "")
    return f"{prefix}{name.upper()}"


def option_label(flags: Sequence[str], env: str) -> str:
    """How an error names a setting: its option(s) and its variable."""
    return f"{' / '.join(flags)} ({env})" if flags else env


def settings_option(
    cls: type[BaseSettings], name: str, *flags: str, help: str | None = None
) -> Any:
    """One typer Option (default None: the settings class decides) for field ``name`` of
    ``cls``, with its variable and the field's own default in the help as ``[default: X]``
    (what click shows for an option's own default, and what docs_tools reads)."""
    info = cls.model_fields[name]
    default = info.get_default(call_default_factory=True)
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    text = help or info.description or ""
    if default is not None:
        text += f" [default: {default}]"
    return typer.Option(
        None, *(flags or (_flag(name),)), envvar=env_var(cls, name), help=text, show_default=False
    )


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def settings_options(
    cls: type[BaseSettings],
    *,
    env_prefix: str | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
    exclude: Sequence[str] = (),
) -> list[inspect.Parameter]:
    """One keyword-only parameter (a typer Option defaulting to None) per settings field; its
    variable has ``env_prefix`` (by default the class's own, as pydantic reads it)."""
    inherited = {n for base in cls.__mro__[1:] for n in getattr(base, "model_fields", {})}
    # The service's own settings first, the shared ones (broker, logging) after them.
    names = sorted(cls.model_fields, key=lambda n: n in inherited)
    params = []
    for name in names:
        info = cls.model_fields[name]
        if name in exclude:
            continue
        flags = _flags(name, info, aliases)
        typ = _cli_type(info.annotation)
        help_text = " ".join(p for p in (info.description, _default_text(info)) if p)
        envvar = env_var(cls, name) if env_prefix is None else f"{env_prefix}{name.upper()}"
        option = typer.Option(None, *flags, envvar=envvar, help=help_text, show_default=False)
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=typ | None
            )
        )
    return params


def _flags(name: str, info: FieldInfo, aliases: Mapping[str, Sequence[str]] | None) -> list[str]:
    if _cli_type(info.annotation) is bool:
        return [f"{_flag(name)}/--no-{name.replace('_', '-')}"]
    return [_flag(name), *(aliases or {}).get(name, ())]


def option_labels(
    cls: type[BaseSettings], aliases: Mapping[str, Sequence[str]] | None = None
) -> dict[str, str]:
    """Field -> how an error names it (``--capacity-kw (SMARTGRID_CAPACITY_KW)``)."""
    return {
        name: option_label(_flags(name, info, aliases), env_var(cls, name))
        for name, info in cls.model_fields.items()
    }


def settings_command(
    cls: type[S],
    run: Callable[[S], int | None],
    *,
    doc: str,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> Callable[..., None]:
    """A function typer can register: parses every field of ``cls``, then ``run(settings)``.

    ``run`` returns the exit code (None means 0).
    """

    labels = option_labels(cls, aliases)

    def command(**values: Any) -> None:
        code = run(build_settings(cls, labels=labels, **values))
        if code:
            raise typer.Exit(code)

    command.__doc__ = doc
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        settings_options(cls, aliases=aliases)
    )
    return command
