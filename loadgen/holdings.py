"""Read what the grid holds at the places a run's unfinished requests wait (``Holdings``).

* ``<ns>.requests``: its messages, ready and unacked, from RabbitMQ's management API. A
  dispatcher holds requests it cannot place yet unacked (up to its prefetch), and AMQP's
  passive declare counts only ready ones; when the management API does not answer, that is
  the fallback, said so in ``requests_counted_by``. The API's figures are refreshed every
  few seconds (the broker's ``collect_statistics_interval``, 5 s by default), and a queue
  declared within that interval has none yet: they are waited for up to ``FIGURES_WAIT_S``.
* a substation with a fresh heartbeat: that heartbeat's ``queued`` (its queue's depth plus the
  cars waiting for a bay) and ``active_sessions``;
* a substation that went stale or was never heard: the depth of its queue (what a dead worker
  left there), from the management API or a passive declare.

Every call is bounded by ``timeout_s``; after the first broker call that fails, the rest are not
tried (a broker that stopped answering must not hold the report for a minute), and what was not
read is listed in ``Holdings.unread``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import quote, unquote, urlsplit

import httpx

from contracts import Topology
from loadgen.bounded import within
from loadgen.state import GridState, Place
from loadgen.unfinished import Holdings, SubstationHolds
from messaging import AmqpSettings, MessagingError, Session

log = logging.getLogger(__name__)

MANAGEMENT_URL_VARIABLE = "SMARTGRID_MANAGEMENT_URL"
# Stale substations whose queue is probed at most; more are listed as unread.
MAX_PROBES = 100
# The management API has figures for a queue once per statistics interval (5 s by default)
# after it was declared: how long to wait for those of <ns>.requests, and how often to ask.
FIGURES_WAIT_S = 6.0
FIGURES_RETRY_S = 0.5


def management_url(settings: AmqpSettings, override: str | None = None) -> str:
    """Where the management API answers: ``override``, else SMARTGRID_MANAGEMENT_URL (as for
    the tests and bench.flood), else the broker's host on 15672 (15671, https, for amqps://)."""
    given = override or os.environ.get(MANAGEMENT_URL_VARIABLE)
    if given:
        return given.rstrip("/")
    # The first broker address: of a cluster, any node's management API shows the same.
    url = urlsplit(settings.amqp_addresses()[0].secret_url)
    host = url.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:15671" if url.scheme == "amqps" else f"http://{host}:15672"


def _vhost(settings: AmqpSettings) -> str:
    return settings.amqp_vhost()


class _Counter:
    """Queue depths, by the management API while it answers, else by passive declares."""

    def __init__(
        self,
        settings: AmqpSettings,
        session: Session | None,
        base_url: str,
        timeout_s: float,
    ) -> None:
        url = urlsplit(settings.amqp_addresses()[0].secret_url)
        self._auth = (unquote(url.username or "guest"), unquote(url.password or "guest"))
        self._base = base_url
        self._vhost = quote(_vhost(settings), safe="")
        self._session = session
        self._timeout = timeout_s
        self.api_failed: str | None = None
        self.broker_failed: str | None = None
        self.no_figures: set[str] = set()

    async def from_api(
        self, client: httpx.AsyncClient, queue: str, *, wait_s: float = 0.0
    ) -> int | None:
        """The queue's messages, ready and unacked; for a queue the broker has no figures for
        yet (declared within its statistics interval), asked again for up to ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            count = await self._api_once(client, queue)
            if count is not None or queue not in self.no_figures:
                return count
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(FIGURES_RETRY_S)

    async def _api_once(self, client: httpx.AsyncClient, queue: str) -> int | None:
        if self.api_failed is not None:
            return None
        try:
            # No ?columns=: for a queue without figures yet the API answers [] to it.
            r = await client.get(
                f"{self._base}/api/queues/{self._vhost}/{quote(queue, safe='')}",
                auth=self._auth,
                timeout=self._timeout,
            )
            if r.status_code == 404:
                return 0  # no such queue: it holds nothing
            r.raise_for_status()
            doc = r.json()
            if not isinstance(doc, dict):
                raise ValueError(f"{r.url} answered {type(doc).__name__}, not a queue")
        except (httpx.HTTPError, ValueError) as exc:
            self.api_failed = f"the management API at {self._base} did not answer ({exc})"
            log.info("%s", self.api_failed)
            return None
        messages = doc.get("messages")
        if not isinstance(messages, int):
            self.no_figures.add(queue)  # a queue just declared: the broker has not counted yet
            return None
        self.no_figures.discard(queue)
        return messages

    async def ready(self, queue: str) -> int | None:
        """Ready messages by a passive declare (0 for a queue that does not exist)."""
        if self.broker_failed is not None:
            return None
        if self._session is None or not self._session.is_open:
            self.broker_failed = "not connected to the broker"
            return None
        try:
            depth = await within(self._session.queue_exists(queue), self._timeout, "probe")
        except MessagingError as exc:
            self.broker_failed = f"the broker did not answer ({exc})"
            return None
        return depth or 0


async def read_holdings(
    settings: AmqpSettings,
    topology: Topology,
    state: GridState,
    session: Session | None,
    places: Iterable[Place],
    now: datetime,
    *,
    timeout_s: float,
    management: str | None = None,
) -> Holdings:
    """The grid's counts at ``places`` (see the module docstring)."""
    wanted = set(places)
    counter = _Counter(settings, session, management_url(settings, management), timeout_s)
    unread: list[str] = []
    requests: int | None = None
    counted_by = "management API"
    async with httpx.AsyncClient() as client:
        if any(p.substation_id is None for p in wanted):
            requests = await counter.from_api(
                client, topology.requests_queue, wait_s=FIGURES_WAIT_S
            )
            if requests is None:
                requests = await counter.ready(topology.requests_queue)
                why = counter.api_failed or "the management API has no figures for it yet"
                counted_by = f"ready only: {why}, so what a dispatcher holds unacked is not counted"
            if requests is None:
                unread.append(f"{topology.requests_queue}: {counter.broker_failed}")
        stations: dict[str, SubstationHolds] = {}
        probes = 0
        for sid in sorted({p.substation_id for p in wanted if p.substation_id is not None}):
            view = state.substations.get(sid)
            if view is not None and view.status(now) != "stale":
                hb = view.heartbeat
                stations[sid] = SubstationHolds(hb.queued, hb.active_sessions)
                continue
            queue = topology.substation_queue(sid)
            depth: int | None = None
            if probes < MAX_PROBES:
                probes += 1
                depth = await counter.from_api(client, queue)
                if depth is None:
                    depth = await counter.ready(queue)
            if depth is None:
                why = counter.broker_failed or f"more than {MAX_PROBES} silent substations"
                unread.append(f"{queue}: {why}")
                stations[sid] = SubstationHolds(0, 0, "unread")
            else:
                stations[sid] = SubstationHolds(depth, 0, "queue")
    return Holdings(requests, topology.requests_queue, counted_by, stations, tuple(unread))
