"""Predicted releases: when the worker says its sessions end, and what the dispatcher does with it.

The worker predicts from its own state (``substation_worker.simulation.predict_ends``); the load
table frees the predicted power from then on, and estimates the end of what it assigned itself.
Freed too early would let the dispatcher promise power a session still draws, so every estimate
must be late rather than early.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import Heartbeat, Release
from contracts.messages import MAX_RELEASE_IN_S, MAX_RELEASES
from dispatcher.load_table import ASSIGNMENT_END_MARGIN_S, LoadTable, promised_ratio
from dispatcher.policies import Headroom
from substation_worker.simulation import (
    RELEASE_HORIZON_INTERVALS,
    PredictedRelease,
    Substation,
    heartbeat_releases,
    predict_ends,
    predict_releases,
    to_wire,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# -- the worker's prediction ---------------------------------------------------------------------

SESSION = st.tuples(
    st.floats(0.5, 80.0),  # energy kWh
    st.sampled_from([3.7, 7.0, 11.0, 22.0, 50.0, 150.0, 350.0, 500.0]),  # car max kW
)


def completions(sub: Substation, step_s: float) -> list[tuple[float, str]]:
    """Run until idle in steps of ``step_s``: (time, key) of each completion."""
    out: list[tuple[float, str]] = []
    for _ in range(100_000):
        if not sub.active_count and not sub.waiting_count:
            return out
        out.extend((s.completed_at_s or 0.0, s.key) for s in sub.advance(step_s).completed)
    raise AssertionError("did not drain")


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.sampled_from([20.0, 50.0, 150.0, 600.0]),
    bays=st.integers(1, 12),
    first=st.lists(SESSION, min_size=1, max_size=15),
    warmup_s=st.floats(0.0, 3000.0),
    step_s=st.sampled_from([7.0, 600.0, 36_000.0]),
)
def test_predicted_ends_are_the_ends_when_nothing_more_is_assigned(
    capacity: float,
    bays: int,
    first: list[tuple[float, float]],
    warmup_s: float,
    step_s: float,
) -> None:
    # Given a substation sharing power among sessions, some waiting for a bay, part-way through
    sub = Substation(capacity, bays)
    for i, (kwh, kw) in enumerate(first):
        sub.offer(f"c{i}", kwh, kw)
    sub.advance(warmup_s)
    held = [*sub.active, *sub.waiting]
    now = sub.now_s
    # When it predicts when each session ends (power shared again at every end, the queue
    # taking freed bays)
    predicted = {held[i].key: now + t for t, i in sub_ends(sub)}
    # Then each session ends when predicted (to float rounding), however coarse the steps
    actual = dict((k, t) for t, k in completions(sub, step_s))
    assert set(predicted) == set(actual)
    for key, t in actual.items():
        assert t == pytest.approx(predicted[key], rel=1e-9, abs=1e-6)
    # and the releases a heartbeat carries are never early
    sub2 = Substation(capacity, bays)
    for i, (kwh, kw) in enumerate(first):
        sub2.offer(f"c{i}", kwh, kw)
    sub2.advance(warmup_s)
    releases = sub2.predicted_releases()
    ends = sorted(actual.values())
    assert sum(r.sessions for r in releases) == len(ends)
    seen = 0
    for r in releases:
        seen += r.sessions
        assert now + r.after_s >= ends[seen - 1]  # the group's last end, not before it


def sub_ends(sub: Substation) -> list[tuple[float, int]]:
    return predict_ends(
        sub.capacity_kw,
        sub.bays,
        [(s.remaining_kwh, s.max_power_kw) for s in sub.active],
        [(s.remaining_kwh, s.max_power_kw) for s in sub.waiting],
    )


def test_within_capacity_every_car_charges_at_its_max_and_ends_on_time() -> None:
    # 150 kW: 50 + 50 + 11 promised, so nobody shares: each ends at energy / its max power
    releases = predict_releases(150, 10, [(25, 50), (10, 50), (11, 11)])
    assert [r.kw for r in releases] == [50, 50, 11]
    assert [r.after_s for r in releases] == pytest.approx([720, 1800, 3600], rel=1e-5)


def test_an_assignment_within_capacity_does_not_delay_what_was_predicted() -> None:
    # Given 111 kW promised of 150, and the ends predicted for it
    sub = Substation(150, 10)
    sub.offer("a", 25, 50)
    sub.offer("b", 10, 50)
    sub.offer("c", 11, 11)
    sub.advance(0)
    predicted = sorted(r.after_s for r in sub.predicted_releases())
    # When the dispatcher sends a car that still fits (111 + 39 = 150 kW)
    sub.advance(100)
    sub.offer("d", 30, 39)
    # Then every predicted session still ends by its predicted time
    actual = sorted(t for t, k in completions(sub, 60) if k != "d")
    for a, p in zip(actual, predicted, strict=True):
        assert a <= p


def test_beyond_capacity_a_later_assignment_makes_predictions_early() -> None:
    # The reason the dispatcher holds at 1 x: once it promises more than the capacity, a car
    # assigned later takes a share of the power, and what was predicted ends later.
    sub = Substation(100, 10)
    sub.offer("a", 10, 100)
    sub.advance(0)
    (predicted,) = sub.predicted_releases()
    sub.offer("b", 10, 100)  # 200 kW promised on 100: both at 50 kW
    ends = dict((k, t) for t, k in completions(sub, 60))
    assert ends["a"] > predicted.after_s


def test_horizon_and_bound() -> None:
    active = [(float(i + 1), 10.0) for i in range(200)]  # ends every 360 s
    assert len(predict_releases(10_000, 400, active, horizon_s=3600)) == 10
    merged = predict_releases(10_000, 400, active, max_entries=MAX_RELEASES)
    assert len(merged) == MAX_RELEASES
    assert sum(r.sessions for r in merged) == 200
    assert sum(r.kw for r in merged) == pytest.approx(2000)
    # Each merged group stands at its last end: late, never early.
    exact = predict_releases(10_000, 400, active, max_entries=1000)
    ends = [r.after_s for r in exact]
    seen = 0
    for r in merged:
        seen += r.sessions
        assert r.after_s == ends[seen - 1]


def test_sessions_ending_together_are_one_release() -> None:
    (r,) = predict_releases(100, 4, [(5, 10), (5, 10), (5, 10)])
    assert (r.kw, r.sessions) == (30, 3)


def test_releases_on_the_wire_are_wall_seconds_and_bounded() -> None:
    wire = to_wire(
        [PredictedRelease(3600.0, 50.0), PredictedRelease(3600.0 * 3601, 11.0, 2)], 3600.0
    )
    assert wire == (Release(in_s=1.0, kw=50.0, sessions=1),)  # beyond MAX_RELEASE_IN_S: left
    assert MAX_RELEASE_IN_S >= RELEASE_HORIZON_INTERVALS * 300  # the longest interval fits


def test_a_heartbeat_states_the_ends_within_its_horizon() -> None:
    sub = Substation(1000, 100)
    for i in range(10):
        sub.offer(f"c{i}", 10.0 * (i + 1), 10.0)  # ends every hour of simulated time
    sub.advance(0)
    # time x3600, heartbeats every second: 2 intervals ahead = 2 simulated hours
    releases = heartbeat_releases(sub, 1.0, 3600.0)
    assert [round(r.in_s, 3) for r in releases] == [1.0, 2.0]
    assert all(r.kw == 10.0 for r in releases)
    hb = beat(releases=releases)
    assert Heartbeat.model_validate_json(hb.model_dump_json()).releases == releases


# -- the load table --------------------------------------------------------------------------

BEAT = dict(substation_id="s1", capacity_kw=100.0, bays=10, load_kw=0.0, status="up",
            assignments_received=0, interval_s=1.0)  # fmt: skip


def beat(
    sid: str = "s1",
    *,
    committed: float = 0.0,
    active: int = 0,
    seq: int = 1,
    releases: tuple[Release, ...] = (),
    capacity: float = 100.0,
    time_scale: float | None = None,
) -> Heartbeat:
    return Heartbeat.model_validate(
        {
            **BEAT,
            "substation_id": sid,
            "capacity_kw": capacity,
            "committed_kw": committed,
            "active_sessions": active,
            "queued": 0,
            "seq": seq,
            "sent_at": T0 + timedelta(seconds=seq),
            "releases": releases,
            "time_scale": time_scale,
            "charger_max_kw": None if time_scale is None else 350.0,
        }
    )


def test_predicted_power_is_free_from_its_time_counted_from_arrival() -> None:
    # Given a heartbeat received at 10.0 s: 100 kW promised, 60 kW of it ending 0.4 s after
    table = LoadTable()
    ending = (Release(in_s=0.4, kw=60, sessions=2),)
    table.observe(beat(committed=100, active=3, releases=ending), 10.0)
    s = table.get("s1")
    assert s is not None
    # Then until 10.4 s nothing is free, and a 50 kW car is held at 1 x
    policy = Headroom(random.Random(1))
    assert table.next_release() == pytest.approx(10.4)
    assert policy.choose_in(table, 10.39, 50.0) is None
    assert s.committed_kw == 100
    # and from then on the 60 kW and its two sessions are
    assert policy.choose_in(table, 10.4, 50.0) == "s1"
    assert (s.committed_kw, s.active_sessions) == (40, 1)
    assert table.next_release() is None


def test_pending_assignments_still_count_after_a_release() -> None:
    table = LoadTable()
    table.observe(beat(committed=100, active=2, releases=(Release(in_s=0.5, kw=50),)), 0.0)
    table.record_assignment("s1", 30.0)  # no estimate without the worker's time scale
    table.release_due(1.0)
    s = table.get("s1")
    assert s is not None
    assert promised_ratio(s) == pytest.approx((100 - 50 + 30) / 100)


def test_a_new_heartbeat_supersedes_the_releases_of_the_last() -> None:
    table = LoadTable()
    table.observe(beat(committed=100, active=2, releases=(Release(in_s=0.5, kw=50),)), 0.0)
    table.observe(beat(committed=100, active=2, seq=2), 0.2)  # its state says otherwise
    table.release_due(1.0)
    s = table.get("s1")
    assert s is not None
    assert s.committed_kw == 100
    assert table.next_release() is None


def test_superseded_releases_do_not_pile_up() -> None:
    # A worker heartbeating every 0.1 s, each time stating 64 releases up to an hour ahead
    table = LoadTable()
    far = tuple(Release(in_s=3000.0 + i, kw=1.0) for i in range(MAX_RELEASES))
    for seq in range(1, 500):
        table.observe(beat(committed=100, active=90, seq=seq, releases=far), seq * 0.1)
    # Only the last heartbeat's are live; the queue stays within a bound, not 500 x 64
    assert len(table._releases) <= 2 * MAX_RELEASES + 1024 + 1
    table.release_due(50 + 3000.0 + MAX_RELEASES)
    s = table.get("s1")
    assert s is not None
    assert s.committed_kw == pytest.approx(100 - MAX_RELEASES)


def test_releases_can_be_ignored() -> None:
    table = LoadTable(use_releases=False)
    table.observe(beat(committed=100, active=2, releases=(Release(in_s=0.5, kw=50),)), 0.0)
    table.release_due(1.0)
    s = table.get("s1")
    assert s is not None
    assert s.committed_kw == 100


def test_the_dispatcher_estimates_when_its_own_assignment_ends() -> None:
    # Given a worker at time x3600 (a kWh at 1 kW is one wall second) with room for the car
    table = LoadTable()
    table.observe(beat(committed=40, active=1, time_scale=3600.0), 0.0)
    # When a 20 kWh car of 50 kW is assigned at 2.0 s
    end = table.record_assignment("s1", 50.0, energy_kwh=20.0, now=2.0)
    # Then it ends 0.4 wall s later (plus the margin for its way to the worker)
    assert end == pytest.approx(2.0 + 0.4 + ASSIGNMENT_END_MARGIN_S)
    s = table.get("s1")
    assert s is not None
    assert (s.pending_kw, s.pending_count) == (50, 1)
    assert end is not None
    table.release_due(end)
    assert (s.pending_kw, s.pending_count) == (0, 0)


def test_an_assignment_still_in_transit_at_a_heartbeat_is_freed_when_it_ends() -> None:
    # Given a 20 kWh car of 50 kW assigned at 2.0 s: it ends 0.4 s later, by the estimate
    table = LoadTable()
    table.observe(beat(committed=40, active=1, time_scale=3600.0), 0.0)
    end = table.record_assignment("s1", 50.0, energy_kwh=20.0, now=2.0)
    assert end is not None
    # When a heartbeat sent before it arrived comes in at 2.1 s (it received nothing new)
    table.observe(beat(committed=40, active=1, seq=2, time_scale=3600.0), 2.1)
    # Then it is still pending, and its end still frees it
    s = table.get("s1")
    assert s is not None
    assert (s.pending_kw, s.pending_count) == (50, 1)
    assert table.next_release() == pytest.approx(end)
    table.release_due(end)
    assert (s.pending_kw, s.pending_count) == (0, 0)


def test_no_estimate_where_it_would_share_power_or_without_the_time_scale() -> None:
    table = LoadTable()
    table.observe(beat(committed=80, active=1, time_scale=3600.0), 0.0)
    # 80 + 50 > 100 kW: it would share power, so its end is not told
    assert table.record_assignment("s1", 50.0, energy_kwh=20.0, now=1.0) is None
    table.observe(beat("s2", committed=0), 0.0)  # an older worker: no time scale
    assert table.record_assignment("s2", 50.0, energy_kwh=20.0, now=1.0) is None


def test_a_held_request_is_placed_when_a_release_is_due() -> None:
    # Two substations full at 1 x; one frees 50 kW at 0.3 s after its heartbeat
    table = LoadTable(rng=random.Random(0))
    table.observe(beat("a", committed=100, active=2), 0.0)
    table.observe(beat("b", committed=100, active=2, releases=(Release(in_s=0.3, kw=50),)), 0.0)
    policy = Headroom(random.Random(0))
    assert policy.choose_in(table, 0.1, 50.0) is None
    assert table.next_release() == pytest.approx(0.3)
    assert policy.choose_in(table, 0.3, 50.0) == "b"


RELEASE = st.tuples(st.floats(0.0, 3.0), st.sampled_from([7.0, 50.0, 150.0]), st.integers(1, 3))


@settings(max_examples=200, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.sampled_from([150.0, 300.0, 600.0]),
            st.floats(0.0, 900.0),
            st.lists(RELEASE, max_size=5).map(lambda rs: sorted(rs)),
        ),
        max_size=12,
    ),
    times=st.lists(st.floats(0.0, 3.5), max_size=8).map(sorted),
    request_kw=st.sampled_from([7.0, 50.0, 150.0]),
    seed=st.integers(0, 2**16),
)
def test_the_index_follows_releases(
    specs: list[tuple[float, float, list[tuple[float, float, int]]]],
    times: list[float],
    request_kw: float,
    seed: int,
) -> None:
    # Given substations whose heartbeats predict releases
    table = LoadTable(rng=random.Random(seed))
    for i, (cap, committed, releases) in enumerate(specs):
        table.observe(
            beat(
                f"s{i}",
                capacity=cap,
                committed=committed,
                active=sum(n for _, _, n in releases) + 1,
                releases=tuple(Release(in_s=t, kw=kw, sessions=n) for t, kw, n in releases),
            ),
            0.0,
        )
    # Then at every later time the index finds what a scan of the freed states finds
    for now in times:
        found = table.least_promised(now, request_kw)
        scores = [promised_ratio(s, min(request_kw, s.capacity_kw), 1) for s in table.eligible(now)]
        if not scores:
            assert found is None
            continue
        assert found is not None
        assert found[1] == min(scores)
        # and what is freed is the releases due by now
        for i, (_, committed, releases) in enumerate(specs):
            s = table.get(f"s{i}")
            assert s is not None
            due = sum(kw for t, kw, _ in releases if t <= now)
            assert s.committed_kw == pytest.approx(max(0.0, committed - due), abs=1e-9)


def test_a_huge_substation_sharing_power_predicts_nothing_rather_than_stall() -> None:
    from substation_worker.simulation import MAX_SHARED_PREDICTION

    n = MAX_SHARED_PREDICTION + 1
    assert predict_ends(100.0, n, [(10.0, 50.0)] * n) == []  # sharing: not run forward
    # Within capacity nothing shares power, and any number is cheap to predict
    assert len(predict_ends(1e6, n, [(10.0, 50.0)] * n)) == n


# -- the dispatcher's retry ------------------------------------------------------------------


def test_the_dispatcher_retries_held_requests_when_a_release_is_due() -> None:
    import asyncio

    from prometheus_client import CollectorRegistry

    from dispatcher.metrics import DispatcherMetrics
    from dispatcher.service import Dispatcher
    from dispatcher.settings import DispatcherSettings

    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        d = Dispatcher(
            DispatcherSettings(),
            Headroom(random.Random(0)),
            DispatcherMetrics(CollectorRegistry()),
            clock=loop.time,
        )
        # A full substation that frees 50 kW 0.05 s after its heartbeat
        d.table.observe(beat(committed=100, active=2, releases=(Release(in_s=0.05, kw=50),)),
                        loop.time())  # fmt: skip
        due = d.table.next_release()
        assert due is not None
        pumped: list[float] = []
        d._pump = lambda: pumped.append(loop.time())  # type: ignore[method-assign]
        d._wake_at_next_release(loop.time())
        d._wake_at_next_release(loop.time())  # one timer, not two
        # What is checked is that only one pump happens: four times the release's 0.05 s, time
        # for its timer, and a second one were there one, to fire.
        await asyncio.sleep(0.2)
        assert all(t >= due for t in pumped)
        return pumped

    assert len(asyncio.run(scenario())) == 1


def test_the_dispatcher_uses_releases_only_while_holding_at_capacity() -> None:
    from prometheus_client import CollectorRegistry

    from dispatcher.service import build_dispatcher
    from dispatcher.settings import DispatcherSettings

    def uses(**settings: object) -> bool:
        d = build_dispatcher(DispatcherSettings(**settings), CollectorRegistry())  # type: ignore[arg-type]
        return d.table.use_releases

    assert uses()  # the default: hold at 1 x
    # Beyond capacity sessions share power and predicted ends come true late (bench.balance)
    assert not uses(hold_factor=2.0)
