"""``smartgrid-contracts``: the JSON Schema of every message, and RabbitMQ definitions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from contracts.definitions import DefinitionsError, build_definitions, passwords_from_env, roles
from contracts.messages import MESSAGES
from contracts.schema import render
from contracts.topology import DEFAULT_NAMESPACE, Topology

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


@app.command()
def definitions(
    out: Path = typer.Option(..., "--out", "-o", help="Write the definitions JSON here."),
    namespace: str = typer.Option(DEFAULT_NAMESPACE, envvar="SMARTGRID_NAMESPACE"),
    vhost: str = typer.Option("smartgrid", envvar="SMARTGRID_VHOST"),
    user_prefix: str = typer.Option("", help="Prefix of every user name (tests use one)."),
    substation_users: str = typer.Option(
        "",
        envvar="SMARTGRID_SUBSTATION_USERS",
        help="Comma-separated substation ids: each gets a user of its own, substation-<id> "
        "(password RABBITMQ_SUBSTATION_<ID>_PASSWORD), allowed only its own queue, instead of "
        "the shared substation user. Pair with the dispatchers' "
        "SMARTGRID_HEARTBEAT_USER=substation-{substation_id}.",
    ),
) -> None:
    """Write RabbitMQ definitions: vhost, one least-privilege user per role, core topology.

    Passwords come from the environment only (RABBITMQ_<ROLE>_PASSWORD); the file holds their
    salted hashes. The broker loads it at boot (load_definitions in rabbitmq.conf)."""
    topology = Topology(namespace)
    ids = [s.strip() for s in substation_users.split(",") if s.strip()]
    try:
        doc = build_definitions(
            topology,
            passwords_from_env(os.environ, topology, ids),
            vhost=vhost,
            user_prefix=user_prefix,
            substation_users=ids,
        )
    except DefinitionsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    # Salted hashes only; the broker's container runs as another user and must read it.
    out.write_text(json.dumps(doc, indent=2))
    users = ", ".join(user_prefix + r.name for r in roles(topology, ids))
    typer.echo(f"wrote {out}: vhost {vhost}, users {users}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
