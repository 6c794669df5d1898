"""The flood bench's pure parts: percentiles, the flood schedule, the phases, the tables and
verdicts, the timing wrappers. No broker."""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from bench.flood.instrument import Recorder, TimedIndexedPolicy, TimedPolicy, timed_policy
from bench.flood.load import fake_heartbeat
from bench.flood.report import (
    PhaseFigures,
    heartbeats_table,
    percentile,
    ratio,
    requests_table,
    verdicts,
)
from bench.flood.schedule import (
    DRAIN,
    fake_ids,
    flood_schedule,
    phase_at,
    plan_phases,
    requests_in,
)
from contracts import Heartbeat
from dispatcher.load_table import LoadTable
from dispatcher.policies import Headroom, RoundRobin


def test_percentile_is_nearest_rank() -> None:
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.5], 99) == 7.5
    assert percentile([], 99) is None
    # With 10 values, p99 is the largest: one outlier decides it
    assert percentile([1] * 9 + [1000], 99) == 1000
    with pytest.raises(ValueError, match="within"):
        percentile([1], 101)


def test_ratio_needs_both_figures() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None


def test_the_first_round_sends_every_id_once_within_1_5_s() -> None:
    slices = flood_schedule(5_000, 15.0)
    first = [s for s in slices if s.round == 0]
    ids = [i for s in first for i in range(s.lo, s.hi)]
    assert sorted(ids) == list(range(5_000))
    assert max(s.at_s for s in first) < 1.5
    # evenly: no slice much bigger than another
    sizes = [s.hi - s.lo for s in first]
    assert max(sizes) - min(sizes) <= 1


def test_then_every_id_again_every_second_until_the_phase_ends() -> None:
    slices = flood_schedule(5_000, 15.0)
    assert [s.at_s for s in slices] == sorted(s.at_s for s in slices)
    assert all(0 <= s.at_s < 15.0 for s in slices)
    per_round = Counter[int]()
    for s in slices:
        per_round[s.round] += s.hi - s.lo
    # rounds 1..13 complete (1.5 s + 13 s), round 14 starts at 14.5 s and is cut at 15 s
    assert [per_round[r] for r in range(14)] == [5_000] * 14
    assert per_round[14] == 2_500
    assert max(per_round) == 14
    # each id's heartbeats, from round 1 on, exactly one period apart
    times: dict[int, list[float]] = {}
    for s in slices:
        for i in range(s.lo, s.hi):
            times.setdefault(i, []).append(s.at_s)
    for i in (0, 1_234, 4_999):
        later = times[i][1:]
        gaps = [b - a for a, b in itertools.pairwise(later)]
        assert all(g == pytest.approx(1.0) for g in gaps)


def test_a_phase_shorter_than_the_first_round_cuts_it() -> None:
    slices = flood_schedule(1_000, 0.75)
    assert {s.round for s in slices} == {0}
    assert all(s.at_s < 0.75 for s in slices)
    assert sum(s.hi - s.lo for s in slices) == 500
    assert flood_schedule(0, 10.0) == []
    assert flood_schedule(100, 0.0) == []
    with pytest.raises(ValueError, match="positive"):
        flood_schedule(100, 10.0, period_s=0)


def test_fake_ids_are_distinct_seeded_and_valid_substation_ids() -> None:
    ids = fake_ids(5_000, 7)
    assert len(set(ids)) == 5_000
    assert ids == fake_ids(5_000, 7)
    assert ids != fake_ids(5_000, 8)
    beat = Heartbeat.model_validate_json(fake_heartbeat(ids[0], 3))
    assert beat.substation_id == ids[0]
    assert beat.seq == 3
    assert abs(beat.sent_at - datetime.now(UTC)) < timedelta(seconds=5)
    at = datetime(2026, 12, 1, 23, 0, 0, 123456, tzinfo=UTC)
    again = Heartbeat.model_validate_json(fake_heartbeat(ids[1], 12_345, at))
    assert (again.substation_id, again.seq, again.sent_at) == (ids[1], 12_345, at)
    assert again.capacity_kw == 100_000


def test_phases_follow_each_other_and_label_offsets() -> None:
    phases = plan_phases(3, 15, 15, 5)
    assert [(p.name, p.start_s, p.end_s) for p in phases] == [
        ("warmup", 0, 3),
        ("quiet", 3, 18),
        ("flood", 18, 33),
        ("after", 33, 38),
    ]
    assert phase_at(phases, 0.0) == "warmup"
    assert phase_at(phases, 2.999) == "warmup"
    assert phase_at(phases, 3.0) == "quiet"
    assert phase_at(phases, 18.0) == "flood"
    assert phase_at(phases, 37.9) == "after"
    assert phase_at(phases, 38.0) == DRAIN
    with pytest.raises(ValueError, match="cannot last"):
        plan_phases(1, -1, 1, 1)


def test_requests_in_counts_what_a_fixed_rate_sends() -> None:
    assert requests_in(38, 200) == 7_600
    assert requests_in(0.5, 3) == 2  # due at 0 and 1/3 s
    assert requests_in(0, 200) == 0


def _phase(name: str, p99: float, dispatch_p99: float, **kw: object) -> PhaseFigures:
    base: dict[str, object] = {
        "seconds": 15.0, "sent": 3_000, "completed": 3_000, "decisions": 3_000,
        "decision_p50_us": p99 / 3, "decision_p99_us": p99, "decision_max_us": p99 * 4,
        "dispatch_p50_ms": dispatch_p99 / 4, "dispatch_p99_ms": dispatch_p99, "table_max": 3,
        "eligible_min": 3,
    }  # fmt: skip
    base.update(kw)
    return PhaseFigures(name, **base)  # type: ignore[arg-type]


def test_the_requests_table_shows_ratios_to_the_quiet_phase() -> None:
    quiet = _phase("quiet", 40.0, 10.0)
    flood = _phase("flood", 60.0, 25.0, failed=2)
    empty = PhaseFigures("after", 5.0)
    lines = requests_table([quiet, flood, empty], quiet)
    assert len(lines) == 4
    assert lines[0].split()[0] == "phase"
    assert "3,000 / 3,000" in lines[1]
    assert "1.00x" in lines[1]
    assert "1.50x" in lines[2]  # decision p99
    assert lines[2].count("-") >= 2  # no CPU figures: dashes
    assert "2.50x" in lines[2]  # dispatch p99
    assert "(2 failed)" in lines[2]
    assert "-" in lines[3].split()  # no figures: dashes, no crash


def test_the_heartbeats_table_shows_refusals_by_outcome_and_cpu() -> None:
    flood = _phase(
        "flood", 60.0, 25.0, fake_published=70_000, heartbeats=70_045, heartbeat_mean_us=20.0,
        heartbeat_busy_pct=9.5, refused={"rate": 68_000, "no_queue": 2_000, "full": 0},
        probes=1_700, probe_p99_ms=950.0, cpu_pct=35.0,
        others_cpu_pct={"broker": 60.0, "load": 40.0},
    )  # fmt: skip
    (header, row) = heartbeats_table([flood])
    assert "refused rate / no_queue / full" in header
    assert "68,000 / 2,000 / 0" in row
    assert "70,000" in row
    assert "9.5%" in row
    assert "1,700 (950.0)" in row
    assert "35 / 60 / 40 / -" in row  # the workers' CPU unknown


def test_verdicts_say_met_or_missed() -> None:
    quiet = _phase("quiet", 40.0, 10.0)
    good = _phase("flood", 79.0, 20.0)
    met = verdicts(quiet, good, [quiet, good], real=3, fake_queues=0, fake_probed=5_000,
                   table_at_end=3)  # fmt: skip
    assert all(v.met for v in met), [v.line() for v in met]
    assert met[0].line().startswith("met")
    assert "1.98x" in met[0].line()

    slow = _phase("flood", 81.0, 20.0, completed=2_999)
    missed = verdicts(quiet, slow, [quiet, slow], real=3, fake_queues=12, fake_probed=5_000,
                      table_at_end=3)  # fmt: skip
    assert [v.met for v in missed] == [False, False, False, True]
    assert missed[0].line().startswith("MISSED")
    unknown = verdicts(quiet, good, [quiet, good], real=3, fake_queues=None, fake_probed=0,
                       table_at_end=4)  # fmt: skip
    assert not unknown[2].met
    assert "not checked" in unknown[2].detail
    assert not unknown[3].met


def _table() -> LoadTable:
    table = LoadTable(3)
    now = time.monotonic()
    for sid, kw, bays in (("s150", 150, 16), ("s300", 300, 32), ("s600", 600, 64)):
        table.observe(
            Heartbeat(substation_id=sid, capacity_kw=kw, bays=bays, load_kw=0,
                      active_sessions=0, queued=0, seq=1, assignments_received=0),
            now,
        )  # fmt: skip
    return table


def test_the_timed_policy_records_every_decision_in_the_current_phase() -> None:
    recorder = Recorder("quiet")
    policy = timed_policy(Headroom(random.Random(1)), recorder)
    assert isinstance(policy, TimedIndexedPolicy)
    assert policy.name == "headroom"
    table = _table()
    now = time.monotonic()
    assert policy.choose_in(table, now, 11.0) in {"s150", "s300", "s600"}
    assert recorder.records["quiet"].decisions_cpu_ns[0] >= 0
    assert policy.choose(table.eligible(now), 11.0) in {"s150", "s300", "s600"}
    recorder.switch("flood", time.monotonic(), time.process_time(), {"rate": 5.0})
    assert policy.choose_in(LoadTable(3), now, 11.0) is None  # nothing eligible: held
    quiet, flood = recorder.records["quiet"], recorder.records["flood"]
    assert len(quiet.decisions_ns) == 2
    assert quiet.holds == 0
    assert all(ns > 0 for ns in quiet.decisions_ns)
    assert quiet.ended > 0
    assert flood.refused_start == {"rate": 5.0}
    assert (len(flood.decisions_ns), flood.holds) == (1, 1)


def test_a_policy_without_an_index_is_timed_through_choose() -> None:
    recorder = Recorder("quiet")
    policy = timed_policy(RoundRobin(random.Random(1)), recorder)
    assert type(policy) is TimedPolicy
    assert getattr(policy, "choose_in", None) is None  # decider then takes the eligible list
    assert policy.choose(_table().eligible(time.monotonic()), 11.0) == "s150"
    assert len(recorder.records["quiet"].decisions_ns) == 1
