"""``LocalGrid``: the whole grid (gateway, dispatcher, one worker per substation) as subprocesses.

Used by the demo and the integration tests. Every child runs ``python -m <service>`` configured
only through SMARTGRID_* variables, logs to its own file, and is gone after ``stop()``:

* each child leads its own process group (so a terminal's Ctrl-C reaches only loadgen, which
  then stops the children in order) and the whole group is signalled;
* on Linux each child also gets PR_SET_PDEATHSIG, so even a SIGKILLed loadgen leaves no orphan
  (the signal follows the *thread* that started the child: start a grid from a long-lived one);
* ``start()`` cleans up after itself if it fails or is interrupted, and an ``atexit`` hook stops
  any grid still running when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from messaging import AmqpSettings

STOP_GRACE_S = 10.0
HOST = "127.0.0.1"


class GridStartError(Exception):
    """The grid did not come up; the message carries the failing processes' log tails."""


@dataclass(frozen=True)
class SubstationSpec:
    id: str
    capacity_kw: float
    bays: int


SubstationLike = SubstationSpec | tuple[str, float, int]


@dataclass
class GridProcess:
    name: str
    module: str
    env: dict[str, str]
    log_path: Path
    metrics_url: str
    # The readiness check: returns None when ready, else what is still missing.
    check: Callable[[httpx.Client], str | None]
    popen: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def free_ports(n: int, host: str = HOST) -> list[int]:
    """``n`` distinct free TCP ports (all sockets held open until every port is picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
        return ports


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one sample in Prometheus text format, or None if absent (or unreadable)."""
    want = labels or {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == want:
                    return float(sample.value)
    except ValueError:  # not Prometheus text (an error page, a cut-off answer)
        return None
    return None


def _metrics_check(
    url: str, name: str, expect: float, labels: dict[str, str] | None = None
) -> Callable[[httpx.Client], str | None]:
    def check(client: httpx.Client) -> str | None:
        value = metric_value(client.get(url).text, name, labels)
        if value == expect:
            return None
        series = name + (f"{labels}" if labels else "")
        return f"{series} is {value} (waiting for {expect:g})"

    return check


def _both(
    first: Callable[[httpx.Client], str | None],
    second: Callable[[httpx.Client], str | None],
    client: httpx.Client,
) -> str | None:
    return first(client) or second(client)


def _http_ok_check(url: str) -> Callable[[httpx.Client], str | None]:
    def check(client: httpx.Client) -> str | None:
        r = client.get(url)
        return None if r.status_code == 200 else f"GET {url} -> {r.status_code}"

    return check


def pdeathsig() -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to SIGTERM the child when its parent thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:  # runs in the child between fork and exec: keep it tiny
        prctl(pr_set_pdeathsig, sigterm)

    return preexec


_RUNNING: weakref.WeakSet[LocalGrid] = weakref.WeakSet()


@atexit.register
def _stop_leftover_grids() -> None:
    for grid in list(_RUNNING):
        grid.stop()


class LocalGrid:
    """Start the grid, wait until it is ready, stop it completely. A context manager."""

    def __init__(
        self,
        substations: Iterable[SubstationLike],
        *,
        settings: AmqpSettings,
        namespace: str | None = None,
        policy: str = "headroom",
        time_scale: float = 60.0,
        heartbeat_interval_s: float = 1.0,
        log_dir: Path | None = None,
        startup_timeout_s: float = 60.0,
        log_level: str | None = None,
        python: str = sys.executable,
        dispatchers: int = 1,
        extra_env: Mapping[str, str] | None = None,
        process_env: Mapping[str, Mapping[str, str]] | None = None,
        targets_dir: Path | None = None,
    ) -> None:
        """``dispatchers`` > 1 starts standbys ("dispatcher-2", ...) on the same requests queue;
        ``extra_env`` goes to every process, ``process_env[name]`` to one. With ``targets_dir``,
        the processes' /metrics addresses are written there for Prometheus (file_sd, see
        loadgen.local_prometheus) while the grid runs."""
        self.substations = [
            s if isinstance(s, SubstationSpec) else SubstationSpec(*s) for s in substations
        ]
        if not self.substations:
            raise ValueError("a grid needs at least one substation")
        ids = [s.id for s in self.substations]
        if len(set(ids)) != len(ids):
            raise ValueError(f"substation ids must be unique: {ids}")
        self.settings = settings
        self.namespace = namespace or settings.namespace
        self.policy = policy
        self.time_scale = time_scale
        self.heartbeat_interval_s = heartbeat_interval_s
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"smartgrid-{self.namespace}-"))
        self.startup_timeout_s = startup_timeout_s
        self.log_level = log_level or settings.log_level
        self.python = python
        if dispatchers < 1:
            raise ValueError("a grid needs at least one dispatcher")
        self.dispatchers = dispatchers
        self.extra_env = dict(extra_env or {})
        self.process_env = {k: dict(v) for k, v in (process_env or {}).items()}
        self.targets_dir = targets_dir
        self.processes: list[GridProcess] = []
        self.gateway_url = ""

    # -- wiring ----------------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SMARTGRID_AMQP_URL=self.settings.amqp_url.get_secret_value(),
            SMARTGRID_NAMESPACE=self.namespace,
            SMARTGRID_LOG_LEVEL=self.log_level,
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def _plan(self) -> list[GridProcess]:
        gw_port, *ports = free_ports(1 + self.dispatchers + len(self.substations))
        disp_ports, worker_ports = ports[: self.dispatchers], ports[self.dispatchers :]
        self.gateway_url = f"http://{HOST}:{gw_port}"
        base = self._base_env()
        procs = [
            GridProcess(
                "gateway",
                "gateway",
                {**base, "SMARTGRID_HTTP_HOST": HOST, "SMARTGRID_HTTP_PORT": str(gw_port)},
                self.log_dir / "gateway.log",
                f"{self.gateway_url}/metrics",
                _http_ok_check(f"{self.gateway_url}/healthz"),
            ),
        ]
        for i, disp_port in enumerate(disp_ports, start=1):
            name = "dispatcher" if i == 1 else f"dispatcher-{i}"
            disp_metrics = f"http://{HOST}:{disp_port}/metrics"
            eligible = _metrics_check(
                disp_metrics,
                "smartgrid_dispatcher_substations",
                float(len(self.substations)),
                {"state": "eligible"},
            )
            connected = _metrics_check(disp_metrics, "smartgrid_dispatcher_broker_connected", 1.0)
            procs.append(
                GridProcess(
                    name,
                    "dispatcher",
                    {
                        **base,
                        "SMARTGRID_POLICY": self.policy,
                        "SMARTGRID_METRICS_HOST": HOST,
                        "SMARTGRID_METRICS_PORT": str(disp_port),
                    },
                    self.log_dir / f"{name}.log",
                    disp_metrics,
                    # Connected, and it has heard every substation: requests sent now are spread.
                    functools.partial(_both, connected, eligible),
                )
            )
        for spec, port in zip(self.substations, worker_ports, strict=True):
            url = f"http://{HOST}:{port}/metrics"
            procs.append(
                GridProcess(
                    f"worker-{spec.id}",
                    "substation_worker",
                    {
                        **base,
                        "SMARTGRID_SUBSTATION_ID": spec.id,
                        "SMARTGRID_CAPACITY_KW": f"{spec.capacity_kw:g}",
                        "SMARTGRID_BAYS": str(spec.bays),
                        "SMARTGRID_TIME_SCALE": f"{self.time_scale:g}",
                        "SMARTGRID_HEARTBEAT_INTERVAL_S": f"{self.heartbeat_interval_s:g}",
                        "SMARTGRID_METRICS_HOST": HOST,
                        "SMARTGRID_METRICS_PORT": str(port),
                    },
                    self.log_dir / f"worker-{spec.id}.log",
                    url,
                    _metrics_check(
                        url, "smartgrid_substation_broker_connected", 1.0, {"substation": spec.id}
                    ),
                )
            )
        for proc in procs:
            proc.env.update(self.process_env.get(proc.name, {}))
        return procs

    # -- public ----------------------------------------------------------------------------

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Process name ("gateway", "dispatcher", "worker-<id>") -> its /metrics URL."""
        return {p.name: p.metrics_url for p in self.processes}

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def start(self) -> LocalGrid:
        """Start every process and wait until all are ready; on any failure stop them all."""
        if self.processes:
            raise RuntimeError("grid already started")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes = self._plan()
        _RUNNING.add(self)
        try:
            for p in self.processes:
                self._launch(p)
            self._wait_ready()
            self._write_targets(running=True)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        pending = {p.name: "starting" for p in self.processes}
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for p in self.processes:
                    if p.name not in pending:
                        continue
                    if not p.alive():
                        code = p.popen.returncode if p.popen else None
                        raise GridStartError(
                            f"{p.name} exited with code {code} while starting; "
                            f"last lines of {p.log_path}:\n{p.log_tail()}"
                        )
                    try:
                        missing = p.check(client)
                    except httpx.HTTPError as exc:
                        missing = f"{p.metrics_url} not answering ({type(exc).__name__})"
                    if missing is None:
                        del pending[p.name]
                    else:
                        pending[p.name] = missing
                if not pending:
                    return
                if time.monotonic() > deadline:
                    details = "\n".join(
                        f"--- {p.name}: {pending[p.name]}; last lines of {p.log_path}:\n"
                        f"{p.log_tail()}"
                        for p in self.processes
                        if p.name in pending
                    )
                    raise GridStartError(
                        f"grid not ready within {self.startup_timeout_s:.0f}s:\n{details}"
                    )
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM every process group, wait up to 10 s, SIGKILL what is left. Idempotent."""
        try:
            self._signal_all(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for p in self.processes:
                if p.popen is None:
                    continue
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            # Also reached on a second Ctrl-C during the grace period: no survivors.
            self._signal_all(signal.SIGKILL)
            for p in self.processes:
                if p.popen is not None:
                    p.popen.wait()
                if p.log_file is not None:
                    p.log_file.close()
                    p.log_file = None
            _RUNNING.discard(self)
            # Gone targets would read as substations down.
            self._write_targets(running=False)

    def prometheus_targets(self) -> dict[str, list[tuple[str, str]]]:
        """Prometheus job -> [(host:port, process name)] of the running processes."""
        jobs: dict[str, list[tuple[str, str]]] = {}
        for p in self.processes:
            job = "substation" if p.module == "substation_worker" else p.module
            jobs.setdefault(job, []).append((urlsplit(p.metrics_url).netloc, p.name))
        return jobs

    def _write_targets(self, *, running: bool) -> None:
        if self.targets_dir is None:
            return
        from loadgen.local_prometheus import write_targets

        write_targets(
            self.targets_dir, self.namespace, self.prometheus_targets() if running else {}
        )

    def restart(self, name: str) -> None:
        """Start one process again (e.g. "worker-s150") once its last run has exited (reaped:
        the caller killed it), with the same environment, port and log; ``stop`` stops it."""
        (p,) = [p for p in self.processes if p.name == name]
        if p.popen is not None:
            if p.popen.poll() is None:
                raise RuntimeError(f"{name} is still running")
            p.popen.wait()
        self._launch(p)

    def _launch(self, p: GridProcess) -> None:
        if p.log_file is None:
            p.log_file = p.log_path.open("ab")
        p.popen = subprocess.Popen(
            [self.python, "-m", p.module],
            env=p.env,
            stdin=subprocess.DEVNULL,
            stdout=p.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pdeathsig(),  # only a prctl call, see pdeathsig
        )

    def send_signal(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to one process (e.g. "worker-s150") and its group; it is not restarted."""
        (p,) = [p for p in self.processes if p.name == name]
        if p.popen is not None and p.popen.poll() is None:
            os.killpg(p.popen.pid, sig)

    def _signal_all(self, sig: signal.Signals) -> None:
        for p in self.processes:
            # Only while the leader lives: once reaped, its pid (= the group id, thanks to
            # start_new_session) may belong to someone else.
            if p.popen is None or p.popen.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.popen.pid, sig)

    def __enter__(self) -> LocalGrid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
