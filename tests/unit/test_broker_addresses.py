"""Several broker URLs in SMARTGRID_AMQP_URL: parsing, validation, and the order a process
tries them in (NodeOrder, and BrokerLink's rounds over it, on stub connections: no I/O)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from pydantic import ValidationError

from messaging import AmqpSettings, BrokerLink, FatalBrokerError
from messaging.addresses import AddressError, NodeOrder, parse_addresses
from messaging.errors import BrokerUnavailable
from tests.fakes import FakeBroker, FakeSession

A = "amqp://app:pw-a-secret@10.0.0.1:5672/grid"
B = "amqp://app:pw-b-secret@10.0.0.2:5673/grid"
C = "amqp://app:pw-c-secret@10.0.0.3/grid"


# -- parsing and validation ---------------------------------------------------------------


def test_one_url_is_what_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMARTGRID_AMQP_URL", raising=False)
    settings = AmqpSettings()
    (only,) = settings.amqp_addresses()
    assert only.node == "localhost:5672"
    assert settings.redacted_url() == "amqp://guest:***@localhost:5672/%2F"
    assert settings.amqp_user() == "guest"
    assert settings.amqp_vhost() == "/"
    assert settings.for_address(only) is settings


def test_several_urls_in_the_order_given() -> None:
    settings = AmqpSettings(amqp_url=f"{A},{B},{C}")
    addresses = settings.amqp_addresses()
    assert [a.node for a in addresses] == ["10.0.0.1:5672", "10.0.0.2:5673", "10.0.0.3:5672"]
    assert [a.password for a in addresses] == ["pw-a-secret", "pw-b-secret", "pw-c-secret"]
    assert settings.amqp_user() == "app"
    assert settings.amqp_vhost() == "grid"
    one = settings.for_address(addresses[1])
    assert one.amqp_url.get_secret_value() == B
    assert one.namespace == settings.namespace


def test_spaces_around_urls_are_ignored() -> None:
    spaced = AmqpSettings(amqp_url=f"  {A} ,\n {B}\t")
    assert [a.secret_url for a in spaced.amqp_addresses()] == [A, B]


def test_passwords_stay_out_of_reprs_and_redacted_forms() -> None:
    settings = AmqpSettings(amqp_url=f"{A},{B}")
    shown = [repr(settings), str(settings), settings.redacted_url()]
    shown += [repr(a) for a in settings.amqp_addresses()]
    shown += [a.redacted + a.node for a in settings.amqp_addresses()]
    assert not [s for s in shown if "secret" in s]
    assert settings.redacted_url() == (
        "amqp://app:***@10.0.0.1:5672/grid,amqp://app:***@10.0.0.2:5673/grid"
    )


def test_an_ipv6_node_is_bracketed() -> None:
    (address,) = parse_addresses("amqp://guest:guest@[::1]:5672/%2F")
    assert address.node == "[::1]:5672"
    assert address.redacted == "amqp://guest:***@[::1]:5672/%2F"


@pytest.mark.parametrize(
    ("url", "named", "problem"),
    [
        (f"{A},http://app:pw-x-secret@10.0.0.9/grid", "address 2 of 2", "amqp:// or amqps://"),
        (f"{A},amqp://app:pw-x-secret@10.0.0.9:99999/grid", "address 2 of 2", "no valid port"),
        (f"{A},,{B}", "address 2 of 3", "is empty"),
        (f"{A},", "address 2 of 2", "is empty"),
        (f"{A},amqp://app:guest@10.0.0.9/grid", "amqp://app:***@10.0.0.9/grid", "placeholder"),
    ],
)
def test_an_invalid_address_is_named_without_its_password(
    url: str, named: str, problem: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        AmqpSettings(amqp_url=url)
    text = str(caught.value)
    assert named in text
    assert problem in text
    assert "secret" not in text


@pytest.mark.parametrize(
    ("other", "what"),
    [
        ("amqp://bob:pw-x-secret@10.0.0.9/grid", "same user"),
        ("amqp://x:pw-x-secret@10.0.0.9/grid?auth_mechanism=external", "same user"),
        ("amqp://app:pw-x-secret@10.0.0.9/other", "same vhost"),
        ("amqps://app:pw-x-secret@10.0.0.9/grid", "same scheme"),
    ],
)
def test_every_address_is_the_same_identity_on_the_same_grid(other: str, what: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AmqpSettings(amqp_url=f"{A},{other}")
    text = str(caught.value)
    assert what in text
    assert "10.0.0.1:5672" in text
    assert "10.0.0.9:" in text
    assert "secret" not in text


def test_parse_errors_are_value_errors_without_passwords() -> None:
    with pytest.raises(AddressError, match="address 1 of 2") as caught:
        parse_addresses("ftp://u:pw-secret@h/,amqp://u:pw@h/")
    assert "secret" not in str(caught.value)


# -- the order ----------------------------------------------------------------------------


def test_a_process_shuffles_the_order_and_processes_differ() -> None:
    orders = {tuple(NodeOrder(5).order) for _ in range(40)}
    # 40 draws of one of 120 orders all alike: about 1 in 10^81, if seeded from the OS.
    assert len(orders) > 1
    assert all(sorted(o) == [0, 1, 2, 3, 4] for o in orders)


def test_a_round_tries_each_address_once() -> None:
    order = NodeOrder(4, random.Random(7))
    assert sorted(order.round()) == [0, 1, 2, 3]
    assert order.round() == order.order  # nothing lost yet: the same round again


def test_after_a_loss_the_next_round_starts_at_the_next_address() -> None:
    order = NodeOrder(3, random.Random(1))
    first, second, third = order.order
    order.lost(first)
    assert order.round() == [second, third, first]
    order.lost(third)
    assert order.round() == [first, second, third]


def test_one_address_is_always_the_one() -> None:
    order = NodeOrder(1)
    order.lost(0)
    assert order.round() == [0]


# -- BrokerLink's rounds, on stub connections ----------------------------------------------


class Nodes:
    """A stub ``Connect``: each node (host:port) up (a FakeBroker's session), down, or
    refusing us; what was asked, in order, with the link's waits between."""

    def __init__(self, settings: AmqpSettings, states: dict[str, str]) -> None:
        self.settings = settings
        self.states = states
        self.broker = FakeBroker(user="app")
        self.events: list[str] = []

    async def connect(self, settings: AmqpSettings, _name: str) -> FakeSession:
        (address,) = settings.amqp_addresses()  # the link hands one address at a time
        self.events.append(address.node)
        await asyncio.sleep(0)
        state = self.states[address.node]
        if state == "down":
            raise BrokerUnavailable(f"{address.node} is down")
        if state == "refuses":
            raise FatalBrokerError(f"{address.node} refused the credentials")
        return await self.broker.connect(settings, _name)


async def _nothing(_session: FakeSession) -> None:
    return None


def _settings() -> AmqpSettings:
    return AmqpSettings(amqp_url=f"{A},{B},{C}", reconnect_max_s=0.01)


NODES = ["10.0.0.1:5672", "10.0.0.2:5673", "10.0.0.3:5672"]


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The link's backoff waits, recorded (and not slept)."""
    recorded: list[float] = []

    async def no_sleep(stop: asyncio.Event, delay_s: float) -> bool:
        recorded.append(delay_s)
        await asyncio.sleep(0)
        return stop.is_set()

    monkeypatch.setattr("messaging.link.sleep_unless", no_sleep)
    return recorded


async def _run_until(link: BrokerLink[Any], stop: asyncio.Event, done: Any) -> None:
    task = asyncio.create_task(link.run(stop))
    for _ in range(10_000):
        if done() or task.done():
            break
        await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_every_address_is_tried_before_backing_off(waits: list[float]) -> None:
    nodes = Nodes(_settings(), dict.fromkeys(NODES, "down"))
    link = BrokerLink(nodes.settings, "t", _nothing, None, nodes.connect)
    await _run_until(link, asyncio.Event(), lambda: len(waits) >= 3)
    rounds = [nodes.events[i : i + 3] for i in range(0, 9, 3)]
    assert sorted(rounds[0]) == sorted(NODES)
    assert rounds[1] == rounds[0]
    assert rounds[2] == rounds[0]
    assert len(waits) >= 3  # one wait per round, none between the addresses of a round
    assert len(nodes.events) <= 3 * len(waits)
    assert link.node is None
    assert link.connects == 0


async def test_it_connects_to_the_node_that_answers_and_says_which(waits: list[float]) -> None:
    up = NODES[2]
    nodes = Nodes(_settings(), {NODES[0]: "down", NODES[1]: "down", up: "up"})
    link = BrokerLink(nodes.settings, "t", _nothing, None, nodes.connect)
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    await asyncio.wait_for(link.ready.wait(), 5)
    assert link.node == up
    assert waits == []  # the round reached it before any backoff
    assert nodes.events[-1] == up
    stop.set()
    await asyncio.wait_for(task, 5)
    assert link.node is None


async def test_after_a_loss_it_reconnects_to_the_next_node(waits: list[float]) -> None:
    nodes = Nodes(_settings(), dict.fromkeys(NODES, "up"))
    link = BrokerLink(nodes.settings, "t", _nothing, None, nodes.connect)
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    seen: list[str] = []
    for n in range(1, 5):
        for _ in range(1_000):
            if link.connects == n and link.ready.is_set():
                break
            await asyncio.sleep(0)
        assert link.connects == n
        assert link.session is not None
        assert link.node is not None
        seen.append(link.node)
        nodes.broker.drop(link.session)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sorted(seen[:3]) == sorted(NODES)  # a different node after each loss
    assert seen[3] == seen[0]  # and round again
    assert nodes.events == seen  # never a second try: each reconnect worked at once
    assert waits == []


async def test_a_node_refusing_us_is_passed_over(waits: list[float]) -> None:
    states = {NODES[0]: "refuses", NODES[1]: "down", NODES[2]: "down"}
    nodes = Nodes(_settings(), states)
    link = BrokerLink(nodes.settings, "t", _nothing, None, nodes.connect)
    await _run_until(link, asyncio.Event(), lambda: len(waits) >= 2)
    assert len(waits) >= 2  # still retrying: the down nodes may come back


async def test_a_refusal_by_every_node_stops_the_link(waits: list[float]) -> None:
    nodes = Nodes(_settings(), dict.fromkeys(NODES, "refuses"))
    link = BrokerLink(nodes.settings, "t", _nothing, None, nodes.connect)
    with pytest.raises(FatalBrokerError):
        await asyncio.wait_for(link.run(asyncio.Event()), 5)
    assert sorted(nodes.events) == sorted(NODES)  # each asked once
    assert waits == []


async def test_one_refusing_url_stops_the_link_at_once_as_before(waits: list[float]) -> None:
    settings = AmqpSettings(amqp_url=A)
    nodes = Nodes(settings, {NODES[0]: "refuses"})
    link = BrokerLink(settings, "t", _nothing, None, nodes.connect)
    with pytest.raises(FatalBrokerError):
        await asyncio.wait_for(link.run(asyncio.Event()), 5)
    assert nodes.events == [NODES[0]]
    assert waits == []
