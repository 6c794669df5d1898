"""Every broker call loadgen makes is bounded in time.

A broker that stops answering (overloaded, blocked, a connection half gone) must never hold
loadgen: a call that does not answer in time fails like a lost connection (BrokerUnavailable),
which the reconnect loop and the callers already handle; cleanup that cannot finish is given up
with one line in the log (loadgen's follower queues expire by themselves: ``x-expires``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from messaging import BrokerUnavailable, MessagingError

log = logging.getLogger(__name__)

T = TypeVar("T")

# One declare, bind, consume, delete or close: milliseconds on a healthy broker.
BROKER_TIMEOUT_S = 5.0


async def within(call: Awaitable[T], seconds: float, what: str) -> T:
    """``await call``, or BrokerUnavailable once ``seconds`` have passed without an answer."""
    try:
        return await asyncio.wait_for(call, seconds)
    except TimeoutError:
        raise BrokerUnavailable(f"{what}: no answer from the broker in {seconds:g}s") from None


async def attempt(call: Awaitable[object], seconds: float, what: str) -> bool:
    """Cleanup: ``within``, but a failure is one line in the log, not an error."""
    try:
        await within(call, seconds, what)
    except MessagingError as exc:
        log.warning("gave up %s: %s", what, exc)
        return False
    return True
