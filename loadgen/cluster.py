"""A RabbitMQ cluster of 1 to 5 nodes on this machine, for tests and for trying smartgrid on one.

``up`` starts Debian's ``rabbitmq-server`` once per node, each under its own node name
(``sgc<tag>-<i>@localhost``), AMQP, distribution, management and Prometheus ports (all on
127.0.0.1) and its own data, log and config files in one folder, with rabbitmq_management and
rabbitmq_prometheus enabled; then joins nodes 2..n to node 1 (``stop_app``, ``join_cluster``,
``start_app``) and waits until node 1 sees every node running. Its state (node names, ports,
pids) is a JSON file in that folder, so ``down`` works from another process: it stops the nodes
it recorded (by node name, then by their recorded pid) and removes what ``up`` created.

The planning (names, ports, config files, environment, the state file) is pure and separate
from the driving (subprocesses, waits). Every wait is bounded. The machine's own broker
(``rabbit@<host>``, ports 5672/15672/25672) is never touched: these nodes have other names and
ports, read no file of /etc/rabbitmq, and are never joined to it.

The nodes run as the user the Debian scripts pick: as root (CI) or rabbitmq, the ``/usr/sbin``
wrappers run them as the rabbitmq user, whose ``~/.erlang.cookie`` every node and CLI call then
shares; as any other user the scripts in /usr/lib/rabbitmq/bin run them as that user, with that
user's cookie.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

MIN_NODES, MAX_NODES = 1, 5
PLUGINS = ("rabbitmq_management", "rabbitmq_prometheus")
STATE_FILE = "cluster.json"
STATE_TMP = "cluster.json.tmp"
CONSOLE_LOG = "console.log"
HOST = "127.0.0.1"
# Bounds of every wait, per node: a node boots in ~6 s here, a join (stop_app, join_cluster,
# start_app) takes ~7 s; a CLI call that hangs longer than CTL_TIMEOUT_S is a broken node.
START_TIMEOUT_S = 60.0
JOIN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
KILL_TIMEOUT_S = 10.0
CTL_TIMEOUT_S = 60.0
POLL_S = 0.2
LOG_TAIL_CHARS = 3000
# With --base-port B, node i (1-based) takes B+i-1, B+10+i-1, B+20+i-1 and B+30+i-1.
PORT_STRIDE = 10

SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")
RABBITMQ_USER = "rabbitmq"


class ClusterError(Exception):
    """The cluster could not be started or stopped; the message says why (with log tails)."""


# -- planning: pure ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    amqp: int
    dist: int
    management: int
    prometheus: int

    def all(self) -> tuple[int, ...]:
        return (self.amqp, self.dist, self.management, self.prometheus)


@dataclass(frozen=True)
class NodeSpec:
    """One node: its name, ports and the folder that holds its config, data and log."""

    index: int
    name: str
    ports: Ports
    dir: Path

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.ports.amqp}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://{HOST}:{self.ports.management}/"

    @property
    def prometheus_url(self) -> str:
        return f"http://{HOST}:{self.ports.prometheus}/metrics"

    @property
    def config_file(self) -> Path:
        return self.dir / "rabbitmq.conf"

    @property
    def plugins_file(self) -> Path:
        return self.dir / "enabled_plugins"

    @property
    def env_file(self) -> Path:
        return self.dir / "rabbitmq-env.conf"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    @property
    def log_dir(self) -> Path:
        return self.dir / "log"


def check_node_count(nodes: int) -> None:
    if not MIN_NODES <= nodes <= MAX_NODES:
        raise ValueError(f"a local cluster has {MIN_NODES} to {MAX_NODES} nodes, not {nodes}")


def ports_from_base(base: int, nodes: int) -> list[Ports]:
    """Fixed ports: node i's AMQP at base+i-1, management +10, Prometheus +20, distribution +30."""
    check_node_count(nodes)
    top = base + 3 * PORT_STRIDE + nodes - 1
    if base < 1024 or top > 65535:
        raise ValueError(f"--base-port {base} puts ports outside 1024..65535 (up to {top})")
    return [
        Ports(
            amqp=base + i,
            management=base + PORT_STRIDE + i,
            prometheus=base + 2 * PORT_STRIDE + i,
            dist=base + 3 * PORT_STRIDE + i,
        )
        for i in range(nodes)
    ]


def free_ports(nodes: int, take: Callable[[], int]) -> list[Ports]:
    """Ports from ``take`` (a free port each call), four per node, all distinct."""
    check_node_count(nodes)
    seen: set[int] = set()
    chosen: list[int] = []
    for _ in range(4 * nodes * 10):  # bounded: ``take`` may repeat itself
        port = take()
        if port not in seen:
            seen.add(port)
            chosen.append(port)
        if len(chosen) == 4 * nodes:
            break
    else:
        raise ValueError("could not find enough distinct free ports")
    return [Ports(*chosen[4 * i : 4 * i + 4]) for i in range(nodes)]


def plan(nodes: int, base_dir: Path, ports: Sequence[Ports], tag: str) -> list[NodeSpec]:
    """The nodes of one cluster: names unique to ``tag``, one folder each under ``base_dir``."""
    check_node_count(nodes)
    if len(ports) != nodes:
        raise ValueError(f"{nodes} nodes need {nodes} port sets, got {len(ports)}")
    taken = [p for ps in ports for p in ps.all()]
    if len(set(taken)) != len(taken):
        raise ValueError(f"ports repeat: {taken}")
    return [
        NodeSpec(i + 1, f"sgc{tag}-{i + 1}@localhost", ports[i], base_dir / f"node{i + 1}")
        for i in range(nodes)
    ]


def node_config(spec: NodeSpec, cluster_name: str) -> str:
    """rabbitmq.conf: every listener on 127.0.0.1 at the node's own port. Replicas are placed
    when a quorum queue is declared (x-quorum-initial-group-size), so nothing here sets them."""
    p = spec.ports
    lines = [
        f"listeners.tcp.local = {HOST}:{p.amqp}",
        f"management.tcp.ip = {HOST}",
        f"management.tcp.port = {p.management}",
        f"prometheus.tcp.ip = {HOST}",
        f"prometheus.tcp.port = {p.prometheus}",
        f"cluster_name = {cluster_name}",
        # guest may log in from loopback only (Debian's default, stated here to be sure).
        "loopback_users.guest = true",
    ]
    return "\n".join(lines) + "\n"


def plugins_config() -> str:
    return f"[{','.join(PLUGINS)}].\n"


def env_config() -> str:
    """The node's rabbitmq-env.conf, read instead of /etc/rabbitmq's (whose NODENAME and flags
    are the machine broker's): epmd, if this node starts it, on loopback only."""
    return f"ERL_EPMD_ADDRESS={HOST}\n"


def node_env(spec: NodeSpec) -> dict[str, str]:
    """What rabbitmq-server and the CLI tools read for this node (on top of os.environ)."""
    return {
        "RABBITMQ_NODENAME": spec.name,
        "RABBITMQ_DIST_PORT": str(spec.ports.dist),
        "RABBITMQ_CONFIG_FILE": str(spec.config_file.with_suffix("")),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(spec.dir / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(spec.env_file),
        "RABBITMQ_MNESIA_BASE": str(spec.dir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(spec.log_dir),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(spec.plugins_file),
        "RABBITMQ_PID_FILE": str(spec.pid_file),
        # The distribution listener on loopback, like every other one; schedulers that sleep
        # when idle instead of spinning (RabbitMQ's advice for shared hosts): several nodes
        # share this machine's cores with the grid they serve.
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
            "-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none"
        ),
    }


@dataclass
class ClusterInfo:
    """A cluster ``up`` started: where it lives, its nodes, and the pid of each node's VM."""

    dir: Path
    nodes: list[NodeSpec]
    cluster_name: str
    pids: dict[str, int] = field(default_factory=dict)
    # Whether ``up`` created ``dir`` (then ``down`` removes it once it is empty).
    created_dir: bool = True

    @property
    def amqp_urls(self) -> list[str]:
        return [n.amqp_url for n in self.nodes]

    @property
    def url_list(self) -> str:
        """For SMARTGRID_AMQP_URL: every node's URL, comma-separated."""
        return ",".join(self.amqp_urls)

    @property
    def management_urls(self) -> list[str]:
        return [n.management_url for n in self.nodes]

    @property
    def prometheus_ports(self) -> list[int]:
        return [n.ports.prometheus for n in self.nodes]

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def node(self, which: int | str) -> NodeSpec:
        """A node by its 1-based index or its name."""
        for n in self.nodes:
            if which in (n.index, n.name):
                return n
        raise KeyError(f"no node {which!r} in {self.node_names}")

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "dir": str(self.dir),
            "cluster_name": self.cluster_name,
            "created_dir": self.created_dir,
            "nodes": [
                {"index": n.index, "name": n.name, "dir": str(n.dir), "ports": asdict(n.ports)}
                for n in self.nodes
            ],
            "pids": self.pids,
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterInfo:
        doc = json.loads(text)
        nodes = [
            NodeSpec(int(n["index"]), str(n["name"]), Ports(**n["ports"]), Path(n["dir"]))
            for n in doc["nodes"]
        ]
        return cls(
            dir=Path(doc["dir"]),
            nodes=nodes,
            cluster_name=str(doc["cluster_name"]),
            pids={str(k): int(v) for k, v in doc.get("pids", {}).items()},
            created_dir=bool(doc.get("created_dir", True)),
        )


def default_dir() -> Path:
    """Where the CLI keeps its one cluster unless told (``down`` finds it there)."""
    return Path(tempfile.gettempdir()) / "smartgrid-cluster"


def running_nodes(cluster_status_json: str) -> list[str]:
    """The running nodes in ``rabbitmqctl cluster_status --formatter json``'s output."""
    return sorted(json.loads(cluster_status_json).get("running_nodes", []))


# -- driving: subprocesses -----------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    """The server and CLI scripts, and whether they run the node as the rabbitmq user."""

    server: str
    ctl: str
    as_rabbitmq: bool


def find_tools() -> Tools:
    """Root and rabbitmq go through Debian's /usr/sbin wrappers (which run the scripts as
    rabbitmq, with its cookie); anyone else runs the scripts directly as themselves."""
    as_rabbitmq = os.geteuid() == 0 or _user() == RABBITMQ_USER
    if as_rabbitmq:
        server, ctl = _sbin("rabbitmq-server"), _sbin("rabbitmqctl")
    else:
        server, ctl = (
            str(DEBIAN_BIN / t) if (DEBIAN_BIN / t).is_file() else shutil.which(t)
            for t in ("rabbitmq-server", "rabbitmqctl")
        )
    if server is None or ctl is None:
        raise ClusterError(
            "a local cluster needs RabbitMQ's rabbitmq-server and rabbitmqctl "
            "(Debian: apt-get install rabbitmq-server)"
        )
    return Tools(server, ctl, as_rabbitmq)


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return ""


def _sbin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((f"{d}/{name}" for d in SBIN_DIRS if Path(f"{d}/{name}").is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
        return True
    return False


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def pid_alive(pid: int, node_name: str) -> bool:
    """Whether ``pid`` is still the VM of ``node_name``: a pid reused by another process (or a
    zombie awaiting its reaper) is not. Without /proc, whether any process has that pid."""
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        environ = (proc / "environ").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return f"RABBITMQ_NODENAME={node_name}".encode() in environ.split(b"\0")


def pids_of(node_name: str, vm_only: bool = True) -> list[int]:
    """The processes on this machine started for ``node_name`` (from /proc: the scripts pass
    RABBITMQ_NODENAME on to the VM they run): its VM (for a node whose pid file was never
    written), or with ``vm_only=False`` the wrapper scripts too."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError):
            vm = "beam" in (proc / "comm").read_text()
            # Only a process whose environment says so: one we cannot read is not counted.
            mine = f"RABBITMQ_NODENAME={node_name}".encode() in (
                proc / "environ"
            ).read_bytes().split(b"\0")
            if (vm or not vm_only) and mine and pid_alive(int(proc.name), node_name):
                found.append(int(proc.name))
    return found


def log_tail(spec: NodeSpec, chars: int = LOG_TAIL_CHARS) -> str:
    logs = sorted(spec.log_dir.glob("*.log")) if spec.log_dir.is_dir() else []
    logs.append(spec.dir / CONSOLE_LOG)
    parts = []
    for p in logs:
        with contextlib.suppress(OSError):
            text = p.read_text(errors="replace")
            if text.strip():
                parts.append(f"--- {p} (last {chars} chars)\n{text[-chars:]}")
    return "\n".join(parts) or f"(no log in {spec.log_dir})"


# The server processes this process launched (the Debian wrapper, or the VM itself), by node:
# ``down`` reaps them so that none is left a zombie of a long-lived caller (a test session).
_LAUNCHED: dict[str, subprocess.Popen[bytes]] = {}


class _Driver:
    def __init__(self, info: ClusterInfo, tools: Tools) -> None:
        self.info, self.tools = info, tools

    def env(self, spec: NodeSpec) -> dict[str, str]:
        return os.environ | node_env(spec)

    def ctl(self, spec: NodeSpec, *args: str, timeout: float = CTL_TIMEOUT_S) -> str:
        """``rabbitmqctl -n <node> args``; a failure is a ClusterError with its output."""
        cmd = [self.tools.ctl, "-n", spec.name, *args]
        try:
            done = subprocess.run(
                cmd, env=self.env(spec), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{' '.join(cmd)} did not finish in {timeout:g}s") from None
        if done.returncode != 0:
            raise ClusterError(
                f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}".rstrip()
            )
        return done.stdout

    def save(self) -> None:
        path = self.info.dir / STATE_FILE
        tmp = self.info.dir / STATE_TMP
        tmp.write_text(self.info.to_json())
        tmp.replace(path)

    def write_files(self) -> None:
        for spec in self.info.nodes:
            spec.dir.mkdir()
            spec.config_file.write_text(node_config(spec, self.info.cluster_name))
            spec.plugins_file.write_text(plugins_config())
            spec.env_file.write_text(env_config())
        if self.tools.as_rabbitmq and os.geteuid() == 0:
            # The node runs as rabbitmq, which must own its folders (and reach them).
            user = pwd.getpwnam(RABBITMQ_USER)
            owned = [self.info.dir]
            for spec in self.info.nodes:
                owned += [spec.dir, *spec.dir.iterdir()]
            for p in owned:
                os.chown(p, user.pw_uid, user.pw_gid)
        elif not self.tools.as_rabbitmq:
            _ensure_cookie()

    def start(self, spec: NodeSpec) -> None:
        """The node in the foreground of a process of its own session (it outlives this one),
        its console in console.log: what a node prints before its log is set up (a config
        error) would be lost with -detached, and a node that exits is seen at once."""
        with (spec.dir / CONSOLE_LOG).open("wb") as console:
            _LAUNCHED[spec.name] = subprocess.Popen(
                [self.tools.server],
                env=self.env(spec),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=spec.dir,
                start_new_session=True,
            )

    def wait(self, spec: NodeSpec, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"{spec.name}: still waiting after {timeout:g}s for {what}\n{log_tail(spec)}"
                )
            if self.boot_failed(spec):
                raise ClusterError(f"{spec.name} failed to boot\n{log_tail(spec)}")
            time.sleep(POLL_S)

    def boot_failed(self, spec: NodeSpec) -> bool:
        launched = _LAUNCHED.get(spec.name)
        if launched is not None and launched.poll() is not None:
            return True
        pid = self.info.pids.get(spec.name)
        if pid is not None and not pid_alive(pid, spec.name):
            return True
        return any(
            "BOOT FAILED" in p.read_text(errors="replace")
            for p in (spec.log_dir.glob("*.log") if spec.log_dir.is_dir() else [])
        )

    def read_pid(self, spec: NodeSpec) -> bool:
        with contextlib.suppress(OSError, ValueError):
            self.info.pids[spec.name] = int(spec.pid_file.read_text().strip())
            self.save()
            return True
        return False

    def wait_booted(self, spec: NodeSpec) -> None:
        self.wait(
            spec, lambda: self.read_pid(spec), f"its pid file {spec.pid_file}", START_TIMEOUT_S
        )
        self.wait_serving(spec, START_TIMEOUT_S)

    def wait_serving(self, spec: NodeSpec, timeout: float) -> None:
        for port, what in (
            (spec.ports.amqp, "AMQP"),
            (spec.ports.management, "management"),
            (spec.ports.prometheus, "Prometheus"),
        ):
            self.wait(spec, partial(_port_open, port), f"{what} on {HOST}:{port}", timeout)

    def join(self, first: NodeSpec, others: Sequence[NodeSpec]) -> None:
        """``others`` join ``first``: each stops its app, joins, starts it again. The stops and
        starts run at once (a start is a reboot of the broker, seconds); the joins one at a
        time, as the clustering guide has them."""
        with ThreadPoolExecutor(max(1, len(others))) as pool:
            list(pool.map(lambda s: self.ctl(s, "stop_app", timeout=JOIN_TIMEOUT_S), others))
            for spec in others:
                self.ctl(spec, "join_cluster", first.name, timeout=JOIN_TIMEOUT_S)
            list(pool.map(lambda s: self.ctl(s, "start_app", timeout=JOIN_TIMEOUT_S), others))
        for spec in others:
            self.wait_serving(spec, JOIN_TIMEOUT_S)

    def cluster_running(self, first: NodeSpec) -> list[str]:
        return running_nodes(self.ctl(first, "cluster_status", "--formatter", "json"))


def _ensure_cookie() -> None:
    """One cookie before any node starts: Erlang writes ~/.erlang.cookie on a node's first start
    when there is none, and nodes started at once could each write their own."""
    cookie = Path.home() / ".erlang.cookie"
    if not cookie.exists():
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)


def load(target: ClusterInfo | Path | str) -> ClusterInfo | None:
    """The cluster recorded in ``target`` (a ClusterInfo, its folder or its state file); None
    once ``down`` removed its state file."""
    if isinstance(target, ClusterInfo):
        return target if (target.dir / STATE_FILE).is_file() else None
    path = Path(target)
    if path.is_dir():
        path = path / STATE_FILE
    try:
        return ClusterInfo.from_json(path.read_text())
    except FileNotFoundError:
        return None


def up(
    nodes: int = 3,
    base_dir: Path | str | None = None,
    base_port: int | None = None,
    say: Callable[[str], None] | None = None,
) -> ClusterInfo:
    """Start ``nodes`` RabbitMQ nodes here and cluster them; return once every node serves AMQP,
    management and Prometheus and node 1 sees all of them running. ``base_dir``: a new temporary
    folder unless given (it must then be empty or absent). On failure everything started is
    stopped and removed, and the ClusterError carries the failing node's log tail."""
    check_node_count(nodes)
    say = say or _quiet
    tools = find_tools()
    ports = ports_from_base(base_port, nodes) if base_port else free_ports(nodes, _free_port)
    taken = [p for ps in ports for p in ps.all() if _port_taken(p)]
    if taken:
        raise ClusterError(f"ports already in use on {HOST}: {taken}")
    if base_dir is None:
        root, created = Path(tempfile.mkdtemp(prefix="smartgrid-cluster-")), True
    else:
        root = Path(base_dir).resolve()
        recorded = load(root) if root.is_dir() else None
        if recorded is not None:
            raise ClusterError(
                f"{root} already holds a cluster ({', '.join(recorded.node_names)}): "
                f"run `smartgrid-loadgen cluster down --dir {root}` first"
            )
        if root.exists() and any(root.iterdir()):
            raise ClusterError(f"{root} is not empty: give an empty or new folder")
        created = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(3)
    info = ClusterInfo(root, plan(nodes, root, ports, tag), f"smartgrid-{tag}", {}, created)
    driver = _Driver(info, tools)
    try:
        driver.save()
        driver.write_files()
        say(f"starting {nodes} node(s) in {root}")
        for spec in info.nodes:
            driver.start(spec)
        for spec in info.nodes:
            driver.wait_booted(spec)
            say(f"{spec.name} up (pid {info.pids[spec.name]})")
        first = info.nodes[0]
        driver.join(first, info.nodes[1:])
        say(f"{', '.join(info.node_names[1:]) or 'no other node'} joined {first.name}")
        want = sorted(info.node_names)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while (seen := driver.cluster_running(first)) != want:
            if time.monotonic() >= deadline:
                raise ClusterError(f"{first.name} sees {seen} running, not {want}")
            time.sleep(POLL_S)
    except BaseException:
        with contextlib.suppress(Exception):
            down(info)
        raise
    return info


def _quiet(_: str) -> None:
    pass


def ctl(info: ClusterInfo, which: int | str, *args: str, timeout: float = CTL_TIMEOUT_S) -> str:
    """``rabbitmqctl -n <node> args`` for one node of ``info`` (its stdout); ClusterError if it
    fails."""
    return _Driver(info, find_tools()).ctl(info.node(which), *args, timeout=timeout)


def stop_node(info: ClusterInfo, which: int | str, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop one node the way an operator does (``rabbitmqctl -n <node> stop``) and return once
    its VM has exited. Its data stays (``down`` removes it)."""
    spec = info.node(which)
    driver = _Driver(info, find_tools())
    driver.ctl(spec, "stop", timeout=timeout)
    pid = info.pids.get(spec.name)
    if pid is not None:
        _wait_gone([(spec, pid)], timeout)


def start_node(info: ClusterInfo, which: int | str, timeout: float = JOIN_TIMEOUT_S) -> None:
    """Start a stopped (or killed) node of ``info`` again, with its name, ports and folder: it
    rejoins its cluster from its data. Returns once it serves AMQP, management and Prometheus
    and another running node sees it running (a node that is alone waits for nobody)."""
    spec = info.node(which)
    old = info.pids.get(spec.name)
    if old is not None and pid_alive(old, spec.name):
        raise ClusterError(f"{spec.name} is still running (pid {old})")
    driver = _Driver(info, find_tools())
    launched = _LAUNCHED.pop(spec.name, None)
    if launched is not None:  # reaped, so that no zombie stays behind its last run
        with contextlib.suppress(subprocess.TimeoutExpired):
            launched.wait(KILL_TIMEOUT_S)
    # A VM killed -9 leaves its pid file: the new pid is read only once the new VM writes it.
    info.pids.pop(spec.name, None)
    spec.pid_file.unlink(missing_ok=True)
    driver.save()
    driver.start(spec)
    driver.wait_booted(spec)
    peers = [n for n in info.nodes if n.name != spec.name and _maybe_running(info, n)]
    deadline = time.monotonic() + timeout
    while peers and spec.name not in driver.cluster_running(peers[0]):
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"{peers[0].name} does not see {spec.name} running\n{log_tail(spec)}"
            )
        time.sleep(POLL_S)


def kill_node(info: ClusterInfo, which: int | str, timeout: float = KILL_TIMEOUT_S) -> None:
    """SIGKILL one node's VM (a crash: no goodbye to its clients or peers) and return once it
    has exited. Its data stays, for ``start_node``."""
    spec = info.node(which)
    pid = info.pids[spec.name]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)
    if _wait_gone([(spec, pid)], timeout):
        raise ClusterError(f"{spec.name} (pid {pid}) still runs {timeout:g}s after SIGKILL")


def _wait_gone(procs: Iterable[tuple[NodeSpec, int]], timeout: float) -> list[NodeSpec]:
    """Wait until these VMs have exited; return the nodes whose VM still runs after ``timeout``."""
    left = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        left = [(s, pid) for s, pid in left if pid_alive(pid, s.name)]
        if not left or time.monotonic() >= deadline:
            return [s for s, _ in left]
        time.sleep(POLL_S)


def down(target: ClusterInfo | Path | str) -> bool:
    """Stop the nodes recorded in ``target`` and remove their folders and the state file (and the
    cluster's folder, if ``up`` created it and nothing else is left in it). Only those nodes are
    stopped: by ``rabbitmqctl -n <their name> stop`` (all at once), then SIGTERM and SIGKILL to
    their recorded pid if still there. Idempotent: False when nothing was recorded there."""
    info = load(target)
    if info is None:
        return False
    try:
        tools: Tools | None = find_tools()
    except ClusterError:
        tools = None
    driver = _Driver(info, tools) if tools else None
    live = {s.name for s in info.nodes if _maybe_running(info, s)}
    stops: list[subprocess.Popen[bytes]] = []
    if driver is not None and tools is not None:
        for spec in info.nodes:
            if spec.name in live:
                stops.append(
                    subprocess.Popen(
                        [tools.ctl, "-n", spec.name, "stop"],
                        env=driver.env(spec),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
    for proc in stops:
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # A node that never wrote its pid file is found by its name (unique to this cluster).
    for spec in info.nodes:
        if spec.name not in info.pids:
            info.pids.update((spec.name, pid) for pid in pids_of(spec.name)[:1])
    recorded = [(s, info.pids[s.name]) for s in info.nodes if s.name in info.pids]
    stuck = _wait_gone(recorded, STOP_TIMEOUT_S if stops else 0)
    for sig in (15, 9):
        if not stuck:
            break
        for spec in stuck:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(info.pids[spec.name], sig)
        stuck = _wait_gone([(s, info.pids[s.name]) for s in stuck], KILL_TIMEOUT_S)
    for spec in info.nodes:
        launched = _LAUNCHED.pop(spec.name, None)
        if launched is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                launched.wait(KILL_TIMEOUT_S)
    if stuck:
        raise ClusterError(
            "still running, not removed: "
            + ", ".join(f"{s.name} (pid {info.pids[s.name]})" for s in stuck)
        )
    for spec in info.nodes:
        shutil.rmtree(spec.dir, ignore_errors=True)
    for leftover in (info.dir / STATE_FILE, info.dir / STATE_TMP):
        leftover.unlink(missing_ok=True)
    if info.created_dir:
        with contextlib.suppress(OSError):
            info.dir.rmdir()
    return True


def _maybe_running(info: ClusterInfo, spec: NodeSpec) -> bool:
    """A node with a live recorded pid, or one whose pid was never recorded (still booting)."""
    pid = info.pids.get(spec.name)
    return pid is None or pid_alive(pid, spec.name)
