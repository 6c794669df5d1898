"""Arrival schedules and replay traces: seeded, shaped as documented, bad input refused."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from loadgen.profiles import (
    SPIKE_END,
    SPIKE_START,
    TraceError,
    arrivals,
    load_trace,
    mean_rate,
    planned_duration,
)

SAMPLE = Path(__file__).resolve().parents[2] / "loadgen" / "traces" / "sample.csv"


def test_steady_is_an_even_metronome() -> None:
    times = arrivals("steady", 200, random.Random(1), duration_s=30)
    assert len(times) == 6000
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
    assert gaps == {0.005}
    assert arrivals("steady", 50, random.Random(1), requests=3) == [0.0, 0.02, 0.04]


@pytest.mark.parametrize("profile", ["steady", "rush-hour", "spike"])
def test_requests_gives_exactly_that_many_sorted_and_seeded(profile: str) -> None:
    a = arrivals(profile, 100, random.Random(5), requests=1000)
    b = arrivals(profile, 100, random.Random(5), requests=1000)
    assert a == b
    assert len(a) == 1000
    assert a == sorted(a)
    assert a[0] >= 0
    assert a[-1] <= planned_duration(profile, 100, 1000)


def test_rush_hour_peaks_in_the_middle() -> None:
    span = 100.0
    times = arrivals("rush-hour", 100, random.Random(2), duration_s=span)
    fifths = [sum(1 for t in times if k * span / 5 <= t < (k + 1) * span / 5) for k in range(5)]
    assert fifths[2] > 2 * fifths[0]
    assert fifths[2] > 2 * fifths[4]
    # A Poisson count around its mean: 0.6 x 100/s x 100 s = 6000 (5 sigma is ~390).
    assert abs(len(times) - mean_rate("rush-hour", 100) * span) < 400


def test_spike_is_a_step_burst() -> None:
    span = 100.0
    times = arrivals("spike", 100, random.Random(3), duration_s=span)
    inside = sum(1 for t in times if SPIKE_START * span <= t < SPIKE_END * span)
    before = sum(1 for t in times if t < SPIKE_START * span)
    # Full rate for 20 s against a fifth of it for 40 s: ~2000 vs ~800.
    assert 1800 < inside < 2200
    assert 650 < before < 950


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requests": 10, "duration_s": 5.0}, "exactly one"),
        ({}, "exactly one"),
        ({"duration_s": -1.0}, "positive"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        arrivals("steady", 10, random.Random(0), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown profile"):
        arrivals("sawtooth", 10, random.Random(0), requests=1)


def test_the_shipped_sample_trace_replays() -> None:
    rows = load_trace(SAMPLE)
    assert len(rows) == 120
    assert [r.arrival_s for r in rows] == sorted(r.arrival_s for r in rows)
    assert any(r.dwell_h is None for r in rows)
    assert any(r.dwell_h for r in rows)
    assert all(1 <= r.demand.max_power_kw <= 500 and r.demand.energy_kwh > 0 for r in rows)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("arrival_s,energy_kwh\n1,2\n", "header lacks max_power_kw"),
        ("arrival_s,energy_kwh,max_power_kw\n1,abc,11\n", ":2: energy_kwh is not a number"),
        ("arrival_s,energy_kwh,max_power_kw\n1,20,11\n2,-5,11\n", ":3: energy_kwh"),
        ("arrival_s,energy_kwh,max_power_kw\n1,20,9000\n", "max_power_kw must be"),
        ("arrival_s,energy_kwh,max_power_kw,departure_h\n1,20,11,0\n", "departure_h"),
        ("arrival_s,energy_kwh,max_power_kw,stated_energy_kwh\n1,20,11,0\n", ":2: stated_energy"),
        ("arrival_s,energy_kwh,max_power_kw,stated_energy_kwh\n1,20,11,301\n", "stated_energy"),
        ("arrival_s,energy_kwh,max_power_kw,stated_departure_h\n1,20,11,-1\n", "stated_depart"),
        ("arrival_s,energy_kwh,max_power_kw,stated_departure_h\n1,20,11,x\n", "not a number"),
        ("arrival_s,energy_kwh,max_power_kw\n", "no rows"),
    ],
)
def test_bad_traces_name_the_row(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=message):
        load_trace(path)


def test_stated_columns_are_read_and_kept_and_optional(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "arrival_s,energy_kwh,max_power_kw,departure_h,stated_energy_kwh,stated_departure_h,note\n"
        "60,12.5,6.656,8.25,20,7.5,claimed\n"
        "0,7.5,6.656,4.5,,,not claimed\n"
    )
    unclaimed, claimed = load_trace(path)
    assert (claimed.stated_energy_kwh, claimed.stated_dwell_h) == (20.0, 7.5)
    assert (claimed.demand.energy_kwh, claimed.dwell_h) == (12.5, 8.25)
    assert (unclaimed.stated_energy_kwh, unclaimed.stated_dwell_h) == (None, None)
    # A trace without them has none
    assert all(r.stated_energy_kwh is None and r.stated_dwell_h is None for r in load_trace(SAMPLE))


def test_a_missing_trace_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read trace"):
        load_trace(tmp_path / "nope.csv")
