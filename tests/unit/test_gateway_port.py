"""Newcomer point 3: a gateway whose port is taken exits 2 (a usage error) with one line, before
it connects to the broker (loopback sockets only: no broker needed)."""

from __future__ import annotations

import socket
import subprocess
import sys

from messaging import exit_codes


def test_a_taken_port_exits_2_with_one_line_and_no_broker_connection() -> None:
    with socket.socket() as taken, socket.socket() as broker:
        # Given a port someone listens on, and a stand-in broker that counts connections
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker.bind(("127.0.0.1", 0))
        broker.listen()
        broker_url = f"amqp://guest:guest@127.0.0.1:{broker.getsockname()[1]}/%2F"
        # When the gateway is started on that port
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "--port", str(port), "--amqp-url", broker_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        # Then it exits 2 with one line that names the port
        assert done.returncode == exit_codes.USAGE == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: the port is in use")
        assert done.stdout == ""
        # And it never connected to the broker
        broker.setblocking(False)
        try:
            conn, _ = broker.accept()
        except BlockingIOError:
            pass
        else:
            conn.close()
            raise AssertionError("the gateway connected to the broker before binding its port")
