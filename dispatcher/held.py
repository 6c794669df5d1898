"""The requests a dispatcher holds, oldest first, and how many of them have a departure.

A request the policy holds waits at the head, and everything without a departure waits behind
it, in arrival order (so that no car jumps the queue). A request with a departure is never held
for power (``dispatcher.deadlines``), so it must not wait behind one that is: the pump goes on
past a held head only while requests with a departure are held, which this count tells at no
cost (a scan of a long queue per pump would cost the dispatcher its throughput under a flood).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar

from contracts import ChargeRequest


class HasRequest(Protocol):
    @property
    def request(self) -> ChargeRequest: ...


H = TypeVar("H", bound=HasRequest)


class HeldQueue(Generic[H]):
    """A deque of held requests that counts those with a departure (``dated``)."""

    def __init__(self) -> None:
        self._items: deque[H] = deque()
        self.dated = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[H]:
        return iter(self._items)

    def __getitem__(self, index: int) -> H:
        return self._items[index]

    def append(self, item: H) -> None:
        self._items.append(item)
        self.dated += item.request.departure is not None

    def appendleft(self, item: H) -> None:
        self._items.appendleft(item)
        self.dated += item.request.departure is not None

    def extendleft(self, items: Iterable[H]) -> None:
        for item in items:
            self.appendleft(item)

    def popleft(self) -> H:
        item = self._items.popleft()
        self.dated -= item.request.departure is not None
        return item

    def clear(self) -> None:
        self._items.clear()
        self.dated = 0
