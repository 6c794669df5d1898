"""A replayed request's departure: its row's stay, run as fast as the replay's arrivals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loadgen.run import RunOptions, plan, replay_departure

SENT = datetime(2019, 10, 29, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("dwell_h", "speed", "after"),
    [
        (2.0, 1.0, timedelta(hours=2)),
        (2.0, 3600.0, timedelta(seconds=2)),
        (9.5, 60.0, timedelta(minutes=9.5)),
        (0.19, 36_000.0, timedelta(milliseconds=19)),
    ],
)
def test_the_departure_is_the_stay_divided_by_the_speed(
    dwell_h: float, speed: float, after: timedelta
) -> None:
    departure = replay_departure(SENT, dwell_h, speed)
    assert departure is not None
    assert abs(departure - (SENT + after)) < timedelta(microseconds=2)
    assert departure.tzinfo is not None


def test_a_row_without_departure_sends_none() -> None:
    assert replay_departure(SENT, None, 3600.0) is None


def test_the_plan_scales_arrivals_and_keeps_stays_in_trace_hours(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,energy_kwh,max_power_kw,departure_h\n7200,10,6.656,3\n0,5,7,\n")
    first, second = plan(RunOptions(profile="replay", trace=trace, speed=3600.0))
    assert (first.offset_s, first.dwell_h) == (0.0, None)
    assert (second.offset_s, second.dwell_h) == (2.0, 3.0)
    # Sent at its offset, the car leaves 3 s later: 3 trace hours at the same speed
    assert replay_departure(SENT, second.dwell_h, 3600.0) == SENT + timedelta(seconds=3)
