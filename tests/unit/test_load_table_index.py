"""The load table's index: headroom's fast path picks what a scan of every substation picks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import Heartbeat
from dispatcher.load_table import LoadTable, SubstationState, promised_ratio
from dispatcher.policies import Headroom, LeastLoaded, decider

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Few distinct capacities, so that many substations share one heap (and ties happen).
CAPACITIES = (50.0, 150.0, 300.0, 600.0, 1200.0)


@st.composite
def substations(draw: st.DrawFn) -> dict[str, object]:
    capacity = draw(st.sampled_from(CAPACITIES))
    bays = draw(st.integers(1, 40))
    active = draw(st.integers(0, bays))
    return {
        "capacity": capacity,
        "bays": bays,
        "active": active,
        "queued": draw(st.integers(0, 10)),
        "committed": draw(st.sampled_from([0.0, 7.0, 50.0]) | st.floats(0, 3 * capacity)),
        "status": draw(st.sampled_from(["up", "up", "up", "draining"])),
        # Seconds since its last heartbeat at decision time: beyond 3 intervals it is stale.
        "age": draw(st.sampled_from([0.0, 1.0, 2.9, 3.5, 10.0])),
        "pending": draw(st.lists(st.sampled_from([7.0, 11.0, 50.0, 150.0]), max_size=4)),
    }


def build(specs: list[dict[str, object]], now: float, seed: int) -> LoadTable:
    table = LoadTable(stale_after_intervals=3, rng=random.Random(seed))
    for i, spec in enumerate(specs):
        beat = Heartbeat(
            substation_id=f"s{i}", capacity_kw=spec["capacity"], bays=spec["bays"],
            load_kw=0.0, committed_kw=spec["committed"], active_sessions=spec["active"],
            queued=spec["queued"], status=spec["status"], seq=1, assignments_received=0,
            interval_s=1.0, sent_at=T0 + timedelta(seconds=i),
        )  # fmt: skip
        assert table.observe(beat, now - float(spec["age"]))  # type: ignore[arg-type]
        for kw in spec["pending"]:  # type: ignore[attr-defined]
            table.record_assignment(f"s{i}", min(kw, float(spec["capacity"])))  # type: ignore[arg-type]
    return table


def scan(
    table: LoadTable, now: float, request_kw: float, whole: bool = False
) -> tuple[float, set[str]]:
    """The straightforward O(n) answer: the least score and every substation that has it."""
    scores = {
        s.substation_id: promised_ratio(
            s, request_kw if whole else min(request_kw, s.capacity_kw), 1
        )
        for s in table.eligible(now)
    }
    if not scores:
        return float("inf"), set()
    least = min(scores.values())
    return least, {sid for sid, v in scores.items() if v == least}


def held(s: SubstationState, score: float, hold_factor: float) -> bool:
    idle = s.committed_kw + s.pending_kw == 0 and s.active_sessions == 0
    return score > hold_factor and not idle


REQUEST_KW = st.sampled_from([1.0, 7.0, 11.0, 50.0, 149.0, 150.0, 400.0])
# A heartbeat between decisions: (which substation, its committed kW, its status).
BEAT = st.tuples(
    st.integers(0, 29), st.sampled_from([0.0, 20.0, 500.0]), st.sampled_from(["up", "draining"])
)


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(substations(), max_size=30),
    steps=st.lists(REQUEST_KW | BEAT, max_size=30),
    hold_factor=st.sampled_from([0.5, 1.0, 2.0]),
    seed=st.integers(0, 2**16),
)
def test_fast_path_picks_what_the_scan_picks(
    specs: list[dict[str, object]],
    steps: list[float | tuple[int, float, str]],
    hold_factor: float,
    seed: int,
) -> None:
    # Given a table of fresh, stale and draining substations with assignments pending
    now = 100.0
    table = build(specs, now, seed)
    policy = Headroom(random.Random(seed), hold_factor)
    # When requests are dispatched one decision at a time, heartbeats arriving in between
    for n, kw in enumerate(steps):
        if isinstance(kw, tuple):
            i, committed, status = kw
            if i < len(specs):
                table.observe(
                    Heartbeat(
                        substation_id=f"s{i}", capacity_kw=specs[i]["capacity"],
                        bays=specs[i]["bays"], load_kw=0.0, committed_kw=committed,
                        active_sessions=0, queued=0, status=status, seq=2 + n,
                        assignments_received=0, interval_s=1.0,
                        sent_at=T0 + timedelta(days=1, seconds=n),
                    ),  # type: ignore[arg-type]
                    now,
                )  # fmt: skip
            continue
        # (A request with a departure counts in full: the index answers that as the scan.)
        least_whole, argmin_whole = scan(table, now, kw, whole=True)
        found_whole = table.least_promised(now, kw, whole=True)
        assert (found_whole is None) == (not argmin_whole)
        if found_whole is not None:
            assert found_whole[0].substation_id in argmin_whole
            assert found_whole[1] == least_whole
        least, argmin = scan(table, now, kw)
        found = table.least_promised(now, kw)
        pick = policy.choose_in(table, now, kw)
        # Then the index finds the least promised eligible substation, as the scan does
        if not argmin:
            assert found is None
            assert pick is None
            continue
        assert found is not None
        state, score = found
        assert state.substation_id in argmin
        assert score == least
        # and holds exactly when the scan's policy would hold it
        assert pick == (None if held(state, score, hold_factor) else state.substation_id)
        if len(argmin) == 1:
            assert policy.choose(table.eligible(now), kw) == pick
        if pick is None:
            break
        table.record_assignment(pick, min(kw, state.capacity_kw))


def test_a_new_heartbeat_and_staleness_move_a_substation_in_the_index() -> None:
    table = LoadTable(stale_after_intervals=3, rng=random.Random(1))

    def beat(sid: str, committed: float, seq: int, status: str = "up") -> Heartbeat:
        return Heartbeat(
            substation_id=sid, capacity_kw=100, bays=50, load_kw=0, committed_kw=committed,
            active_sessions=0, queued=0, status=status, seq=seq, assignments_received=0,
            interval_s=1.0, sent_at=T0 + timedelta(seconds=seq),
        )  # fmt: skip

    table.observe(beat("a", 10, 1), 0.0)
    table.observe(beat("b", 50, 1), 0.0)
    assert table.least_promised(0.0, 7)[0].substation_id == "a"  # type: ignore[index]
    # a reports more than b: the old entry must not win
    table.observe(beat("a", 90, 2), 1.0)
    assert table.least_promised(1.0, 7)[0].substation_id == "b"  # type: ignore[index]
    # b drains: a is all that is left
    table.observe(beat("b", 0, 2, status="draining"), 1.0)
    assert table.least_promised(1.0, 7)[0].substation_id == "a"  # type: ignore[index]
    # a falls silent: nothing is eligible, until it heartbeats again
    assert table.least_promised(5.0, 7) is None
    table.observe(beat("a", 0, 3), 5.0)
    assert table.least_promised(5.0, 7)[0].substation_id == "a"  # type: ignore[index]
    # the dispatcher marks it refused (the broker nacked an assignment): out, though fresh
    state = table.get("a")
    assert state is not None
    state.status = "refused"
    assert table.least_promised(5.0, 7) is None


def test_pending_assignments_reorder_the_index_and_dead_entries_are_compacted() -> None:
    table = LoadTable(stale_after_intervals=3, rng=random.Random(2))
    for i in range(3):
        table.observe(
            Heartbeat(
                substation_id=f"s{i}", capacity_kw=100, bays=1000, load_kw=0, committed_kw=0,
                active_sessions=0, queued=0, status="up", seq=1, assignments_received=0,
                interval_s=1.0, sent_at=T0,
            ),
            0.0,
        )  # fmt: skip
    policy = Headroom(random.Random(0), hold_factor=1e9)
    picks = []
    for _ in range(3000):
        pick = policy.choose_in(table, 0.0, 10.0)
        assert pick is not None
        table.record_assignment(pick, 10.0)
        picks.append(pick)
    # equal substations take turns: never more than one assignment apart
    assert max(picks.count(f"s{i}") for i in range(3)) == 1000
    assert len(table._index) < 1100  # dead entries were dropped


def test_policies_without_an_index_get_the_eligible_list_once_per_round() -> None:
    table = LoadTable(stale_after_intervals=3)
    table.observe(
        Heartbeat(
            substation_id="a", capacity_kw=100, bays=4, load_kw=5, committed_kw=0,
            active_sessions=0, queued=0, status="up", seq=1, assignments_received=0,
            interval_s=1.0, sent_at=T0,
        ),
        0.0,
    )  # fmt: skip
    choose = decider(LeastLoaded(random.Random(0)), table, 0.0)
    assert choose(7.0) == "a"
    assert choose(7.0) == "a"
    assert decider(Headroom(random.Random(0)), table, 0.0)(7.0) == "a"


@settings(max_examples=200, deadline=None)
@given(specs=st.lists(substations(), max_size=30), seed=st.integers(0, 2**16))
def test_tops_are_the_least_promised_eligible_substation_of_each_capacity(
    specs: list[dict[str, object]], seed: int
) -> None:
    now = 100.0
    table = build(specs, now, seed)
    eligible = table.eligible(now)
    least: dict[float, float] = {}
    for s in eligible:
        kw = s.committed_kw + s.pending_kw
        least[s.capacity_kw] = min(least.get(s.capacity_kw, kw), kw)
    tops = table.tops(now)
    # One per capacity that has an eligible substation, each the least promised of its capacity
    assert sorted(s.capacity_kw for s in tops) == sorted(least)
    for s in tops:
        assert s in eligible
        assert s.committed_kw + s.pending_kw == least[s.capacity_kw]
