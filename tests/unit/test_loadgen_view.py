"""Finding 9: loadgen's live views, its state and its report stay bounded whatever the number
of substations: heartbeats of 5,000 made-up ids (a hostile peer's flood) give the N busiest and
one line "… and K more substations", never a line per substation."""

from __future__ import annotations

import random
import uuid

from rich.console import Console

from contracts import ChargeEvent, EventKind
from loadgen.report import build_report, print_report
from loadgen.run import Pacing, RunOptions, RunResult, new_result
from loadgen.state import MAX_HISTORY, GridState
from loadgen.view import status_line, substation_table
from tests.helpers import T0, at, heartbeat, wait_until

FLOOD = 5000
REAL = ("s150", "s300", "s600")


def flooded(state: GridState, n: int = FLOOD) -> None:
    """The three real substations, then ``n`` made-up ids, many of them "busier"."""
    rng = random.Random(9)
    for i, sid in enumerate(REAL):
        state.on_heartbeat(heartbeat(sid, 150.0 * 2**i, 30.0))
    for _ in range(n):
        fake = f"fake-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
        state.on_heartbeat(heartbeat(fake, rng.uniform(10, 1000), rng.uniform(0, 500)))


def render(table: object) -> str:
    console = Console(width=140, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


def test_the_live_table_shows_the_busiest_and_a_count_of_the_rest() -> None:
    """Finding 9: the rich table holds at most ``limit`` substations and one line for the rest,
    the busiest by utilization."""
    state = GridState()
    flooded(state)
    text = render(substation_table(state, T0, limit=20))
    tracked = len(state.substations)
    assert f"… and {tracked - 20} more substations" in text
    rows = [line for line in text.splitlines() if "fake-" in line or " s150 " in line]
    assert len(rows) == 20
    assert len(text) < 10_000
    # The busiest: every row shown is at least as utilized as every one left out
    shown = [sid for sid in state.substations if f" {sid} " in text]
    floor = min(state.substations[s].utilization for s in shown)
    assert all(v.utilization <= floor for s, v in state.substations.items() if s not in shown)


def test_the_substations_a_run_uses_are_always_shown() -> None:
    """Finding 9: the substations this run's requests went to come before any made-up one."""
    state = GridState()
    flooded(state)
    for sid in REAL:
        state.on_event(ChargeEvent(request_id=uuid.uuid4(), kind=EventKind.DISPATCHED,
                                   substation_id=sid))  # fmt: skip
    text = render(substation_table(state, T0, limit=5))
    assert all(f" {sid} " in text for sid in REAL)
    line = status_line(state, T0, 1.0, limit=5)
    assert all(f"{sid} " in line for sid in REAL)


def test_the_log_line_is_bounded_too() -> None:
    """Finding 9: the plain line for logs and pipes names at most ``limit`` substations and
    says how many more there are."""
    state = GridState()
    flooded(state)
    line = status_line(state, T0, 1.0, counts=False, limit=20)
    assert line.count(" | ") == 1 + 20 + 1 - 1 + 1  # elapsed, 20 substations, the rest, ignored
    assert f"… and {len(state.substations) - 20} more substations" in line
    assert len(line) < 3_000


def test_heartbeats_of_thousands_of_ids_are_capped_and_counted() -> None:
    """Finding 9: loadgen tracks at most ``max_substations``; the heartbeats of others are a
    count, and its load history does not grow without bound."""
    state = GridState(keep_history=True, max_substations=1000)
    flooded(state)
    assert len(state.substations) == 1000
    assert state.ignored_heartbeats == FLOOD + len(REAL) - 1000
    assert all(sid in state.substations for sid in REAL)
    for seq in range(2, MAX_HISTORY + 10):
        state.on_heartbeat(heartbeat("s150", 150.0, 30.0, seq=seq, t=seq))
    assert len(state.history) <= MAX_HISTORY


def test_stale_made_up_substations_make_room_for_live_ones() -> None:
    """Finding 9: once the table is full, stale substations no request of this run went to
    are forgotten, so that a substation heard from later is seen."""
    state = GridState(max_substations=100)
    flooded(state, 200)
    state.on_heartbeat(heartbeat("late", 300.0, 10.0, t=60))
    assert "late" not in state.substations
    state.on_event(ChargeEvent(request_id=uuid.uuid4(), kind=EventKind.DISPATCHED,
                               substation_id="s300"))  # fmt: skip
    state.prune(at(60))
    state.on_heartbeat(heartbeat("late", 300.0, 10.0, t=60))
    assert set(state.substations) == {"s300", "late"}


def _flooded_run() -> RunResult:
    result = new_result(RunOptions(via="amqp", requests=30))
    state = result.state
    flooded(state)
    for i in range(30):
        rid, sid = uuid.uuid4(), REAL[i % 3]
        state.on_sent(rid, T0)
        state.on_ingress_result(rid, "confirmed", T0)
        state.on_event(ChargeEvent(request_id=rid, kind=EventKind.DISPATCHED, substation_id=sid))
        state.on_event(ChargeEvent(request_id=rid, kind=EventKind.COMPLETED, substation_id=sid,
                                   energy_kwh=10.0))  # fmt: skip
    result.pacing = Pacing(planned=30, first_s=0.0, last_s=1.0)
    return result


def test_the_report_lists_the_substations_that_did_the_work_and_counts_the_rest() -> None:
    """Finding 9: substations this run never sent to and that never completed its work are
    not listed one by one in the report (nor in its JSON), only counted."""
    r = build_report(_flooded_run(), limit=20)
    assert [row.substation_id for row in r.substations] == list(REAL)
    assert sum(row.requests for row in r.substations) == r.completed == 30
    assert r.substations_not_listed == len(_flooded_run().state.substations) - len(REAL)
    assert sum(row.capacity_share for row in r.substations) == 1.0


def test_the_printed_report_stays_small() -> None:
    """Finding 9: the whole printed report, many substations or not, is a few kilobytes."""
    console = Console(width=140, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_report(console, build_report(_flooded_run(), limit=20), limit=20)
    text = console.export_text()
    assert "more substations that did none of this run's work" in text
    assert "heartbeats of substations beyond the ones tracked" in text
    assert len(text) < 10_000


def test_a_small_grid_is_listed_whole_as_before() -> None:
    """Finding 9: up to ``limit`` substations everything is listed, idle ones included."""
    result = new_result(RunOptions(via="amqp", requests=1))
    for i, sid in enumerate(REAL):
        result.state.on_heartbeat(heartbeat(sid, 150.0 * 2**i, 0.0))
    r = build_report(result, limit=20)
    assert [row.substation_id for row in r.substations] == list(REAL)
    assert r.substations_not_listed == 0
    text = render(substation_table(result.state, T0))
    assert "more substations" not in text


async def test_a_plain_view_prints_a_line_once_while_it_does_not_change() -> None:
    """Newcomer point 4: a run that ends while still connecting prints ``connecting...`` once
    (a non-terminal view printed it again at its end)."""
    import asyncio
    import io

    from rich.console import Console

    from loadgen.view import LiveView

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    lines = iter(["connecting...", "connecting...", "connecting...", "sent 1/1"])
    current = ["connecting..."]

    def line() -> str:
        current[0] = next(lines, current[0])
        return current[0]

    done = asyncio.Event()
    view = asyncio.create_task(LiveView(console, lambda: "", line, line_every_s=0.01).run(done))
    await wait_until(lambda: current[0] == "sent 1/1", "the view to read the last line", poll=0.01)
    done.set()
    await view
    assert out.getvalue().splitlines() == ["connecting...", "sent 1/1"]
