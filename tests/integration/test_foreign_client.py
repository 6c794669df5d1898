"""The contract holds for clients not written in Python: a request published with the C AMQP
client (`amqp-publish`, Debian's amqp-tools) is charged; a malformed one is dead-lettered."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid

import pytest

from contracts import EventKind, Topology
from loadgen.grid import LocalGrid
from loadgen.observe import GridObserver
from messaging import AmqpSettings
from tests.helpers import register_substations, wait_until


def _amqp_publish() -> str:
    path = shutil.which("amqp-publish")
    if path is None:
        reason = "amqp-publish not found: apt-get install amqp-tools"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path


def _publish(tool: str, settings: AmqpSettings, exchange: str, body: str) -> None:
    subprocess.run(
        [
            *(tool, "--url", settings.amqp_url.get_secret_value(), "-e", exchange, "-r", ""),
            *("-p", "-C", "application/json", "-b", body),
        ],
        check=True,
        timeout=15,
        capture_output=True,
    )


async def _follow(
    settings: AmqpSettings, topology: Topology, tool: str, valid: uuid.UUID, bad: uuid.UUID
) -> dict[EventKind, set[uuid.UUID]]:
    async with GridObserver(settings, topology) as observer:
        state = observer.state
        request: dict[str, object] = {"request_id": str(valid), "vehicle_id": "C-CLIENT-1"}
        request |= {"energy_kwh": 20.5, "max_power_kw": 11}
        _publish(tool, settings, topology.requests_exchange, json.dumps(request))
        # energy_kwh missing: not a ChargeRequest
        malformed = {"request_id": str(bad), "vehicle_id": "C-CLIENT-2", "max_power_kw": 11}
        _publish(tool, settings, topology.requests_exchange, json.dumps(malformed))
        await wait_until(
            lambda: (
                valid in state.by_kind[EventKind.COMPLETED]
                and bad in state.by_kind[EventKind.DEAD_LETTERED]
            ),
            "the valid request completed and the malformed one dead-lettered",
            timeout=30,
        )
        return state.by_kind


def test_a_c_client_publishes_by_the_contract(
    amqp_settings: AmqpSettings, topology: Topology
) -> None:
    tool = _amqp_publish()
    register_substations(topology, ["c1"])
    settings = amqp_settings.model_copy(update={"namespace": topology.namespace})
    valid, bad = uuid.uuid4(), uuid.uuid4()
    with LocalGrid([("c1", 300.0, 4)], settings=settings, time_scale=36_000):
        seen = asyncio.run(_follow(settings, topology, tool, valid, bad))
    assert valid in seen[EventKind.DISPATCHED]
    assert valid in seen[EventKind.COMPLETED]
    assert bad in seen[EventKind.DEAD_LETTERED]
    assert bad not in seen[EventKind.DISPATCHED]
