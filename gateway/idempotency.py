"""A client's retry is safe: the same request_id is published at most once while remembered.

The gateway remembers the request ids the broker confirmed recently (bounded, oldest forgotten
first). A retry of one of them gets 202 again without a second publish; a retry that arrives
while the first attempt still waits for its confirm shares that attempt's outcome. A retry the
gateway has forgotten (or that reaches another gateway) is published again, and the dispatcher
drops it by the same request id (see README, "Failure behaviour").
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from uuid import UUID

# Keys that are not UUIDs map to one deterministically, so any opaque Idempotency-Key works.
IDEMPOTENCY_NAMESPACE = uuid.UUID("5d1c1e5a-8f39-4f5e-9d0b-9a7c2b1f4e11")


def request_id_for_key(key: str) -> UUID:
    """The request id an ``Idempotency-Key`` header stands for."""
    try:
        return UUID(key)
    except ValueError:
        return uuid.uuid5(IDEMPOTENCY_NAMESPACE, key)


class RecentRequests:
    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        # Keyed by the UUID's int: ints are not tracked by the garbage collector, 100,000 UUID
        # objects are, and every full collection would walk them.
        self._confirmed: OrderedDict[int, None] = OrderedDict()
        self._inflight: dict[UUID, asyncio.Future[None]] = {}

    def __contains__(self, request_id: UUID) -> bool:
        return request_id.int in self._confirmed

    async def once(self, request_id: UUID, publish: Callable[[], Awaitable[None]]) -> bool:
        """Publish unless already confirmed or in flight; True if this call published.

        Raises what ``publish`` (or the attempt in flight) raised: nothing is remembered then,
        so the client's next retry publishes again.
        """
        while True:
            if request_id.int in self._confirmed:
                self._confirmed.move_to_end(request_id.int)
                return False
            running = self._inflight.get(request_id)
            if running is None:
                break
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError:
                if not running.cancelled():
                    raise  # this request itself was cancelled
                continue  # the first attempt's client went away: try again ourselves
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[request_id] = fut
        try:
            await publish()
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: with no other waiter it would be logged as lost
            raise
        else:
            fut.set_result(None)
            self._confirmed[request_id.int] = None
            while len(self._confirmed) > self.capacity:
                self._confirmed.popitem(last=False)
        finally:
            del self._inflight[request_id]
        return True
