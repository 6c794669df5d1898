"""bench.charging's pure parts: cars from a trace, simulate's told form, ACN-Sim's round robin,
the target checks on hand-made tables, and a tiny run on the light day."""

from __future__ import annotations

import math

import pytest

from bench.charging import grid
from bench.charging.__main__ import day_lines
from bench.charging.suite import (
    ALGORITHMS,
    OPTIMUM,
    POOLED,
    SHARING_NAMES,
    SPLIT,
    Cell,
    Day,
    DayResult,
    GridRow,
    Row,
    above_optimum,
    cars_from_trace,
    days,
    grid_targets,
    replan_target,
    run,
    targets,
)
from loadgen.demand import Demand
from loadgen.profiles import TraceRow
from substation_worker.sharing import (
    BASELINES,
    SHARINGS,
    Car,
    RoundRobin,
    random_sessions,
    simulate,
)

H = 3600.0
ALL = {**SHARINGS, **BASELINES}


def row(
    arrival_s: float,
    kwh: float,
    dwell_h: float | None,
    stated_kwh: float | None = None,
    stated_h: float | None = None,
    line: int = 1,
) -> TraceRow:
    return TraceRow(
        arrival_s, Demand(f"TRACE-{line:05d}", kwh, 6.656), dwell_h, stated_kwh, stated_h
    )


def car(
    key: str, kwh: float, departure_h: float | None, *, kw: float = 10.0, arrival_h: float = 0.0
) -> Car:
    departure = None if departure_h is None else departure_h * H
    return Car(key, kw, kwh, departure, 0, arrival_h * H)


# -- cars from a trace --------------------------------------------------------------------------


def test_cars_from_trace_true_form() -> None:
    rows = [row(100.0, 12.5, 2.0, 30.0, 1.0, line=1), row(200.0, 3.0, None, line=2)]
    assert cars_from_trace(rows, stated=False) == [
        Car("TRACE-00001", 6.656, 12.5, 100.0 + 2 * H, 0, 100.0),
        Car("TRACE-00002", 6.656, 3.0, None, 0, 200.0),
    ]


def test_cars_from_trace_stated_form_takes_the_truth_where_nothing_was_stated() -> None:
    rows = [
        row(100.0, 12.5, 2.0, 30.0, 1.0, line=1),
        row(200.0, 3.0, 4.0, line=2),
        row(300.0, 5.0, 4.0, stated_kwh=8.0, line=3),
        row(400.0, 5.0, 4.0, stated_h=0.5, line=4),
    ]
    assert [
        (c.key, c.remaining_kwh, c.departure_s) for c in cars_from_trace(rows, stated=True)
    ] == [
        ("TRACE-00001", 30.0, 100.0 + 1 * H),
        ("TRACE-00002", 3.0, 200.0 + 4 * H),
        ("TRACE-00003", 8.0, 300.0 + 4 * H),
        ("TRACE-00004", 5.0, 400.0 + 0.5 * H),
    ]


# -- simulate, told -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL))
def test_told_the_truth_changes_nothing(name: str) -> None:
    cars = random_sessions(3, 12)
    plain = simulate(20.0, cars, ALL[name](), step_s=300.0)
    told = simulate(20.0, cars, ALL[name](), step_s=300.0, told=list(reversed(cars)))
    assert told.delivered_kwh == pytest.approx(plain.delivered_kwh, abs=1e-9)
    assert told.met == plain.met
    assert told.peak_kw == pytest.approx(plain.peak_kw)


def test_told_less_energy_the_car_gets_what_was_stated() -> None:
    cars = [car("a", 10.0, 4.0)]
    outcome = simulate(100.0, cars, SHARINGS["fair"](), told=[car("a", 4.0, 4.0)])
    assert outcome.delivered_kwh == pytest.approx({"a": 4.0})
    assert outcome.requested_kwh == {"a": 10.0}
    assert outcome.met == {"a": False}


def test_told_more_energy_the_car_stops_when_really_full_and_frees_the_power() -> None:
    # 10 kW for two cars of 10 kW: "a" really needs 1 kWh but is told 20; "b" needs 9 kWh by
    # 1 h. Fair gives each 5 kW; "a" is full at 12 min, and from then "b" takes all 10 kW: by
    # 1 h it has 1 + 8 = 9 kWh. Without a re-plan at "a"'s completion, "b" would miss it.
    cars = [car("a", 1.0, 4.0), car("b", 9.0, 1.0)]
    told = [car("a", 20.0, 4.0), car("b", 9.0, 1.0)]
    outcome = simulate(10.0, cars, SHARINGS["fair"](), step_s=3600.0, told=told)
    assert outcome.delivered_kwh == pytest.approx({"a": 1.0, "b": 9.0})
    assert outcome.met == {"a": True, "b": True}


def test_told_departures_order_edf_and_the_car_still_leaves_at_its_own() -> None:
    # 10 kW, both need 10 kWh. "a" truly leaves at 1 h, "b" at 2 h, but EDF is told the
    # reverse: it serves "b" first, so "a" leaves with nothing, and "b" is full at 1 h.
    cars = [car("a", 10.0, 1.0), car("b", 10.0, 2.0)]
    told = [car("a", 10.0, 3.0), car("b", 10.0, 0.5)]
    outcome = simulate(10.0, cars, SHARINGS["edf"](), step_s=60.0, told=told)
    assert outcome.delivered_kwh == pytest.approx({"a": 0.0, "b": 10.0}, abs=1e-9)
    truth = simulate(10.0, cars, SHARINGS["edf"](), step_s=60.0)
    assert truth.delivered_kwh == pytest.approx({"a": 10.0, "b": 10.0})


def test_told_a_car_staying_past_its_told_departure_keeps_charging() -> None:
    # Told it leaves at 0.5 h, the car stays 2 h: once its told departure has passed it is told
    # it leaves within a step, and charges on until full.
    outcome = simulate(
        10.0, [car("a", 15.0, 2.0)], SHARINGS["smartgrid"](), told=[car("a", 15.0, 0.5)]
    )
    assert outcome.delivered_kwh == pytest.approx({"a": 15.0})


def test_told_must_name_the_same_cars() -> None:
    with pytest.raises(ValueError, match="told"):
        simulate(10.0, [car("a", 1.0, 1.0)], SHARINGS["fair"](), told=[car("b", 1.0, 1.0)])
    with pytest.raises(ValueError, match="told"):
        simulate(10.0, [car("a", 1.0, 1.0)], SHARINGS["fair"](), told=[])


# -- round robin -------------------------------------------------------------------------------


def test_round_robin_is_offered_as_a_baseline() -> None:
    assert BASELINES["round-robin"]().name == "round-robin"
    assert "round-robin" not in SHARINGS


def test_round_robin_whole_rounds_then_arrival_order() -> None:
    # Increments of 0.3 kW within 1 kW: "a" can use 0.1 only. One round: 0.1 + 0.3 + 0.3; the
    # next, "b" (arrived first of the two) takes 0.3 more, "c"'s does not fit: it stays at 0.3.
    rr = RoundRobin(increment_kw=0.3)
    cars = [
        car("a", 0.1 * 60 / 3600, 1.0, arrival_h=0.0),
        car("b", 5.0, 1.0, arrival_h=0.1),
        car("c", 5.0, 1.0, arrival_h=0.2),
    ]
    assert rr.share(1.0, cars, 0.25 * H, 60.0) == pytest.approx([0.1, 0.6, 0.3])


def test_round_robin_leaves_less_than_an_increment_per_car_idle() -> None:
    rr = RoundRobin(increment_kw=0.3)
    cars = [car(k, 5.0, 1.0) for k in "abc"]
    assert rr.share(1.0, cars, 0.0, 60.0) == pytest.approx([0.3, 0.3, 0.3])
    # A car's last increment is what fills it: "c" can use 0.35, and its last 0.05 fits in the
    # 0.1 left, where the whole increments of "a" and "b" do not.
    cars = [car("a", 5.0, 1.0), car("b", 5.0, 1.0), car("c", 0.35 * 60 / 3600, 1.0)]
    assert rr.share(1.0, cars, 0.0, 60.0) == pytest.approx([0.3, 0.3, 0.35])


@pytest.mark.parametrize("seed", range(5))
def test_round_robin_is_near_fair_within_capacity_and_usable(seed: int) -> None:
    cars = random_sessions(seed, 20)
    now = 5 * H
    rr = RoundRobin()
    for capacity in (0.0, 5.0, 30.0, 1000.0):
        shares = rr.share(capacity, cars, now, 60.0)
        fair = SHARINGS["fair"]().share(capacity, cars, now, 60.0)
        assert math.fsum(shares) <= capacity + 1e-9
        for c, kw in zip(cars, shares, strict=True):
            assert 0.0 <= kw <= c.max_kw
            assert kw * 60.0 / 3600.0 <= c.remaining_kwh + 1e-12
            if c.arrival_s > now or (c.departure_s is not None and c.departure_s <= now):
                assert kw == 0.0
        assert math.fsum(fair) - math.fsum(shares) <= len(cars) * rr.increment_kw + 1e-9


# -- targets on hand-made tables ----------------------------------------------------------------


def cells(**energy: float) -> dict[str, Cell]:
    """A row's cells: the energies given, 0.1 for the others."""
    base = {n: Cell(0.1, 0.5, 1.0 if n != OPTIMUM else None) for n in ALGORITHMS}
    return base | {n: Cell(e, 0.5, None if n == OPTIMUM else 1.0) for n, e in energy.items()}


def result(*rows: Row) -> DayResult:
    day = Day("2019-10-29", "Tuesday", "x.csv", 3, 30.0, 20.0)
    return DayResult(day, Cell(1.0, 1.0, 20.0), list(rows))


def test_targets_met() -> None:
    table = result(
        Row("2019-10-29", "true", 0.1, 2.0, cells(optimum=0.4, smartgrid=0.396, edf=0.39)),
        Row("2019-10-29", "stated", 0.1, 2.0, cells(optimum=0.4, smartgrid=0.38, llf=0.38)),
        Row("2019-10-29", "true", 0.2, 4.0, cells(optimum=0.8, smartgrid=0.8, llf=0.8)),
    )
    found = targets([table])
    assert [t.met for t in found] == [True, True, True, True]
    assert "worst 0.990 x (2019-10-29 at 10%" in found[0].figure
    assert above_optimum([table]) == []


def test_targets_missed_say_where_and_by_how_much() -> None:
    table = result(
        # 0.38 / 0.4 = 0.95 of the optimum, and below EDF's 0.39: both true-deadline targets.
        Row("2019-10-29", "true", 0.1, 2.0, cells(optimum=0.4, smartgrid=0.38, edf=0.39)),
        Row("2019-10-29", "true", 0.2, 4.0, cells(optimum=0.8, smartgrid=0.8)),
        # Below LLF with stated deadlines.
        Row("2019-10-29", "stated", 0.2, 4.0, cells(optimum=0.8, smartgrid=0.6, llf=0.65)),
    )
    optimum, true_sorted, stated_sorted, bound = targets([table])
    assert not optimum.met
    assert "worst 0.950 x (2019-10-29 at 10%" in optimum.figure
    assert "below at 1 of 2" in optimum.figure
    assert not true_sorted.met
    assert "worst -0.0100" in true_sorted.figure
    assert "edf 0.390" in true_sorted.figure
    assert not stated_sorted.met
    assert "worst -0.0500" in stated_sorted.figure
    assert "llf 0.650" in stated_sorted.figure
    assert bound.met


def test_a_sharing_above_the_optimum_is_a_bug() -> None:
    table = result(Row("2019-10-29", "stated", 0.3, 6.0, cells(optimum=0.7, fcfs=0.71)))
    bugs = above_optimum([table])
    assert len(bugs) == 1
    assert "fcfs delivered 0.710000 > optimum 0.700000 (2019-10-29 at 30%, stated" in bugs[0]
    assert not targets([table])[-1].met
    # Within the numerical slack it is equal, not above.
    assert (
        above_optimum([result(Row("d", "true", 0.3, 6.0, cells(optimum=0.7, edf=0.7000001)))]) == []
    )


def test_replan_target() -> None:
    assert replan_target({20: 3.0, 60: 19.9, 200: 80.0}).met
    missed = replan_target({20: 3.0, 60: 25.0, 200: 80.0})
    assert not missed.met
    assert missed.figure.startswith("25.00 ms")
    assert not replan_target({}).met


# -- end to end on the light day ----------------------------------------------------------------


def test_a_tiny_run_on_the_light_day() -> None:
    (light,) = days(only=["2019-11-27"])
    (done,) = run([light], jobs=1, shares=(0.3,))
    assert done.uncontrolled.energy == pytest.approx(1.0)
    assert done.uncontrolled.met == 1.0
    # Simulated, a car spreads its last bit over its last step, which ends at the next arrival at
    # the latest: never above the continuous-time peak; on this day, the same.
    assert done.uncontrolled.peak_kw == pytest.approx(light.uncontrolled_peak_kw, abs=1e-6)
    assert [r.form for r in done.rows] == ["true", "stated"]
    for r in done.rows:
        assert r.capacity_kw == pytest.approx(0.3 * light.uncontrolled_peak_kw)
        assert set(r.cells) == {OPTIMUM, *SHARING_NAMES}
        for name in SHARING_NAMES:
            c = r.cells[name]
            assert c.energy <= r.cells[OPTIMUM].energy + 1e-6
            assert c.peak_kw is not None
            assert c.peak_kw <= r.capacity_kw + 1e-9
            assert 0.0 < c.energy <= 1.0
            assert 0.0 <= c.met <= 1.0
    true_row = done.rows[0]
    assert above_optimum([done]) == []
    lines = day_lines(done, "true")
    assert lines[0].split() == ["true", "deadlines", "30%"]
    assert lines[2].split()[:2] == ["energy", "optimum"]
    assert lines[2].split()[2] == f"{true_row.cells[OPTIMUM].energy:.3f}"
    with pytest.raises(ValueError, match="2000-01-01"):
        days(only=["2000-01-01"])


# -- three substations ------------------------------------------------------------------------


def test_a_car_held_without_deadlines_leaves_unserved_at_its_departure() -> None:
    """headroom + fair holds a car while no substation has room for its max power; held past
    its departure it leaves unserved. smartgrid promises each what fills it by then (5 kW and
    1.7 kW) and sends it at once: both are met."""
    cars = [
        Car("first", 10.0, 40.0, 8 * H, 0, 0.0),  # at its max, 10 kW: all the room there is
        Car("second", 10.0, 5.0, 3 * H, 0, 60.0),  # gone before the first is full, at 4 h
    ]
    # One substation of 10 kW (the whole split on one)
    held = grid.run_grid(10.0, cars, "headroom+fair", split=(1.0,))
    assert held.sent_to["second"] is None
    assert held.delivered_kwh["second"] == 0.0
    met = grid.run_grid(10.0, cars, "smartgrid", split=(1.0,))
    assert met.sent_to["second"] == 0
    assert met.delivered_kwh["second"] == pytest.approx(5.0)
    assert met.energy() <= grid.pooled_optimum(10.0, cars) + 1e-6


def test_three_substations_never_deliver_more_than_the_split_or_pooled_optimum() -> None:
    cars = random_sessions(seed=5, n=16, span_s=4 * H)
    peak = sum(c.max_kw for c in cars)
    for share in (0.25,):
        bound = grid.pooled_optimum(share * peak, cars)
        split = grid.split_optimum(share * peak, cars)
        assert split.proven
        assert split.best_kwh <= split.bound_kwh <= bound * (1 + 1e-6)
        for name in grid.GRIDS:
            out = grid.run_grid(share * peak, cars, name)
            assert out.energy() <= split.bound_kwh * (1 + 1e-6), name
            assert all(v is not None for v in out.sent_to.values()) or name == "headroom+fair"
            for c in cars:
                assert out.delivered_kwh[c.key] <= c.remaining_kwh + 1e-9


def test_split_optimum_on_one_substation_is_the_offline_optimum() -> None:
    cars = random_sessions(seed=2, n=12, span_s=3 * H)
    capacity = 0.3 * sum(c.max_kw for c in cars)
    found = grid.split_optimum(capacity, cars, split=(1.0,))
    assert found.proven
    assert found.best_kwh == pytest.approx(grid.pooled_optimum(capacity, cars), rel=1e-6)
    assert found.bound_kwh == pytest.approx(found.best_kwh, rel=1e-3)


def test_split_optimum_a_car_is_held_to_its_substation() -> None:
    """One 6 kW car needing 6 kWh within an hour: all of 6 kW pooled fills it; split 3 + 3,
    it draws from one substation only, 3 kWh."""
    cars = [Car("a", 6.0, 6.0, 1 * H, 0, 0.0)]
    assert grid.pooled_optimum(6.0, cars) == pytest.approx(6.0)
    found = grid.split_optimum(6.0, cars, split=(0.5, 0.5))
    assert found.best_kwh == pytest.approx(3.0)
    assert found.bound_kwh == pytest.approx(3.0, rel=1e-3)


def test_split_optimum_places_cars_apart_when_that_delivers_more() -> None:
    """Two cars over the same hour, 3 kW each, on 3 + 3 kW: one on each gets both full (6 kWh);
    any dispatch that put both on one would deliver 3."""
    cars = [Car("a", 3.0, 3.0, 1 * H, 0, 0.0), Car("b", 3.0, 3.0, 1 * H, 0, 0.0)]
    found = grid.split_optimum(6.0, cars, split=(0.5, 0.5))
    assert found.best_kwh == pytest.approx(6.0)


def test_split_optimum_counts_cars_without_departure_in_full() -> None:
    cars = [Car("free", 6.0, 20.0, None, 0, 0.0), Car("a", 6.0, 6.0, 1 * H, 0, 0.0)]
    found = grid.split_optimum(6.0, cars, split=(0.5, 0.5))
    assert found.best_kwh == pytest.approx(23.0)


def test_grid_targets_say_where_smartgrid_falls_short() -> None:
    rows = [
        GridRow(
            "d", 0.1, 10.0, {POOLED: 0.5, SPLIT: 0.45, "smartgrid": 0.44, "headroom+fair": 0.4}
        ),
        GridRow("d", 0.3, 30.0, {POOLED: 1.0, SPLIT: 1.0, "smartgrid": 0.9, "headroom+fair": 0.95}),
    ]
    pooled, beats, bug = grid_targets(rows)
    assert not pooled.met
    assert "0.880 x (d at 10%" in pooled.figure
    # At 10 % the split optimum is 0.9 x pooled: no dispatch reaches 0.95 x there.
    assert "unreachable by any dispatch at 1 of them" in pooled.figure
    assert "least 0.900 x at d at 10%" in pooled.figure
    assert "below where reachable at 1" in pooled.figure
    assert not beats.met
    assert "behind at 1 of 2" in beats.figure
    assert bug.met


def test_a_grid_above_the_split_optimum_is_a_bug() -> None:
    rows = [
        GridRow("d", 0.1, 10.0, {POOLED: 0.5, SPLIT: 0.4, "smartgrid": 0.45, "headroom+fair": 0.4})
    ]
    *_, bug = grid_targets(rows)
    assert not bug.met
    assert "smartgrid 0.450000 > split optimum (d at 10%)" in bug.figure
