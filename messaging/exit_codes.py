"""The exit codes of every smartgrid process (gateway, dispatcher, worker, loadgen, contracts).

One table, so that a script or a supervisor reads the same number the same way whichever
process it ran:

==== ========================================================================================
code meaning
==== ========================================================================================
0    done: a service stopped gracefully; a loadgen run finished every accepted request
1    failed: a loadgen run lost accepted requests (the grid no longer holds them), or the grid,
     the gateway or the broker could not be reached; a service ended on an unexpected error
2    usage: invalid options or settings, or a port to listen on is taken; nothing was started
3    the broker refused the credentials or a declaration (retrying will not help)
4    unfinished: a loadgen run ended with accepted requests still in the grid (held in
     ``<ns>.requests``, queued at a substation or charging) and none lost
128+n  stopped by signal n: 130 SIGINT (Ctrl-C), 143 SIGTERM (loadgen, after its report so far)
==== ========================================================================================
"""

from __future__ import annotations

import signal

OK = 0
FAILURE = 1
USAGE = 2
BROKER_REFUSED = 3
UNFINISHED = 4
SIGNAL_BASE = 128
INTERRUPTED = SIGNAL_BASE + signal.SIGINT  # 130
TERMINATED = SIGNAL_BASE + signal.SIGTERM  # 143

# For --help texts: the same table in one paragraph.
SUMMARY = (
    f"Exit codes: {OK} ok; {FAILURE} requests lost or the grid unreachable; {USAGE} invalid "
    f"options or settings (or the port is taken); {BROKER_REFUSED} the broker refused the "
    f"credentials; {UNFINISHED} requests unfinished (still in the grid), none lost; "
    f"{INTERRUPTED} Ctrl-C; {TERMINATED} SIGTERM."
)


def for_signal(signum: int) -> int:
    """The exit code of a process stopped by signal ``signum`` (what a shell reports)."""
    return SIGNAL_BASE + signum
