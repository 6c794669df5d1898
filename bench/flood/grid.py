"""Broker-side helpers of the flood bench: the real workers (processes, stopped by pid), the
check that no fake id has a queue, and the namespace's cleanup. Every call bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote, unquote, urlsplit

import httpx

from bench.procfs import listener_pid
from contracts import Topology
from loadgen.broker import delete_namespace
from loadgen.grid import pdeathsig
from messaging import AmqpSettings, MessagingError, Session

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
CALL_TIMEOUT_S = 5.0
PROBE_SESSIONS = 4


def broker_pid(settings: AmqpSettings) -> int | None:
    """The local broker's process (the one listening on the AMQP port), if it can be seen."""
    url = urlsplit(settings.amqp_url.get_secret_value())
    if url.hostname not in {"127.0.0.1", "localhost", "::1"}:
        return None
    return listener_pid(url.port or 5672)


@dataclass(frozen=True)
class Worker:
    id: str
    capacity_kw: float
    bays: int


# The load, the flood's source and the simulated substations stand in for machines elsewhere:
# they run at a lower priority, so that on this 2-core machine the dispatcher competes for a
# core with the broker it talks to, as it would in a deployment, not with the attacker.
STAND_IN_NICE = 10


def stand_in(nice: int = STAND_IN_NICE) -> Callable[[], None]:
    """A preexec_fn for a stand-in: SIGTERM when this process dies (loadgen.grid's), so no
    orphans even if the bench is killed, and ``nice`` lower a priority."""
    dies_with_parent = pdeathsig()

    def preexec() -> None:  # runs in the child between fork and exec: keep it tiny
        if dies_with_parent is not None:
            dies_with_parent()
        os.nice(nice)

    return preexec


class Workers:
    """``python -m substation_worker`` per substation, each logging to its own file."""

    def __init__(
        self,
        settings: AmqpSettings,
        topology: Topology,
        specs: Sequence[Worker],
        *,
        time_scale: float,
        heartbeat_s: float,
        log_dir: Path,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.specs = list(specs)
        self.time_scale = time_scale
        self.heartbeat_s = heartbeat_s
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def start(self) -> None:
        preexec = stand_in()
        for spec in self.specs:
            env = {
                **os.environ,
                "SMARTGRID_AMQP_URL": self.settings.amqp_url.get_secret_value(),
                "SMARTGRID_NAMESPACE": self.topology.namespace,
                "SMARTGRID_SUBSTATION_ID": spec.id,
                "SMARTGRID_CAPACITY_KW": f"{spec.capacity_kw:g}",
                "SMARTGRID_BAYS": str(spec.bays),
                "SMARTGRID_TIME_SCALE": f"{self.time_scale:g}",
                "SMARTGRID_HEARTBEAT_INTERVAL_S": f"{self.heartbeat_s:g}",
                "SMARTGRID_METRICS_PORT": "0",
                "SMARTGRID_DRAIN_TIMEOUT_S": "2",
                "PYTHONUNBUFFERED": "1",
            }
            out = (self.log_dir / f"worker-{spec.id}.log").open("ab")
            self._logs.append(out)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "substation_worker"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=preexec,  # only a prctl call
                )
            )

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def dead(self) -> list[str]:
        return [s.id for s, p in zip(self.specs, self.procs, strict=False) if p.poll() is not None]

    def log_tail(self, sid: str, lines: int = 15) -> str:
        try:
            text = (self.log_dir / f"worker-{sid}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM each worker by its pid, wait, SIGKILL what is left. Idempotent."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for out in self._logs:
            out.close()
        self._logs.clear()


async def queues_that_exist(
    settings: AmqpSettings, topology: Topology, ids: Sequence[str]
) -> list[str]:
    """The ids of ``ids`` whose queue ``<ns>.substation.<id>`` exists: passive declares (they
    create nothing), spread over a few connections. Raises MessagingError if one fails."""
    sessions = [
        await asyncio.wait_for(Session.open(settings, f"bench-flood-probe-{i}"), 3 * CALL_TIMEOUT_S)
        for i in range(PROBE_SESSIONS)
    ]
    found: list[str] = []

    async def probe(session: Session, share: Sequence[str]) -> None:
        for sid in share:
            depth = await asyncio.wait_for(
                session.queue_exists(topology.substation_queue(sid)), CALL_TIMEOUT_S
            )
            if depth is not None:
                found.append(sid)

    try:
        await asyncio.gather(*(probe(s, ids[i :: len(sessions)]) for i, s in enumerate(sessions)))
    finally:
        for s in sessions:
            with contextlib.suppress(MessagingError, TimeoutError):
                await asyncio.wait_for(s.close(), CALL_TIMEOUT_S)
    return sorted(found)


def management_base(settings: AmqpSettings) -> tuple[str, str, tuple[str, str]] | None:
    """(API base URL, vhost, credentials) of the management API beside a loopback broker."""
    url = urlsplit(settings.amqp_url.get_secret_value())
    base = os.environ.get("SMARTGRID_MANAGEMENT_URL") or f"http://{url.hostname}:15672"
    host = urlsplit(base).hostname
    if host not in {"127.0.0.1", "localhost", "::1"}:
        return None  # this bench talks to loopback only
    vhost = unquote(url.path[1:]) if len(url.path) > 1 else "/"
    return base.rstrip("/") + "/api", vhost, (url.username or "guest", url.password or "guest")


def management_view(settings: AmqpSettings, topology: Topology) -> dict[str, object] | None:
    """The broker's version and the namespace's queue names, from the management API (None if
    it does not answer)."""
    where = management_base(settings)
    if where is None:
        return None
    base, vhost, auth = where
    try:
        with httpx.Client(base_url=base, auth=auth, timeout=CALL_TIMEOUT_S) as client:
            overview = client.get("/overview")
            overview.raise_for_status()
            queues = client.get(f"/queues/{quote(vhost, safe='')}", params={"columns": "name"})
            queues.raise_for_status()
    except httpx.HTTPError as exc:
        log.info("management API not used: %s", exc)
        return None
    prefix = topology.namespace + "."
    names = sorted(q["name"] for q in queues.json() if q["name"].startswith(prefix))
    return {"rabbitmq_version": overview.json().get("rabbitmq_version"), "queues": names}


async def cleanup(
    settings: AmqpSettings, topology: Topology, substation_ids: Sequence[str]
) -> None:
    """Delete the namespace: its core, dead-letter watch and substation queues, its exchanges."""
    try:
        await asyncio.wait_for(
            delete_namespace(settings, topology, substation_ids), 60 + CALL_TIMEOUT_S
        )
    except (MessagingError, TimeoutError) as exc:
        log.warning("cleanup of %s incomplete: %s", topology.namespace, exc)
        print(f"cleanup of {topology.namespace} incomplete: {exc}", file=sys.stderr)
