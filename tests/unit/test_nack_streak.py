"""When a channel is given up for its nacks (messaging.nack_streak)."""

from __future__ import annotations

from messaging.nack_streak import NackStreaks

TO_S1 = "grid.substations/s1"
TO_S2 = "grid.substations/s2"


def test_only_nacks_for_long_enough_and_enough_of_them_give_the_channel_up() -> None:
    streaks = NackStreaks(nacks=3, span_s=0.5)
    assert not streaks.nacked(TO_S1, 1, 10.0)
    assert not streaks.nacked(TO_S1, 1, 10.4)
    assert not streaks.nacked(TO_S1, 1, 10.45)  # three, but only 0.45 s
    assert streaks.nacked(TO_S1, 1, 10.5)
    assert streaks.describe(TO_S1, 10.5).startswith(
        f"4 publishes to {TO_S1} nacked in a row over 0.5s"
    )


def test_one_multiple_nack_of_a_whole_window_is_not_yet_a_streak() -> None:
    streaks = NackStreaks(nacks=3, span_s=0.5)
    assert not streaks.nacked(TO_S1, 1000, 10.0)
    assert streaks.nacked(TO_S1, 1, 10.6)


def test_an_ack_to_the_same_destination_ends_its_streak() -> None:
    streaks = NackStreaks(nacks=3, span_s=0.5)
    streaks.nacked(TO_S1, 5, 10.0)
    assert streaks
    streaks.acked(TO_S1)
    assert not streaks
    assert not streaks.nacked(TO_S1, 1, 10.6)  # a new streak starts here
    assert not streaks.nacked(TO_S1, 1, 10.7)
    assert streaks.nacked(TO_S1, 1, 11.1)


def test_acks_to_other_destinations_do_not_end_a_streak() -> None:
    """The stale leader of one quorum queue strikes only the publishes routed to it."""
    streaks = NackStreaks(nacks=3, span_s=0.5)
    assert not streaks.nacked(TO_S1, 1, 10.0)
    streaks.acked(TO_S2)
    assert not streaks.nacked(TO_S1, 1, 10.3)
    streaks.acked(TO_S2)
    assert streaks.nacked(TO_S1, 1, 10.6)
    assert not streaks.nacked(TO_S2, 1, 10.6)  # its own streak, just begun
