"""RabbitMQ's management HTTP API, for tests: what an operator sees in the management UI.

It listens on SMARTGRID_MANAGEMENT_URL (default: the AMQP host, port 15672) with the AMQP
URL's credentials. Like the broker, it must answer: no management API is a loud failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pika
import pytest

from messaging import AmqpSettings


@contextmanager
def management_client(settings: AmqpSettings) -> Iterator[httpx.Client]:
    amqp = urlsplit(settings.amqp_url.get_secret_value())
    base = os.environ.get("SMARTGRID_MANAGEMENT_URL") or f"http://{amqp.hostname}:15672"
    client = httpx.Client(
        base_url=base.rstrip("/") + "/api",
        auth=(amqp.username or "guest", amqp.password or "guest"),
        timeout=15,
    )
    try:
        client.get("/overview").raise_for_status()
    except httpx.HTTPError as exc:
        client.close()
        pytest.fail(
            f"RabbitMQ's management API does not answer at {base} ({exc}); enable it with "
            "`rabbitmq-plugins enable rabbitmq_management rabbitmq_prometheus` "
            "(.ci/run does) or set SMARTGRID_MANAGEMENT_URL",
            pytrace=False,
        )
    try:
        yield client
    finally:
        client.close()


def vhost_of(settings: AmqpSettings) -> str:
    return str(pika.URLParameters(settings.amqp_url.get_secret_value()).virtual_host)


def get(client: httpx.Client, path: str, vhost: str) -> list[dict[str, Any]]:
    r = client.get(f"{path}/{quote(vhost, safe='')}")
    r.raise_for_status()
    body: list[dict[str, Any]] = r.json()
    return body
