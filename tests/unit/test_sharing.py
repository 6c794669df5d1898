"""Sharings by departure, the offline optimum and the simulator: hand-checked cases."""

from __future__ import annotations

import math

import pytest

from substation_worker.sharing import (
    BASELINES,
    SHARINGS,
    Car,
    Smartgrid,
    offline_optimum,
    online_plan,
    simulate,
    usable_kw,
)

H = 3600.0
NAMES = sorted(SHARINGS)


def car(
    key: str,
    kwh: float,
    departure_h: float | None,
    *,
    kw: float = 10.0,
    priority: int = 0,
    arrival_h: float = 0.0,
) -> Car:
    return Car(
        key=key,
        max_kw=kw,
        remaining_kwh=kwh,
        departure_s=None if departure_h is None else departure_h * H,
        priority=priority,
        arrival_s=arrival_h * H,
    )


def test_the_four_sharings_are_offered_by_name() -> None:
    assert set(SHARINGS) == {"fair", "edf", "llf", "smartgrid"}
    for name, make in {**SHARINGS, **BASELINES}.items():
        assert make().name == name


@pytest.mark.parametrize(
    ("c", "now_h", "horizon_s", "expected"),
    [
        pytest.param(car("a", 5.0, 2.0), 0.0, None, 10.0, id="no-horizon-max"),
        pytest.param(car("a", 5.0, 2.0), 0.0, 3600.0, 5.0, id="fills-by-the-re-plan"),
        pytest.param(car("a", 50.0, 2.0), 0.0, 3600.0, 10.0, id="max-binds"),
        pytest.param(car("a", 5.0, 2.0), 2.0, 60.0, 0.0, id="left-at-departure"),
        pytest.param(car("a", 5.0, 2.0), 3.0, 60.0, 0.0, id="left-before"),
        pytest.param(car("a", 0.0, 2.0), 0.0, 60.0, 0.0, id="full"),
        pytest.param(car("a", 5.0, 2.0, arrival_h=1.0), 0.5, 60.0, 0.0, id="not-yet-arrived"),
        pytest.param(car("a", 5.0, None), 0.0, 1800.0, 10.0, id="no-departure"),
    ],
)
def test_usable_power(c: Car, now_h: float, horizon_s: float | None, expected: float) -> None:
    assert usable_kw(c, now_h * H, horizon_s) == pytest.approx(expected)


@pytest.mark.parametrize("name", NAMES)
def test_nobody_present_and_enough_for_everyone(name: str) -> None:
    sharing = SHARINGS[name]()
    assert sharing.share(100.0, [], 0.0) == []
    cars = [car("a", 20.0, 3.0), car("b", 5.0, 1.0, kw=7.0), car("c", 1.0, None)]
    assert sharing.share(100.0, cars, 0.0, 3600.0) == pytest.approx([10.0, 5.0, 1.0])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("capacity", "horizon_s", "message"),
    [
        pytest.param(-1.0, None, "capacity_kw", id="negative-capacity"),
        pytest.param(math.inf, None, "capacity_kw", id="infinite-capacity"),
        pytest.param(10.0, 0.0, "horizon_s", id="zero-horizon"),
    ],
)
def test_rejects_nonsense(
    name: str, capacity: float, horizon_s: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SHARINGS[name]().share(capacity, [car("a", 1.0, 1.0)], 0.0, horizon_s)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        pytest.param(car("a", -1.0, 1.0), "remaining_kwh", id="negative-need"),
        pytest.param(car("a", 1.0, 1.0, kw=math.nan), "max_kw", id="nan-power"),
        pytest.param(car("a", 1.0, math.inf), "departure_s", id="infinite-departure"),
        pytest.param(car("a", 1.0, 1.0, priority=10), "priority", id="priority-above-9"),
    ],
)
def test_rejects_a_nonsense_car(name: str, bad: Car, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SHARINGS[name]().share(10.0, [bad], 0.0)


def test_fair_is_water_filling_of_the_usable_power() -> None:
    cars = [car("a", 100.0, 1.0), car("b", 100.0, 9.0), car("c", 1.0, 5.0)]
    # c can use 2 kW until the re-plan in 30 min; a and b split the rest.
    assert SHARINGS["fair"]().share(12.0, cars, 0.0, 1800.0) == pytest.approx([5.0, 5.0, 2.0])


def test_edf_serves_the_earliest_departure_first_and_no_departure_last() -> None:
    cars = [car("late", 100.0, 8.0), car("none", 100.0, None), car("soon", 100.0, 2.0)]
    assert SHARINGS["edf"]().share(15.0, cars, 0.0) == pytest.approx([5.0, 0.0, 10.0])
    assert SHARINGS["edf"]().share(25.0, cars, 0.0) == pytest.approx([10.0, 5.0, 10.0])


def test_llf_serves_the_least_laxity_first() -> None:
    # "tight" leaves later but needs its whole window at full power: laxity 0 against 1 h.
    cars = [car("early", 10.0, 2.0), car("tight", 40.0, 4.0)]
    assert SHARINGS["llf"]().share(10.0, cars, 0.0) == pytest.approx([0.0, 10.0])
    assert SHARINGS["edf"]().share(10.0, cars, 0.0) == pytest.approx([10.0, 0.0])


def test_sorted_ties_go_to_the_higher_priority() -> None:
    cars = [car("low", 100.0, 2.0), car("high", 100.0, 2.0, priority=9)]
    assert SHARINGS["edf"]().share(10.0, cars, 0.0) == pytest.approx([0.0, 10.0])


def test_fcfs_serves_the_earliest_arrival_first() -> None:
    cars = [car("second", 100.0, 9.0, arrival_h=1.0), car("first", 100.0, 9.0)]
    assert BASELINES["fcfs"]().share(10.0, cars, 2.0 * H) == pytest.approx([0.0, 10.0])


def test_smartgrid_serves_the_car_that_cannot_wait() -> None:
    # 10 kW. "early" needs 10 kWh by 2 h; "slow" takes at most 2 kW and needs 8 kWh by 4 h, so
    # it must charge all the time. EDF serves "early" first and "slow" goes 2 kWh short; the plan
    # gives "slow" its 2 kW from the start and meets both.
    cars = [car("early", 10.0, 2.0), car("slow", 8.0, 4.0, kw=2.0)]
    assert Smartgrid().share(10.0, cars, 0.0, 60.0) == pytest.approx([8.0, 2.0])
    assert SHARINGS["edf"]().share(10.0, cars, 0.0, 60.0) == pytest.approx([10.0, 0.0])
    smart = simulate(10.0, cars, Smartgrid(), step_s=600.0)
    edf = simulate(10.0, cars, SHARINGS["edf"](), step_s=600.0)
    assert smart.energy_delivered_kwh == pytest.approx(18.0)
    assert edf.energy_delivered_kwh == pytest.approx(16.0)
    assert sum(offline_optimum(10.0, cars).values()) == pytest.approx(18.0)


def test_smartgrid_does_not_postpone_energy() -> None:
    # One car, plenty of time: it charges at full power now rather than later.
    assert Smartgrid().share(50.0, [car("a", 20.0, 10.0)], 0.0, 60.0) == pytest.approx([10.0])


def test_smartgrid_gives_the_shortfall_to_the_lower_priority() -> None:
    # 10 kW for 1 h, two cars each needing 10 kWh by then: only one can be met.
    cars = [car("low", 10.0, 1.0, priority=0), car("high", 10.0, 1.0, priority=5)]
    assert Smartgrid().share(10.0, cars, 0.0, 60.0) == pytest.approx([0.0, 10.0])
    plan = online_plan(10.0, cars, 0.0, 60.0)
    assert plan.delivered_kwh() == pytest.approx([0.0, 10.0])


def test_smartgrid_leaves_cars_without_departure_what_the_deadlines_do_not_need() -> None:
    cars = [car("deadline", 100.0, 10.0, kw=6.0), car("a", 100.0, None), car("b", 100.0, None)]
    assert Smartgrid().share(20.0, cars, 0.0, 60.0) == pytest.approx([6.0, 7.0, 7.0])


def test_smartgrid_without_any_departure_is_fair() -> None:
    cars = [car("a", 100.0, None), car("b", 0.1, None), car("c", 100.0, None, kw=3.0)]
    for horizon in (None, 60.0):
        assert Smartgrid().share(12.0, cars, 0.0, horizon) == SHARINGS["fair"]().share(
            12.0, cars, 0.0, horizon
        )


def test_smartgrid_plans_a_day_ahead_only() -> None:
    # Leaving in three days: what it gets within the day counts, at full power.
    plan = online_plan(100.0, [car("a", 1000.0, 72.0)], 0.0, 60.0)
    assert plan.bounds_s[-1] == pytest.approx(24 * H)
    assert plan.delivered_kwh() == pytest.approx([240.0])


def test_offline_optimum_and_what_fair_and_edf_deliver() -> None:
    # 10 kW. "long" (0-4 h, 30 kWh) and "brief" (2-3 h, 10 kWh): "brief" must have its hour to
    # itself and "long" the three others; then everything is delivered.
    cars = [car("long", 30.0, 4.0), car("brief", 10.0, 3.0, arrival_h=2.0)]
    assert offline_optimum(10.0, cars) == pytest.approx({"long": 30.0, "brief": 10.0})
    # Fair sharing splits the third hour: "brief" leaves with 5 kWh.
    fair = simulate(10.0, cars, SHARINGS["fair"](), step_s=60.0)
    assert fair.delivered_kwh == pytest.approx({"long": 30.0, "brief": 5.0})
    # EDF and smartgrid serve "brief" first, as the optimum does.
    for name in ("edf", "llf", "smartgrid"):
        outcome = simulate(10.0, cars, SHARINGS[name](), step_s=60.0)
        assert outcome.delivered_kwh == pytest.approx({"long": 30.0, "brief": 10.0}), name


def test_offline_optimum_steps_do_not_change_it() -> None:
    cars = [car(f"c{i}", 4.0 + i, 1.0 + i / 3, arrival_h=i / 7, kw=3.0 + i % 4) for i in range(12)]
    exact = offline_optimum(9.0, cars)
    stepped = offline_optimum(9.0, cars, step_s=60.0)
    # The most energy is one figure; how an optimum splits it among the cars is not unique.
    assert math.fsum(stepped.values()) == pytest.approx(math.fsum(exact.values()), rel=1e-9)
    assert all(stepped[c.key] <= c.remaining_kwh + 1e-9 for c in cars)


def test_offline_optimum_cars_without_departure_get_everything() -> None:
    cars = [car("a", 30.0, None), car("b", 30.0, 1.0)]
    assert offline_optimum(10.0, cars) == pytest.approx({"a": 30.0, "b": 10.0})


def test_offline_optimum_rejects_duplicate_keys() -> None:
    with pytest.raises(ValueError, match="unique"):
        offline_optimum(10.0, [car("a", 1.0, 1.0), car("a", 1.0, 1.0)])


def test_simulate_cars_leave_at_departure_full_or_not() -> None:
    cars = [car("short", 50.0, 1.0), car("full", 5.0, 4.0), car("no-departure", 25.0, None)]
    outcome = simulate(100.0, cars, SHARINGS["fair"](), step_s=60.0)
    assert outcome.delivered_kwh == pytest.approx(
        {"short": 10.0, "full": 5.0, "no-departure": 25.0}
    )
    assert outcome.met == {"short": False, "full": True, "no-departure": True}
    assert (outcome.demands, outcome.demands_met) == (3, 2)
    assert outcome.energy_requested_kwh == pytest.approx(80.0)
    assert outcome.peak_kw == pytest.approx(30.0)


def test_simulate_a_car_arriving_after_its_departure_gets_nothing() -> None:
    outcome = simulate(10.0, [car("a", 5.0, 1.0, arrival_h=2.0)], SHARINGS["edf"]())
    assert outcome.delivered_kwh == {"a": 0.0}
    assert outcome.met == {"a": False}


def test_simulate_ends_when_cars_without_departure_can_get_nothing() -> None:
    outcome = simulate(0.0, [car("a", 5.0, None), car("b", 5.0, 1.0)], Smartgrid())
    assert outcome.delivered_kwh == {"a": 0.0, "b": 0.0}
    assert outcome.peak_kw == 0.0


def test_simulate_bounds_its_re_plans() -> None:
    with pytest.raises(RuntimeError, match="re-plans"):
        simulate(1.0, [car("a", 100.0, None)], SHARINGS["fair"](), step_s=60.0, max_replans=10)


def test_the_plan_says_when_each_car_is_let_go() -> None:
    # 10 kW: "a" (5 kWh by 1 h) and "b" (10 kWh by 3 h) both fit; "c" needs nothing more. The
    # car with less time left goes first: "a" takes the first half hour and is let go then; "b"
    # charges from then on at full power, done at 1.5 h, so by the step ending at 2 h.
    cars = [car("a", 5.0, 1.0), car("b", 10.0, 3.0), car("c", 1e-15, 2.0)]
    plan = online_plan(10.0, cars, 0.0, 1800.0)
    assert plan.delivered_kwh() == pytest.approx([5.0, 10.0, 0.0], abs=1e-9)
    ends = plan.last_energy_s()
    assert ends[:2] == pytest.approx([0.5 * H, 2.0 * H])
    assert math.isnan(ends[2])
