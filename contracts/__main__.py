"""``smartgrid-contracts schema``: print or write the JSON Schema of every message."""

from __future__ import annotations

from pathlib import Path

import typer

from contracts.messages import MESSAGES
from contracts.schema import render

app = typer.Typer(help="The smartgrid wire contract.", no_args_is_help=True, add_completion=False)


@app.callback()
def _root() -> None:
    """The smartgrid wire contract."""


@app.command()
def schema(
    name: str | None = typer.Argument(None, help=f"One of {', '.join(MESSAGES)}; all if omitted."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write <Name>.schema.json files into this folder."
    ),
) -> None:
    """Print (or write) the JSON Schema of the messages."""
    names = [name] if name else list(MESSAGES)
    for n in names:
        if n not in MESSAGES:
            raise typer.BadParameter(f"unknown message {n!r}; known: {', '.join(MESSAGES)}")
    if out is None:
        for n in names:
            typer.echo(render(n), nl=False)
        return
    out.mkdir(parents=True, exist_ok=True)
    for n in names:
        (out / f"{n}.schema.json").write_text(render(n))
        typer.echo(f"wrote {out / f'{n}.schema.json'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
