"""RabbitMQ definitions for a deployment: a vhost, one user per role with the least permissions
it needs, and the namespace's core topology. Pure data; the broker imports it at boot
(``load_definitions``) or through the management API (``POST /api/definitions``).

No password is ever written here: the caller passes them (from its environment) and only
salted SHA-256 hashes, the format ``rabbit_password_hashing_sha256`` checks, leave this module.

Permissions are three regular expressions per user and vhost, matched against exchange and queue
names: *configure* to declare or delete, *write* to publish to an exchange or bind a queue,
*read* to consume from a queue or bind from an exchange. Each role's patterns list exactly what
that process declares, binds, publishes and consumes (see its ``_setup``).

RabbitMQ does not tell exchanges from queues of the same name, nor declaring from deleting: a
process that binds ``<ns>.requests`` (queue) to ``<ns>.requests`` (exchange) needs *read* on that
name, which also lets it consume the queue. Every process declares the core topology so that it
works on an empty broker; that is the price (tests/integration/test_least_privilege.py shows
what each role is refused).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.messages import SUBSTATION_ID_PATTERN
from contracts.topology import Topology

HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
MIN_PASSWORD_LENGTH = 12


@dataclass(frozen=True)
class Role:
    name: str
    configure: str
    write: str
    read: str
    tags: tuple[str, ...] = ()
    description: str = ""


# The user of one substation, when each has its own (``substation_users``); the dispatcher's
# SMARTGRID_HEARTBEAT_USER is this with {substation_id} for the id.
SUBSTATION_USER = "substation-{substation_id}"


def roles(topology: Topology, substation_users: Sequence[str] = ()) -> list[Role]:
    """Every role of a deployment, its permissions scoped to ``topology``'s namespace.

    With ``substation_users`` (substation ids), each of those substations gets a user of its
    own (``substation-<id>``) instead of the shared ``substation`` one, allowed only its own
    queue: it cannot consume another's work, and with SMARTGRID_HEARTBEAT_USER the dispatcher
    believes its heartbeats only for its own id (the broker checks the ``user_id`` property
    against the connection's user)."""
    ns = re.escape(topology.namespace)

    def names(*alternatives: str) -> str:
        return rf"^{ns}\.({'|'.join(alternatives)})$"

    # Every process declares the exchanges it touches and the core queues, idempotently, so
    # that it works on a broker where nothing was defined yet.
    exchanges = ("requests", "heartbeats", "substations", "events", "dead")
    core = ("requests", "dead")
    substation_queue = r"substation\.[a-z0-9][a-z0-9_-]*"
    dispatcher_queues = (
        r"heartbeats\.dispatcher-[0-9a-f]+",
        r"events\.dispatcher-[0-9a-f]+",
        r"dead\.watch",
    )
    loadgen_queues = (r"loadgen\.heartbeats\.[^.]+", r"loadgen\.events\.[^.]+")

    def substation(name: str, queue: str, whose: str) -> Role:
        return Role(
            name,
            configure=names(*exchanges, queue),
            write=names("requests", "heartbeats", "events", "dead", queue),
            read=names("requests", "substations", "dead", queue),
            description=f"consumes {whose} queue, publishes heartbeats and events",
        )

    for sid in substation_users:
        if not SUBSTATION_ID_PATTERN.match(sid):
            raise DefinitionsError(f"{sid!r} is not a substation id")
    if len(
        {password_env_var(SUBSTATION_USER.format(substation_id=s)) for s in substation_users}
    ) < len(substation_users):
        raise DefinitionsError(
            f"substation ids repeat (or differ only in - and _): {substation_users}"
        )
    if substation_users:
        substations = [
            substation(
                SUBSTATION_USER.format(substation_id=sid),
                re.escape(f"substation.{sid}"),
                f"substation {sid}'s",
            )
            for sid in substation_users
        ]
    else:
        substations = [substation("substation", substation_queue, "its substation")]
    return [
        Role(
            "gateway",
            configure=names(*exchanges),
            # publish: requests, events (accepted); bind: the core queues
            write=names("requests", "events", "dead"),
            read=names(*core),
            description="publishes requests and accepted events",
        ),
        Role(
            "dispatcher",
            # its own heartbeat and event queues, the dead-letter watch queue; substation queues
            # when it takes one back
            configure=names(*exchanges, substation_queue, *dispatcher_queues),
            write=names("requests", "substations", "events", "dead", *dispatcher_queues),
            read=names(
                "requests", "heartbeats", "events", "dead", substation_queue, *dispatcher_queues
            ),
            description="consumes requests and heartbeats, publishes assignments and events",
        ),
        *substations,
        Role(
            "loadgen",
            configure=names(*exchanges, *loadgen_queues),
            write=names("requests", "dead", *loadgen_queues),
            read=names("requests", "heartbeats", "events", "dead", *loadgen_queues),
            description="publishes requests over AMQP, follows heartbeats and events",
        ),
        Role(
            "admin",
            configure=".*",
            write=".*",
            read=".*",
            tags=("administrator",),
            description="operators: the management UI and API",
        ),
    ]


def password_env_var(role: str) -> str:
    return f"RABBITMQ_{role.upper().replace('-', '_')}_PASSWORD"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's SHA-256 scheme: base64(salt + sha256(salt + utf8(password))), 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


class DefinitionsError(ValueError):
    pass


def build_definitions(
    topology: Topology,
    passwords: Mapping[str, str],
    *,
    vhost: str = "smartgrid",
    user_prefix: str = "",
    substation_users: Sequence[str] = (),
) -> dict[str, Any]:
    """The definitions document. ``passwords`` maps each role name to its password."""
    all_roles = roles(topology, substation_users)
    missing = [password_env_var(r.name) for r in all_roles if not passwords.get(r.name)]
    if missing:
        raise DefinitionsError(f"no password given for: {', '.join(missing)}")
    short = [
        password_env_var(r.name) for r in all_roles if len(passwords[r.name]) < MIN_PASSWORD_LENGTH
    ]
    if short:
        raise DefinitionsError(
            f"passwords must be at least {MIN_PASSWORD_LENGTH} characters: {', '.join(short)}"
        )
    users = [
        {
            "name": user_prefix + r.name,
            "password_hash": hash_password(passwords[r.name]),
            "hashing_algorithm": HASHING_ALGORITHM,
            "tags": list(r.tags),
        }
        for r in all_roles
    ]
    permissions = [
        {
            "user": user_prefix + r.name,
            "vhost": vhost,
            "configure": r.configure,
            "write": r.write,
            "read": r.read,
        }
        for r in all_roles
    ]
    exchanges = [
        {
            "name": e.name,
            "vhost": vhost,
            "type": e.type,
            "durable": e.durable,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        }
        for e in topology.exchanges()
    ]
    queues = [
        {
            "name": q.name,
            "vhost": vhost,
            "durable": q.durable,
            "auto_delete": q.auto_delete,
            "arguments": dict(q.arguments),
        }
        for q in [*topology.core_queues(), topology.dead_watch_queue_spec()]
    ]
    bindings = [
        {
            "source": b.exchange,
            "vhost": vhost,
            "destination": b.queue,
            "destination_type": "queue",
            "routing_key": b.routing_key,
            "arguments": {},
        }
        for b in [*topology.core_bindings(), topology.dead_watch_binding()]
    ]
    return {
        "vhosts": [{"name": vhost}],
        "users": users,
        "permissions": permissions,
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
    }


def passwords_from_env(
    env: Mapping[str, str], topology: Topology, substation_users: Sequence[str] = ()
) -> dict[str, str]:
    return {
        r.name: env.get(password_env_var(r.name), "") for r in roles(topology, substation_users)
    }
