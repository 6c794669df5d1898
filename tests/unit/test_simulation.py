"""The substation simulation: exact schedules on small cases, invariants over a long random run."""

from __future__ import annotations

import random

import pytest

from substation_worker.simulation import ChargingSession, Substation


def run_until_idle(sub: Substation, dt: float, max_steps: int = 100_000) -> list[ChargingSession]:
    done: list[ChargingSession] = []
    for _ in range(max_steps):
        if not sub.active_count and not sub.waiting_count:
            return done
        done.extend(sub.advance(dt).completed)
    raise AssertionError("simulation did not drain")


def test_single_session_completes_at_the_right_time() -> None:
    sub = Substation(capacity_kw=100, bays=1)
    sub.offer("a", energy_kwh=10, max_power_kw=50)

    step = sub.advance(719)
    assert [s.key for s in step.started] == ["a"]
    assert step.completed == []
    assert sub.load_kw == pytest.approx(50)

    step = sub.advance(10)
    (done,) = step.completed
    assert done.delivered_kwh == pytest.approx(10)
    assert done.charge_time_s == pytest.approx(720)
    assert sub.load_kw == 0
    assert not sub.holds("a")


def test_power_is_reshared_within_one_coarse_step() -> None:
    # Given three sessions sharing 90 kW: 30 kW each until A (5 kWh) completes at 600 s,
    # then 45 kW each until B (10 kWh) completes at 1000 s, then C alone at 90 kW.
    sub = Substation(capacity_kw=90, bays=3)
    for key, kwh in [("A", 5), ("B", 10), ("C", 20)]:
        sub.offer(key, energy_kwh=kwh, max_power_kw=90)

    # When one step covers all three completions
    step = sub.advance(5_000)

    # Then each completes when its energy is in, exactly once
    times = {s.key: s.completed_at_s for s in step.completed}
    assert times == pytest.approx({"A": 600.0, "B": 1000.0, "C": 1400.0})
    assert {s.key: s.delivered_kwh for s in step.completed} == {"A": 5, "B": 10, "C": 20}
    assert sub.now_s == pytest.approx(5_000)


def test_freed_bay_goes_to_the_oldest_waiting_session_mid_step() -> None:
    sub = Substation(capacity_kw=50, bays=1)
    sub.offer("first", energy_kwh=5, max_power_kw=50)  # done at 360 s
    sub.offer("second", energy_kwh=5, max_power_kw=50)  # then 360 s more
    sub.offer("third", energy_kwh=5, max_power_kw=50)

    step = sub.advance(800)

    assert [s.key for s in step.started] == ["first", "second", "third"]
    assert [s.key for s in step.completed] == ["first", "second"]
    assert [s.started_at_s for s in step.started] == pytest.approx([0, 360, 720])
    assert sub.active[0].key == "third"
    assert sub.active[0].delivered_kwh == pytest.approx(50 * 80 / 3600)


def test_charger_caps_the_car() -> None:
    sub = Substation(capacity_kw=1_000, bays=2, charger_max_kw=150)
    sub.offer("truck", energy_kwh=100, max_power_kw=400)
    sub.offer("car", energy_kwh=10, max_power_kw=11)
    sub.admit()
    assert sub.load_kw == pytest.approx(161)
    assert sub.committed_kw == pytest.approx(161)


def test_counts_and_committed_power() -> None:
    sub = Substation(capacity_kw=100, bays=2)
    for i, kw in enumerate([50, 70, 80]):
        sub.offer(f"s{i}", energy_kwh=20, max_power_kw=kw)
    assert (sub.active_count, sub.waiting_count) == (0, 3)
    sub.admit()
    assert (sub.active_count, sub.waiting_count) == (2, 1)
    assert sub.committed_kw == pytest.approx(200)
    assert sub.load_kw == pytest.approx(100)
    assert [s.power_kw for s in sub.active] == pytest.approx([50, 50])


def test_duplicate_key_is_refused_while_held_and_accepted_after() -> None:
    sub = Substation(capacity_kw=100, bays=1)
    sub.offer("x", energy_kwh=1, max_power_kw=10)
    with pytest.raises(ValueError, match="already held"):
        sub.offer("x", energy_kwh=1, max_power_kw=10)
    run_until_idle(sub, 3600)
    sub.offer("x", energy_kwh=1, max_power_kw=10)
    assert sub.holds("x")


def test_reset_drops_everything_held() -> None:
    sub = Substation(capacity_kw=100, bays=1)
    sub.offer("a", energy_kwh=50, max_power_kw=50)
    sub.offer("b", energy_kwh=50, max_power_kw=50)
    sub.advance(60)

    dropped = sub.reset()

    assert sorted(s.key for s in dropped) == ["a", "b"]
    assert (sub.active_count, sub.waiting_count, sub.load_kw, sub.committed_kw) == (0, 0, 0, 0)
    assert not sub.holds("a")
    assert sub.advance(3600).completed == []


MEAN_KWH = 60.25  # of uniform(0.5, 120)


@pytest.mark.parametrize(
    ("capacity", "bays", "dt", "load", "steps"),
    [
        pytest.param(150.0, 3, 60.0, 0.9, 3_000, id="few-bays-fine-steps"),
        pytest.param(300.0, 8, 300.0, 0.9, 3_000, id="medium"),
        pytest.param(600.0, 40, 3600.0, 1.2, 1_000, id="overloaded-coarse-steps"),
    ],
)
def test_long_random_run_keeps_every_invariant(
    capacity: float, bays: int, dt: float, load: float, steps: int
) -> None:
    rng = random.Random(f"{capacity}-{bays}-{dt}")
    arrivals_per_s = load * capacity / 3600 / MEAN_KWH
    sub = Substation(capacity_kw=capacity, bays=bays)
    offered: list[str] = []
    requested: dict[str, float] = {}
    max_kw: dict[str, float] = {}
    started: list[str] = []
    completed: list[ChargingSession] = []
    completed_kwh = 0.0

    def energy_so_far() -> float:
        return sum(s.delivered_kwh for s in sub.active) + completed_kwh

    for _ in range(steps):
        step_s = dt * rng.uniform(0.1, 2.0)
        expected = arrivals_per_s * step_s
        for _ in range(int(expected) + (rng.random() < expected % 1)):
            key = f"r{len(offered)}"
            requested[key] = rng.uniform(0.5, 120)
            max_kw[key] = rng.uniform(3, 150)
            sub.offer(key, requested[key], max_kw[key])
            offered.append(key)
        before, t0 = energy_so_far(), sub.now_s

        step = sub.advance(step_s)

        started.extend(s.key for s in step.started)
        completed.extend(step.completed)
        completed_kwh += sum(s.delivered_kwh for s in step.completed)
        # The transformer is never overloaded, bays are never exceeded
        assert sub.load_kw <= capacity
        assert sub.active_count <= bays
        assert all(s.power_kw <= s.max_power_kw for s in sub.active)
        # Energy drawn in the step is at most what the capacity allows over that time
        assert energy_so_far() - before <= capacity * (sub.now_s - t0) / 3600 * (1 + 1e-9)

    assert len(offered) > 100
    step = sub.advance(1e9)
    started.extend(s.key for s in step.started)
    completed.extend(step.completed)
    assert (sub.active_count, sub.waiting_count) == (0, 0)
    # Every session completes exactly once, with exactly the energy it asked for
    assert sorted(s.key for s in completed) == sorted(offered)
    for s in completed:
        assert s.delivered_kwh == pytest.approx(requested[s.key], rel=1e-12)
        # ... and no faster than its own max power allows
        assert s.charge_time_s >= requested[s.key] / max_kw[s.key] * 3600 * (1 - 1e-9)
    # Bays were handed out first come, first served
    assert started == offered
