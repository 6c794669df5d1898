"""A RabbitMQ node of a test's own, for what must not happen to the shared broker: restarts,
TLS listeners. Started with Debian's ``rabbitmq-server`` under another node name, ports and data
directory, and removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.helpers import wait_until_sync

SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
START_TIMEOUT_S = 60.0


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (f"{d}/{name}" for d in SBIN if Path(f"{d}/{name}").is_file()), None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


class PrivateBroker:
    """``amqp_port`` (and ``amqps_port`` when TLS files are given) on 127.0.0.1."""

    def __init__(
        self,
        tls: tuple[Path, Path, Path] | None = None,
        extra_conf: Sequence[str] = (),
        files: Mapping[str, str] | None = None,
    ) -> None:
        """``files`` are written into the node's own folder (readable by the rabbitmq user);
        ``{dir}`` in an ``extra_conf`` line is that folder."""
        server, ctl = _tool("rabbitmq-server"), _tool("rabbitmqctl")
        if server is None or ctl is None:
            reason = "a private broker needs Debian's rabbitmq-server (apt-get install it)"
            if os.environ.get("CI"):
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
        self.server, self.ctl = server, ctl
        self.node = f"sgtest{uuid.uuid4().hex[:6]}@localhost"
        self.amqp_port = _free_port()
        self.amqps_port = _free_port() if tls else None
        self.dir = Path(tempfile.mkdtemp(prefix="smartgrid-broker-"))
        conf = [f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}"]
        if tls is not None:
            ca, cert, key = (self._copy(p) for p in tls)
            conf += [
                f"listeners.ssl.default = 127.0.0.1:{self.amqps_port}",
                f"ssl_options.cacertfile = {ca}",
                f"ssl_options.certfile = {cert}",
                f"ssl_options.keyfile = {key}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        for name, content in (files or {}).items():
            (self.dir / name).write_text(content)
        conf += [line.format(dir=self.dir) for line in extra_conf]
        (self.dir / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        self.env = os.environ | {
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
        }
        self._chown()

    def _copy(self, path: Path) -> Path:
        target = self.dir / path.name
        shutil.copy(path, target)
        return target

    def _chown(self) -> None:
        # Debian's scripts run the node as the rabbitmq user, which must own its files.
        with contextlib.suppress(KeyError, PermissionError):
            user = pwd.getpwnam("rabbitmq")
            for p in [self.dir, *self.dir.iterdir()]:
                os.chown(p, user.pw_uid, user.pw_gid)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    def _ctl(self, *args: str) -> str:
        return subprocess.run(
            [self.ctl, "-n", self.node, *args],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    def start(self) -> PrivateBroker:
        subprocess.run(
            [self.server, "-detached"], env=self.env, check=True, capture_output=True, timeout=60
        )
        self.wait_open()
        return self

    def wait_open(self) -> None:
        wait_until_sync(
            lambda: _port_open(self.amqp_port),
            f"private broker {self.node} to open port {self.amqp_port}",
            timeout=START_TIMEOUT_S,
            poll=0.2,
            detail=lambda: "\n".join(
                p.read_text()[-3000:] for p in (self.dir / "log").glob("*.log")
            ),
        )

    def stop_app(self) -> None:
        """The broker goes away (connections drop, the port closes); its data stays."""
        self._ctl("stop_app")

    def start_app(self) -> None:
        self._ctl("start_app")
        self.wait_open()

    def memory_alarm(self, on: bool) -> None:
        """Raise (or clear) a memory alarm: the broker blocks every publishing connection.
        Returns once the node reports the alarm in effect (or cleared)."""
        self._ctl("set_vm_memory_high_watermark", "0.00001" if on else "0.4")
        wait_until_sync(
            lambda: self.memory_alarm_in_effect() == on,
            f"the memory alarm of {self.node} to be {'raised' if on else 'cleared'}",
            timeout=30,
            poll=0.2,
        )

    def memory_alarm_in_effect(self) -> bool:
        return "resource_limit,memory" in self._ctl("eval", "rabbit_alarm:get_alarms().")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._ctl("stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_broker(
    tls: tuple[Path, Path, Path] | None = None,
    extra_conf: Sequence[str] = (),
    files: Mapping[str, str] | None = None,
) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tls, extra_conf, files)
    try:
        yield broker.start()
    finally:
        broker.stop()
