"""When nacks mean the channel, not the messages.

A nack says the broker could not store a message (a full queue with reject-publish): the
publisher may try again. But RabbitMQ 3.10 can also nack every publish of one channel to one
quorum queue when the channel first published there just after that queue's leader node was
killed: the channel keeps the dead leader until it closes, and retrying on it never succeeds,
while its publishes to other queues are acked. Nothing in a nack tells the two apart; a
destination (exchange and routing key) that has had only nacks for a while, no ack among them,
is taken to be the second kind and the channel is given up (a new connection, as after any
loss, costs a redelivery at worst).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Both must hold: one multiple-nack covers a whole window of publishes at once, and a short
# burst of nacks during a leader election is followed by acks on a healthy channel.
STREAK_NACKS = 3
STREAK_S = 0.5


@dataclass
class _Streak:
    """One destination's nacks since its last ack: how many, from when (monotonic s)."""

    count: int
    since: float


@dataclass
class NackStreaks:
    """One channel's streaks by destination; ``nacked`` says when to give the channel up."""

    nacks: int = STREAK_NACKS
    span_s: float = STREAK_S
    _by_destination: dict[str, _Streak] = field(default_factory=dict)

    def __bool__(self) -> bool:
        """Whether any destination has a streak (acks then have one to end)."""
        return bool(self._by_destination)

    def acked(self, destination: str) -> None:
        self._by_destination.pop(destination, None)

    def nacked(self, destination: str, count: int, now: float) -> bool:
        """``count`` publishes to ``destination`` nacked at ``now`` (monotonic s): True once
        it has had only nacks, at least ``nacks`` of them, for at least ``span_s``."""
        streak = self._by_destination.setdefault(destination, _Streak(0, now))
        streak.count += count
        return streak.count >= self.nacks and now - streak.since >= self.span_s

    def describe(self, destination: str, now: float) -> str:
        streak = self._by_destination.get(destination, _Streak(0, now))
        return (
            f"{streak.count} publishes to {destination} nacked in a row over "
            f"{now - streak.since:.1f}s, none acked"
        )
