"""Cars leave at their departure: the substation simulation with departures and a sharing.

Pure (no I/O): ``substation_worker.simulation.Substation`` driven by ``advance``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import SessionOutcome
from substation_worker.sharing import (
    SHARINGS,
    Car,
    Fair,
    Smartgrid,
    offline_optimum,
    random_sessions,
    sharing_named,
)
from substation_worker.simulation import Substation, predict_ends


def run(sub: Substation, until_s: float, step_s: float = 60.0) -> dict[str, tuple[float, str]]:
    """Advance ``sub`` to ``until_s``; each ended session's (delivered kWh, outcome)."""
    ended: dict[str, tuple[float, str]] = {}
    while sub.now_s < until_s:
        for s in sub.advance(min(step_s, until_s - sub.now_s)).completed:
            assert s.outcome is not None
            ended[s.key] = (s.delivered_kwh, s.outcome.value)
    return ended


def test_a_car_not_full_by_its_departure_leaves_then_with_what_it_got() -> None:
    # Given a 10 kW car that needs 50 kWh (5 h) but leaves after 2 h
    sub = Substation(100, 2)
    sub.offer("a", 50, 10, departure_s=7200)
    # When the substation runs for 3 h
    ended = run(sub, 3 * 3600)
    # Then it left at its departure with 2 h of energy
    delivered, outcome = ended["a"]
    assert outcome == "departed"
    assert delivered == pytest.approx(20.0)
    assert not sub.holds("a")


def test_a_car_full_before_its_departure_completes_full() -> None:
    sub = Substation(100, 2)
    sub.offer("a", 10, 10, departure_s=7200)
    ended = run(sub, 3 * 3600)
    assert ended["a"] == (pytest.approx(10.0), "full")


def test_a_car_whose_departure_passes_while_it_waits_for_a_bay_leaves_unserved() -> None:
    # Given one bay, taken for 5 h, and a second car that leaves after 1 h
    sub = Substation(100, 1)
    sub.offer("long", 50, 10)
    sub.offer("short", 10, 10, departure_s=3600)
    step = sub.advance(0)
    assert [s.key for s in step.started] == ["long"]
    # When 2 h pass
    ended = run(sub, 7200)
    # Then the waiting car left unserved, and never started
    assert ended["short"] == (0.0, "unserved")
    assert sub.waiting_count == 0


def test_a_car_offered_after_its_departure_leaves_unserved_at_once() -> None:
    sub = Substation(100, 2)
    sub.advance(600)
    sub.offer("late", 10, 10, departure_s=300)
    step = sub.advance(0)
    assert step.started == []
    (gone,) = step.completed
    assert gone.outcome is SessionOutcome.UNSERVED
    assert gone.delivered_kwh == 0


def test_departures_end_sessions_inside_a_coarse_step() -> None:
    # One step of 10 h: the departure inside it still ends the session at its time, and the
    # power it drew goes to the other car for the rest of the step.
    sub = Substation(20, 2)
    sub.offer("leaves", 100, 20, departure_s=3600)
    sub.offer("stays", 100, 20)
    step = sub.advance(10 * 3600)
    by_key = {s.key: s for s in step.completed}
    assert by_key["leaves"].completed_at_s == pytest.approx(3600)
    assert by_key["leaves"].delivered_kwh == pytest.approx(10.0)  # 10 kW for 1 h
    # stays: 10 kW for 1 h, then 20 kW: full (100 kWh) after 1 + 90/20 = 5.5 h
    assert by_key["stays"].completed_at_s == pytest.approx(5.5 * 3600)


def test_without_departures_every_sharing_behaves_as_fair() -> None:
    """Requests without a departure behave as before whatever the sharing."""
    ends = []
    for name in SHARINGS:
        sub = Substation(30, 2, sharing=sharing_named(name))  # type: ignore[arg-type]
        for i, kwh in enumerate((10, 20, 40)):
            sub.offer(f"c{i}", kwh, 22)
        finished: dict[str, float] = {}
        while sub.active_count or sub.waiting_count:
            for s in sub.advance(600).completed:
                assert s.outcome is SessionOutcome.FULL
                assert s.completed_at_s is not None
                finished[s.key] = round(s.completed_at_s, 6)
        ends.append(finished)
    # Shared fairly: 15 kW each; c0 full at 40 min, then c2 takes its bay.
    assert ends[0]["c0"] == pytest.approx(2400)
    assert all(e == ends[0] for e in ends)


@pytest.mark.parametrize("name", list(SHARINGS))
def test_every_sharing_stays_within_capacity_and_gives_nothing_after_departure(
    name: str,
) -> None:
    cars = random_sessions(seed=3, n=30, span_s=0.0)
    sub = Substation(60, 12, sharing=sharing_named(name))  # type: ignore[arg-type]
    for c in cars:
        assert c.departure_s is not None
        sub.offer(c.key, c.remaining_kwh, c.max_kw, departure_s=c.departure_s)
    ended: dict[str, float] = {}
    while sub.active_count or sub.waiting_count:
        assert sub.load_kw <= sub.capacity_kw + 1e-9
        for s in sub.active:
            assert s.power_kw <= s.max_power_kw + 1e-9
        for s in sub.advance(300).completed:
            assert s.completed_at_s is not None
            leaves = next(c.departure_s for c in cars if c.key == s.key)
            assert leaves is not None
            assert s.completed_at_s <= leaves + 1e-6
            assert s.delivered_kwh <= s.energy_kwh + 1e-9
            ended[s.key] = s.delivered_kwh
    assert set(ended) == {c.key for c in cars}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), share=st.sampled_from([0.1, 0.3, 0.6]))
def test_smartgrid_in_the_substation_delivers_the_offline_optimum_when_all_are_present(
    seed: int, share: float
) -> None:
    """With every car present from the start (as many bays as cars), the substation's
    re-planned smartgrid sharing delivers what the offline optimum delivers (to 0.1 %)."""
    cars = [
        Car(c.key, c.max_kw, c.remaining_kwh, c.departure_s, 0, 0.0)
        for c in random_sessions(seed, 12, span_s=0.0)
    ]
    capacity = share * sum(c.max_kw for c in cars)
    sub = Substation(capacity, len(cars), sharing=Smartgrid(first_step_s=600), replan_s=600)
    for c in cars:
        sub.offer(c.key, c.remaining_kwh, c.max_kw, departure_s=c.departure_s)
    ended = run(sub, 11 * 3600, step_s=900)
    delivered = math.fsum(kwh for kwh, _ in ended.values())
    optimum = math.fsum(offline_optimum(capacity, cars).values())
    assert delivered <= optimum * (1 + 1e-6)
    assert delivered >= optimum * (1 - 1e-3)


def test_predicted_ends_count_departures() -> None:
    # Nothing shares power: a car ends at whichever comes first, full or its departure.
    assert predict_ends(100, 4, [(10, 10), (50, 10)], departures=[None, 1800]) == [
        (1800, 1),
        (3600, 0),
    ]
    # Sharing fairly: the car that leaves frees its power to the other.
    ends = dict(
        (i, t) for t, i in predict_ends(10, 2, [(10, 10), (10, 10)], departures=[1800, None])
    )
    assert ends[0] == pytest.approx(1800)
    # 5 kW for 0.5 h (2.5 kWh), then 10 kW for the 7.5 kWh left: 0.75 h more.
    assert ends[1] == pytest.approx(1800 + 2700)


@pytest.mark.parametrize("name", list(SHARINGS))
@pytest.mark.parametrize(("capacity", "bays"), [(40.0, 6), (1000.0, 16)])
def test_predicted_ends_are_never_early(name: str, capacity: float, bays: int) -> None:
    """A release stated early lets the dispatcher promise power still drawn: every session
    ends at or before the time predicted for it, under contention (40 kW, cars waiting for
    bays) or not (a bay and full power for each)."""
    cars = random_sessions(seed=7, n=16, span_s=0.0)
    sub = Substation(capacity, bays, sharing=sharing_named(name))  # type: ignore[arg-type]
    for i, c in enumerate(cars):
        departure = c.departure_s if i % 2 else None
        sub.offer(c.key, c.remaining_kwh, c.max_kw, departure_s=departure)
    sub.advance(0)
    predicted = dict((key, t) for t, key in sub.predicted_ends())
    assert predicted  # departures at least are stated
    actual: dict[str, float] = {}
    while sub.active_count or sub.waiting_count:
        for s in sub.advance(600).completed:
            assert s.completed_at_s is not None
            actual[s.key] = s.completed_at_s
    for key, when in predicted.items():
        assert actual[key] <= when + 1e-6 * max(1.0, when), key
    if name == "fair" or bays == len(cars):
        # Exact: every end is stated, at its time.
        assert len(predicted) == len(cars)
        for key, when in predicted.items():
            assert actual[key] == pytest.approx(when, rel=1e-6, abs=1e-6), key


@dataclass
class Counting:
    """Fair sharing that counts how often it is asked."""

    name: str = "counting"
    periodic: bool = False
    calls: int = 0

    def share(
        self, capacity_kw: float, cars: Sequence[Car], now_s: float, horizon_s: float | None = None
    ) -> list[float]:
        self.calls += 1
        return Fair().share(capacity_kw, cars, now_s, horizon_s)


def test_a_burst_of_arrivals_is_planned_together_within_the_gap() -> None:
    # Given a substation that re-plans at most every 6 simulated seconds
    counting = Counting()
    sub = Substation(100, 50, sharing=counting, min_replan_gap_s=6.0)
    sub.offer("first", 10, 10)
    sub.advance(0)
    assert counting.calls == 1
    # When 40 more cars arrive one by one within a second, each advanced to as it comes
    for i in range(40):
        sub.advance(0.025)
        sub.offer(f"c{i}", 10, 10)
        sub.advance(0)
        assert sub.load_kw <= 100 + 1e-9
    # Then they wait for one plan at the end of the gap, drawing nothing until then
    assert counting.calls == 1
    assert sub.active_count == 41
    assert sub.load_kw == pytest.approx(10)
    sub.advance(6.0)
    assert counting.calls == 2
    assert sub.load_kw == pytest.approx(100)
