"""Broker-side helpers of the flood bench: the real workers (processes, stopped by pid), the
check that no fake id has a queue, and the namespace's cleanup. Every call bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote, unquote, urlsplit

import httpx

from contracts import Topology
from loadgen.broker import delete_namespace
from messaging import AmqpSettings, MessagingError, Session

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
CALL_TIMEOUT_S = 5.0
PROBE_SESSIONS = 4


def process_cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) a process has used so far; None if it cannot be read."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        # After "(comm)": utime and stime are fields 14 and 15 (1-based, man 5 proc).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` on this machine (the broker, for 5672), if it
    can be seen: its socket's inode from /proc/net/tcp*, then whose fd it is."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; inode is column 10.
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def broker_pid(settings: AmqpSettings) -> int | None:
    """The local broker's process (the one listening on the AMQP port), if it can be seen."""
    url = urlsplit(settings.amqp_url.get_secret_value())
    if url.hostname not in {"127.0.0.1", "localhost", "::1"}:
        return None
    return listener_pid(url.port or 5672)


def preemptions(pid: int | str = "self") -> int | None:
    """How often a process's main thread was switched out while it could have run on."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def new_topology() -> Topology:
    return Topology(f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}-flood")


@dataclass(frozen=True)
class Worker:
    id: str
    capacity_kw: float
    bays: int


# The load, the flood's source and the simulated substations stand in for machines elsewhere:
# they run at a lower priority, so that on this 2-core machine the dispatcher competes for a
# core with the broker it talks to, as it would in a deployment, not with the attacker.
STAND_IN_NICE = 10


def pdeathsig(nice: int = STAND_IN_NICE) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when this process dies (no orphans even
    if the bench is killed), and lowering the child's priority by ``nice``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm)
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
        preexec = pdeathsig()
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
    """Delete the namespace: its dead-letter watch (which ``delete_namespace`` does not know),
    then its core and substation queues and its exchanges."""
    try:
        session = await asyncio.wait_for(
            Session.open(settings, "bench-flood-cleanup"), 3 * CALL_TIMEOUT_S
        )
        try:
            await asyncio.wait_for(session.delete_queue(topology.dead_watch_queue), CALL_TIMEOUT_S)
        finally:
            await asyncio.wait_for(session.close(), CALL_TIMEOUT_S)
        await asyncio.wait_for(
            delete_namespace(settings, topology, substation_ids), 60 + CALL_TIMEOUT_S
        )
    except (MessagingError, TimeoutError) as exc:
        log.warning("cleanup of %s incomplete: %s", topology.namespace, exc)
        print(f"cleanup of {topology.namespace} incomplete: {exc}", file=sys.stderr)
