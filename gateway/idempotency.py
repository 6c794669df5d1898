"""A client's retry is safe: the same request_id is published at most once while remembered.

The gateway remembers the request ids the broker confirmed recently (bounded, oldest forgotten
first), each with its body's fingerprint. A retry of one of them gets 202 again without a
second publish; a retry that arrives while the first attempt still waits for its confirm shares
that attempt's outcome. The same request_id with another body is a conflict, never published. A
retry the gateway has forgotten (or that reaches another gateway) is published again, and the
dispatcher drops it by the same request id (see README, "Failure behaviour").
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


class Conflict(Exception):
    """The request_id was already used with a different body: a new request, not a retry."""


class RecentRequests:
    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        # The UUID's int -> the request's fingerprint (ChargeRequest.fingerprint()). Ints are
        # not tracked by the garbage collector, 100,000 UUID or request objects are, and every
        # full collection would walk them.
        self._confirmed: OrderedDict[int, int] = OrderedDict()
        self._inflight: dict[int, tuple[asyncio.Future[None], int]] = {}

    def __contains__(self, request_id: UUID) -> bool:
        return request_id.int in self._confirmed

    def confirmed(self, request_id: UUID, fingerprint: int) -> bool:
        """True if ``request_id`` was confirmed with this body (a retry, to answer again).

        Raises Conflict if it was confirmed with another body.
        """
        known = self._confirmed.get(request_id.int)
        if known is None:
            return False
        if known != fingerprint:
            raise Conflict(request_id)
        return True

    async def once(
        self, request_id: UUID, fingerprint: int, publish: Callable[[], Awaitable[None]]
    ) -> bool:
        """Publish unless already confirmed or in flight; True if this call published.

        Raises Conflict if the request confirmed or in flight under ``request_id`` has another
        fingerprint (nothing is published then), else what ``publish`` (or the attempt in
        flight) raised: nothing is remembered then, so the client's next retry publishes again.
        """
        key = request_id.int
        while True:
            if self.confirmed(request_id, fingerprint):
                self._confirmed.move_to_end(key)
                return False
            running = self._inflight.get(key)
            if running is None:
                break
            attempt, known = running
            if known != fingerprint:
                raise Conflict(request_id)
            try:
                await asyncio.shield(attempt)
            except asyncio.CancelledError:
                if not attempt.cancelled():
                    raise  # this request itself was cancelled
                continue  # the first attempt's client went away: try again ourselves
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = (fut, fingerprint)
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
            self._confirmed[key] = fingerprint
            while len(self._confirmed) > self.capacity:
                self._confirmed.popitem(last=False)
        finally:
            del self._inflight[key]
        return True
