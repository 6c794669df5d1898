"""Spare power: what a substation's plan leaves unused (worker side, ``Heartbeat.spare``) and
where the dispatcher counts a car with a departure gets the most energy from it."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from contracts import Heartbeat
from contracts.messages import MAX_SPARE, MAX_SPARE_UNTIL_S
from dispatcher.load_table import LoadTable, SubstationState
from dispatcher.spare import counted_kwh, most_energy, shortlist
from substation_worker.sharing import Fair, Smartgrid
from substation_worker.simulation import Substation
from substation_worker.spare import SparePiece, merged, spare_profile, spare_to_wire

H = 3600.0


def smartgrid_sub(capacity_kw: float = 10.0, bays: int = 10) -> Substation:
    return Substation(capacity_kw, bays, 11.0, sharing=Smartgrid(), replan_s=60.0)


# -- the worker's profile ------------------------------------------------------------------------


def test_a_sharing_without_a_plan_states_none() -> None:
    sub = Substation(10.0, 4, 11.0, sharing=Fair())
    sub.offer("a", 10.0, 6.0, departure_s=2 * H)
    sub.advance(0.0)
    assert spare_profile(sub) is None
    assert spare_to_wire(None, 1.0) is None


def test_an_empty_substation_has_all_its_capacity_spare_for_good() -> None:
    assert spare_profile(smartgrid_sub()) == [SparePiece(math.inf, 10.0)]


def test_the_plan_leaves_what_its_cars_do_not_take_until_they_leave() -> None:
    """One car, 6 kW at most, needing 6 kWh by 2 h, on 10 kW: the plan gives it 6 kW for the
    first hour (energy early), so 4 kW are spare then, all 10 from then on."""
    sub = smartgrid_sub()
    sub.offer("a", 6.0, 6.0, departure_s=2 * H)
    sub.advance(0.0)
    pieces = spare_profile(sub)
    assert pieces is not None
    # However the plan spreads the 6 kWh over its 2 h, its cars take 6 kWh of the 20 there are
    planned = sum(
        (min(p.until_s, 2 * H) - start) * (10.0 - p.kw) / H
        for start, p in zip([0.0, *(q.until_s for q in pieces)], pieces, strict=False)
        if start < 2 * H
    )
    assert planned == pytest.approx(6.0, rel=1e-6)
    # energy early: the car's 6 kWh come in its first hour, at its 6 kW
    assert pieces[0].kw == pytest.approx(4.0)
    assert pieces[-1] == SparePiece(math.inf, 10.0)
    assert all(0.0 <= p.kw <= 10.0 for p in pieces)


def test_cars_without_departure_and_cars_waiting_count_as_drawing_throughout() -> None:
    sub = smartgrid_sub(capacity_kw=20.0, bays=2)
    sub.offer("undated", 100.0, 5.0)  # draws 5 kW until full
    sub.offer("dated", 2.0, 4.0, departure_s=4 * H)
    sub.offer("waiting", 50.0, 3.0, departure_s=8 * H)  # no bay: promised 50/8 > 3 -> 3 kW
    sub.advance(0.0)
    assert sub.waiting_count == 1
    pieces = spare_profile(sub)
    assert pieces is not None
    assert pieces[-1].kw == pytest.approx(20.0 - 5.0 - 3.0)
    assert max(p.kw for p in pieces) <= 12.0 + 1e-9


def test_merged_pieces_never_state_more_spare_than_there_is() -> None:
    pieces = [SparePiece(float(k + 1), float(k % 5)) for k in range(100)]
    out = merged(pieces, 8)
    assert len(out) == 8
    assert out[-1].until_s == 100.0
    start = 0.0
    for p in out:
        covered = [q for q in pieces if start < q.until_s <= p.until_s]
        assert p.kw == min(q.kw for q in covered)
        start = p.until_s
    # Equal neighbours are joined first, losing nothing
    assert merged([SparePiece(1.0, 2.0), SparePiece(2.0, 2.0), SparePiece(3.0, 1.0)], 8) == [
        SparePiece(2.0, 2.0),
        SparePiece(3.0, 1.0),
    ]


def test_on_the_wire_pieces_are_wall_seconds_and_the_last_lasts() -> None:
    pieces = [SparePiece(3600.0, 4.0), SparePiece(7200.0, 6.0), SparePiece(math.inf, 10.0)]
    wire = spare_to_wire(pieces, 3600.0)  # an hour per wall second
    assert wire is not None
    assert [(p.until_s, p.kw) for p in wire] == [(1.0, 4.0), (2.0, 6.0), (MAX_SPARE_UNTIL_S, 10.0)]


def test_a_heartbeat_carries_at_most_max_spare_pieces_and_an_older_one_none() -> None:
    base = dict(substation_id="s1", capacity_kw=100, bays=2, load_kw=0, active_sessions=0,
                queued=0, seq=0, assignments_received=0)  # fmt: skip
    assert Heartbeat.model_validate_json(json.dumps(base)).spare is None
    hb = Heartbeat(**base, spare=[{"until_s": 5, "kw": 40}])  # type: ignore[arg-type]
    assert Heartbeat.model_validate_json(hb.model_dump_json()) == hb
    for bad in ({"until_s": 0, "kw": 1}, {"until_s": 1, "kw": -1}, {"until_s": 1e9, "kw": 1}):
        with pytest.raises(ValidationError):
            Heartbeat(**base, spare=[bad])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="spare"):
        Heartbeat(**base, spare=[{"until_s": 1, "kw": 1}] * (MAX_SPARE + 1))  # type: ignore[arg-type]


# -- the dispatcher's count ----------------------------------------------------------------------


def state(
    sid: str,
    capacity_kw: float,
    committed_kw: float = 0.0,
    spare: tuple[tuple[float, float], ...] | None = None,
    *,
    bays: int = 10,
    active: int = 0,
    pending_kw: float = 0.0,
    last_seen: float = 0.0,
) -> SubstationState:
    return SubstationState(
        substation_id=sid, capacity_kw=capacity_kw, bays=bays, load_kw=0.0,
        committed_kw=committed_kw, active_sessions=active, queued=0, status="up", seq=1,
        interval_s=1.0, last_seen=last_seen, sent_at_ts=0.0, pending_kw=pending_kw, spare=spare,
    )  # fmt: skip


def test_without_a_profile_the_car_counts_on_capacity_less_committed() -> None:
    s = state("s", 10.0, committed_kw=7.0)
    # 3 kW spare for 2 h: 6 kWh of the 20 it needs
    assert counted_kwh(s, 20.0, 11.0, 2 * H, 0.0, 1.0) == pytest.approx(6.0)
    # its need caps it; its own maximum too
    assert counted_kwh(s, 4.0, 11.0, 2 * H, 0.0, 1.0) == pytest.approx(4.0)
    assert counted_kwh(state("e", 10.0), 50.0, 2.0, 2 * H, 0.0, 1.0) == pytest.approx(4.0)


def test_a_profile_counts_piece_by_piece_and_its_last_piece_lasts() -> None:
    s = state("s", 10.0, spare=((H, 0.0), (2 * H, 5.0)))
    # Nothing for an hour, 5 kW the next, 5 kW on: 5 + 5 kWh by 3 h
    assert counted_kwh(s, 100.0, 11.0, 3 * H, 0.0, 1.0) == pytest.approx(10.0)
    # Half an hour after the heartbeat the pieces are that much nearer
    assert counted_kwh(s, 100.0, 11.0, 1 * H, 0.5 * H, 1.0) == pytest.approx(2.5)
    # At time scale 60, a wall minute is an hour of charging
    t = state("t", 10.0, spare=((60.0, 4.0),))
    assert counted_kwh(t, 100.0, 11.0, 120.0, 0.0, 60.0) == pytest.approx(8.0)


def test_pending_assignments_and_full_bays_count_against_it() -> None:
    s = state("s", 10.0, spare=((H, 6.0),), pending_kw=2.0)
    assert counted_kwh(s, 100.0, 11.0, H, 0.0, 1.0) == pytest.approx(4.0)
    full = state("f", 10.0, spare=((H, 6.0),), bays=2, active=2)
    assert counted_kwh(full, 100.0, 11.0, H, 0.0, 1.0) == 0.0
    assert counted_kwh(s, 100.0, 11.0, 0.0, 0.0, 1.0) == 0.0  # gone already


def test_the_car_goes_where_it_counts_on_most_ties_to_the_least_promised() -> None:
    big_busy = state("big", 100.0, committed_kw=50.0, spare=((10 * H, 0.0),))
    small_free = state("small", 50.0, committed_kw=40.0, spare=((10 * H, 10.0),))
    # The big one is less promised (0.52 against 0.84), but its plan leaves nothing spare
    assert most_energy([big_busy, small_free], 20.0, 11.0, 2.0, 10 * H, 0.0, 1.0) is small_free
    # Where both give it all it needs, the least promised takes it
    both = [state("a", 100.0, committed_kw=10.0), state("b", 100.0, committed_kw=30.0)]
    assert most_energy(both, 20.0, 11.0, 2.0, 10 * H, 0.0, 1.0) is both[0]
    assert most_energy([], 20.0, 11.0, 2.0, 10 * H, 0.0, 1.0) is None


def test_the_load_table_keeps_a_heartbeats_spare() -> None:
    table = LoadTable()
    base = dict(substation_id="s1", capacity_kw=100, bays=2, load_kw=0, active_sessions=0,
                queued=0, seq=1, assignments_received=0)  # fmt: skip
    table.observe(Heartbeat(**base, spare=[{"until_s": 5, "kw": 40}]), 10.0)  # type: ignore[arg-type]
    found = table.get("s1")
    assert found is not None
    assert found.spare == ((5.0, 40.0),)


def test_no_profile_when_the_solver_finds_no_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    import substation_worker.spare as spare_module

    def failing(*args: object, **kwargs: object) -> object:
        raise RuntimeError("HiGHS found no optimal plan: test")

    sub = smartgrid_sub()
    sub.offer("a", 6.0, 6.0, departure_s=2 * H)
    sub.advance(0.0)
    monkeypatch.setattr(spare_module, "online_plan", failing)
    assert spare_profile(sub) is None


def test_the_cache_solves_once_per_re_plan_and_shifts_in_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import substation_worker.spare as spare_module

    solved: list[float] = []
    real = spare_module.online_plan

    def counting(*args: object, **kwargs: object) -> object:
        solved.append(1.0)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(spare_module, "online_plan", counting)
    sub = Substation(10.0, 4, 11.0, sharing=Smartgrid(), replan_s=600.0)
    sub.offer("a", 6.0, 6.0, departure_s=2 * H)
    sub.advance(0.0)
    cache = spare_module.SpareCache()
    fresh = cache.profile(sub)
    assert fresh is not None
    assert len(solved) == 1
    # Between re-plans (every 600 s) the same profile, 60 s nearer
    sub.advance(60.0)
    shifted = cache.profile(sub)
    assert len(solved) == 1
    assert shifted == [SparePiece(p.until_s - 60.0, p.kw) for p in fresh]
    # At the re-plan, solved anew
    sub.advance(600.0)
    assert cache.profile(sub) is not None
    assert len(solved) == 2


def test_where_its_promise_fits_it_goes_there_though_another_counts_more() -> None:
    """No over-commitment: a substation where the car's promise (2 kW) still fits is taken
    before one promised beyond its capacity, however much spare the latter's plan states."""
    fits = state("fits", 100.0, committed_kw=90.0, spare=((10 * H, 1.0),))
    over = state("over", 100.0, committed_kw=120.0, spare=((10 * H, 50.0),))
    assert most_energy([over, fits], 20.0, 11.0, 2.0, 10 * H, 0.0, 1.0) is fits
    # Where it fits nowhere, the most energy decides
    worse = state("worse", 100.0, committed_kw=150.0, spare=((10 * H, 0.5),))
    assert most_energy([worse, over], 20.0, 11.0, 2.0, 10 * H, 0.0, 1.0) is over


def test_the_shortlist_is_the_least_promised_of_the_tops_and_the_least_of_all() -> None:
    tops = [state(f"s{i}", 100.0 + i, committed_kw=float(i)) for i in range(40)]
    least = tops[0]
    found = shortlist(tops, least, 2.0, limit=5)
    assert [s.substation_id for s in found] == ["s0", "s1", "s2", "s3", "s4"]
    outside = state("x", 10.0, committed_kw=9.0)
    assert [s.substation_id for s in shortlist(tops[:2], outside, 2.0)] == ["x", "s0", "s1"]
