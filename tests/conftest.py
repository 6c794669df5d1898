"""Fixtures shared by every test tier, and the tiers' markers.

Integration tests run against the real RabbitMQ at SMARTGRID_AMQP_URL. When none answers they
fail loudly with how to get one; they never skip silently (in CI or anywhere else).

The markers follow the directory, so a new file cannot forget its own: everything under
tests/integration is ``integration``; everything under tests/chaos is ``chaos`` and
``integration`` (it needs the broker too). ``-m "not integration"`` is then the tier that needs
no broker (``make test-unit``), ``-m "not chaos"`` all but chaos, ``-m chaos`` chaos alone.
Within that tier, tests/unit opens no socket at all and tests/loopback only loopback ones (a
listener and its clients in one process); each directory's conftest refuses the rest.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from contracts import Topology
from loadgen.broker import delete_namespace
from loadgen.cluster import ClusterInfo
from messaging import AmqpSettings, Session
from messaging.errors import MessagingError
from tests import cluster_grid
from tests.helpers import SUBSTATIONS

TESTS = Path(__file__).resolve().parent
# Directory -> the markers every test under it carries.
TIER_MARKERS: dict[Path, tuple[str, ...]] = {
    TESTS / "integration": ("integration",),
    TESTS / "chaos": ("integration", "chaos"),
}

# The session's own RabbitMQ container when no broker answers and a Docker engine does.
pytest_plugins = ["tests.broker_plugin"]

HOW_TO_GET_A_BROKER = """\
No RabbitMQ answers at {url}.
Integration tests need a real broker. Any one of:
  * Debian/Ubuntu:  sudo apt-get install rabbitmq-server && sudo rabbitmq-server -detached
  * Docker:         with a Docker engine running, the test session starts a RabbitMQ
                    container itself (testcontainers, installed by `make install`)
  * elsewhere:      export SMARTGRID_AMQP_URL=amqp://user:pass@host:5672/%2F
(`make test` and .ci/run start a local rabbitmq-server themselves when one is installed.)"""


def tier_markers(path: Path) -> tuple[str, ...]:
    """The markers a test in ``path`` carries for its directory (none for unit and deploy)."""
    for directory, names in TIER_MARKERS.items():
        if path.resolve().is_relative_to(directory):
            return names
    return ()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in tier_markers(item.path):
            item.add_marker(getattr(pytest.mark, name))
    # The tests on the local cluster run last, one after another: its three nodes start once
    # for all of them and stop at the end of the session, never idling beside other tests.
    items.sort(key=lambda item: CLUSTER_FIXTURE in getattr(item, "fixturenames", ()))


CLUSTER_FIXTURE = "cluster3"


@pytest.fixture(scope="session")
def cluster3() -> Iterator[ClusterInfo]:
    """A three-node RabbitMQ cluster of the session's own (loadgen.cluster; never the machine's
    broker), shared by every test that names it; removed at the end."""
    yield from cluster_grid.cluster_of(3)


@pytest.fixture
def whole_cluster(cluster3: ClusterInfo) -> ClusterInfo:
    """The session's cluster with every node running: what an earlier test stopped or killed
    is started again, so that each test begins on the whole cluster."""
    cluster_grid.make_whole(cluster3)
    return cluster3


@pytest.fixture(scope="session")
def amqp_settings(session_broker: object) -> AmqpSettings:
    settings = AmqpSettings()
    try:
        asyncio.run(_probe(settings))
    except MessagingError as exc:
        problem = str(exc)
    else:
        return settings
    message = HOW_TO_GET_A_BROKER.format(url=settings.redacted_url()) + f"\n({problem})"
    pytest.fail(message, pytrace=False)


async def _probe(settings: AmqpSettings) -> None:
    session = await Session.open(settings, "smartgrid-tests-probe")
    await session.close()


@pytest.fixture
def namespace() -> str:
    return f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topology(amqp_settings: AmqpSettings, namespace: str) -> Iterator[Topology]:
    """A namespace of its own for one test; every queue and exchange under it is deleted after."""
    topo = Topology(namespace)
    yield topo
    asyncio.run(_delete(amqp_settings, topo))


@pytest.fixture
def new_topology(amqp_settings: AmqpSettings, namespace: str) -> Iterator[Callable[[], Topology]]:
    """Makes more namespaces for one test (``<namespace>-2``, ...); each is deleted after."""
    made: list[Topology] = []

    def make() -> Topology:
        made.append(Topology(f"{namespace}-{len(made) + 2}"))
        return made[-1]

    yield make
    for topo in made:
        asyncio.run(_delete(amqp_settings, topo))


async def _delete(settings: AmqpSettings, topo: Topology) -> None:
    # Tests that start substations register their ids (helpers.register_substations).
    await delete_namespace(settings, topo, SUBSTATIONS.pop(topo.namespace, set()))


@pytest.fixture
async def session(amqp_settings: AmqpSettings) -> AsyncIterator[Session]:
    s = await Session.open(amqp_settings, "smartgrid-tests")
    yield s
    await s.close()
