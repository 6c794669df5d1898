"""A typer command whose options are a settings class's fields, so every SMARTGRID_* variable
has its CLI option beside it by construction (and the two can never drift apart).

Each field ``foo_bar`` becomes ``--foo-bar`` (plus any aliases), showing its environment variable
and default in ``--help``. Values given on the command line win over the environment; pydantic
validates both, and invalid settings exit 2 with every problem listed (``build_settings``).
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


def settings_options(
    cls: type[BaseSettings],
    *,
    env_prefix: str = "SMARTGRID_",
    aliases: Mapping[str, Sequence[str]] | None = None,
    exclude: Sequence[str] = (),
) -> list[inspect.Parameter]:
    """One keyword-only parameter (a typer Option defaulting to None) per settings field."""
    inherited = {n for base in cls.__mro__[1:] for n in getattr(base, "model_fields", {})}
    # The service's own settings first, the shared ones (broker, logging) after them.
    names = sorted(cls.model_fields, key=lambda n: n in inherited)
    params = []
    for name in names:
        info = cls.model_fields[name]
        if name in exclude:
            continue
        flags = [f"--{name.replace('_', '-')}", *(aliases or {}).get(name, ())]
        typ = _cli_type(info.annotation)
        if typ is bool:
            flags = [f"{flags[0]}/--no-{name.replace('_', '-')}"]
        help_text = " ".join(p for p in (info.description, _default_text(info)) if p)
        option = typer.Option(
            None, *flags, envvar=f"{env_prefix}{name.upper()}", help=help_text, show_default=False
        )
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=typ | None
            )
        )
    return params


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

    def command(**values: Any) -> None:
        code = run(build_settings(cls, **values))
        if code:
            raise typer.Exit(code)

    command.__doc__ = doc
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        settings_options(cls, aliases=aliases)
    )
    return command
