"""What /proc tells of a process on this machine (Linux), for the benchmarks' CPU figures: each
reader returns None where it cannot read."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


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


def preemptions(pid: int | str = "self") -> int | None:
    """How often a process's main thread was switched out while it could have run on."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
