"""Send charge requests to the gateway's HTTP API with bounded concurrency (and optional pacing).

Request ids are fresh UUIDs every run, even with a seed: a rerun against the same grid must
not be taken for retries of the previous run (the gateway and workers dedupe by request_id).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

import httpx

from loadgen.demand import Demand

CHARGE_REQUESTS_PATH = "/v1/charge-requests"

# Called with (request_id, outcome): the HTTP status as text, or the transport error's name.
OnResult = Callable[[UUID, str], None]


@dataclass
class BurstResult:
    requested: int
    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    accepted: list[UUID] = field(default_factory=list)
    elapsed_s: float = 0.0
    timed_out: bool = False

    @property
    def not_accepted(self) -> int:
        """Answered with something other than 202 (or a transport error)."""
        return sum(n for outcome, n in self.outcomes.items() if outcome != "202")


async def burst(
    gateway_url: str,
    demands: Sequence[Demand],
    *,
    concurrency: int = 32,
    rate_per_s: float | None = None,
    request_timeout_s: float = 10.0,
    deadline_s: float = 300.0,
    on_sent: Callable[[], None] | None = None,
    on_result: OnResult | None = None,
) -> BurstResult:
    """POST one ChargeRequest per demand; at most ``concurrency`` in flight, all within
    ``deadline_s``. With ``rate_per_s``, request i leaves no earlier than i/rate after start."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    result = BurstResult(requested=len(demands))
    url = gateway_url.rstrip("/") + CHARGE_REQUESTS_PATH
    queue = iter(enumerate(demands))
    start = time.monotonic()

    async def worker(client: httpx.AsyncClient) -> None:
        for i, demand in queue:  # one shared iterator: each demand is sent once
            if rate_per_s:
                delay = start + i / rate_per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            request_id = uuid.uuid4()
            result.sent += 1
            if on_sent is not None:
                on_sent()
            try:
                response = await client.post(url, json=demand.request_body(request_id))
                outcome = str(response.status_code)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            if outcome == "202":
                result.accepted.append(request_id)
            result.outcomes[outcome] += 1
            if on_result is not None:
                on_result(request_id, outcome)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=request_timeout_s) as client:
        try:
            async with asyncio.timeout(deadline_s):
                async with asyncio.TaskGroup() as tg:
                    for _ in range(min(concurrency, len(demands))):
                        tg.create_task(worker(client))
        except TimeoutError:
            result.timed_out = True
    result.elapsed_s = time.monotonic() - start
    return result
