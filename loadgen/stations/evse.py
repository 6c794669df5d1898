"""One EVSE (one connector) of a simulated station: Available, or Occupied by a car in a
transaction. No clock, no I/O: the station passes simulated times in.

The car wants min(limit, EVSE max, car max), where the limit is its transaction's TxProfile, else
the EVSE's TxDefaultProfile, else none. The station may scale that down (its
ChargingStationMaxProfile, ``share``). It stops drawing when it holds what it came for (its need).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from loadgen.stations.meter import Meter

# Ended transactions whose metered energy an EVSE keeps (the oldest are forgotten first).
ENDED_KEPT = 10_000


class EvseStatus(Enum):
    AVAILABLE = "Available"
    OCCUPIED = "Occupied"


class EvseBusy(Exception):
    """A transaction asked of an EVSE that has one already."""


@dataclass(frozen=True)
class Car:
    need_wh: float
    max_w: float


@dataclass
class Transaction:
    transaction_id: str
    car: Car
    meter: Meter
    remote_start_id: int | None = None
    limit_w: float | None = None  # its TxProfile's; None: it has none
    seq_no: int = 0  # the next TransactionEvent's seqNo
    started_at_s: float = 0.0
    id_token: dict[str, Any] | None = None
    departure_s: float | None = None  # simulated time the driver leaves, if they said

    def next_seq_no(self) -> int:
        seq, self.seq_no = self.seq_no, self.seq_no + 1
        return seq


@dataclass
class Evse:
    evse_id: int
    max_w: float
    transaction: Transaction | None = None
    # The TxDefaultProfile's limit that applies here (the EVSE's own, else the station's).
    default_limit_w: float | None = None
    # Totals of the ended transactions (counts, not a list: a station may run for days).
    sessions_ended: int = 0
    energy_ended_wh: float = 0.0
    last_ended: Transaction | None = None
    # transaction id: Wh metered, for the last ENDED_KEPT ended transactions.
    ended: OrderedDict[str, float] = field(default_factory=OrderedDict)

    @property
    def status(self) -> EvseStatus:
        return EvseStatus.AVAILABLE if self.transaction is None else EvseStatus.OCCUPIED

    @property
    def power_w(self) -> float:
        return 0.0 if self.transaction is None else self.transaction.meter.power_w

    @property
    def limit_w(self) -> float | None:
        """The profile limit a car here is held to from now: its TxProfile, else the default."""
        tx = self.transaction
        if tx is not None and tx.limit_w is not None:
            return tx.limit_w
        return self.default_limit_w

    def wanted_w(self) -> float:
        """What the car would draw with no station max: min(limit, EVSE max, car max)."""
        tx = self.transaction
        if tx is None or tx.meter.full:
            return 0.0
        limit = self.limit_w
        limit = self.max_w if limit is None else limit
        return max(0.0, min(limit, self.max_w, tx.car.max_w))

    def draw(self, at_s: float, share: float = 1.0) -> None:
        """From ``at_s`` the car draws ``share`` (0..1) of what it wants."""
        if self.transaction is not None:
            self.transaction.meter.set_power(self.wanted_w() * share, at_s)

    def start(
        self,
        transaction_id: str,
        car: Car,
        at_s: float,
        remote_start_id: int | None = None,
        limit_w: float | None = None,
        id_token: dict[str, Any] | None = None,
        departure_s: float | None = None,
    ) -> Transaction:
        if self.transaction is not None:
            raise EvseBusy(f"EVSE {self.evse_id} has transaction {self.transaction.transaction_id}")
        tx = Transaction(
            transaction_id,
            car,
            Meter(at_s, cap_wh=car.need_wh),
            remote_start_id=remote_start_id,
            limit_w=limit_w,
            started_at_s=at_s,
            id_token=id_token,
            departure_s=departure_s,
        )
        self.transaction = tx
        self.draw(at_s)
        return tx

    def set_limit(self, limit_w: float | None, at_s: float) -> bool:
        """The TxProfile's limit from ``at_s`` on; False when there is no transaction."""
        tx = self.transaction
        if tx is None:
            return False
        tx.limit_w = limit_w
        self.draw(at_s)
        return True

    def advance(self, at_s: float) -> bool:
        """Meter up to ``at_s``; True when the car is full (it draws nothing from then on)."""
        tx = self.transaction
        if tx is None:
            return False
        tx.meter.advance(at_s)
        return tx.meter.full

    def stop(self, at_s: float) -> Transaction | None:
        """End the transaction at ``at_s`` (metered up to then); the EVSE is Available again."""
        tx = self.transaction
        if tx is None:
            return None
        tx.meter.set_power(0.0, at_s)
        self.transaction = None
        self.sessions_ended += 1
        self.energy_ended_wh += tx.meter.energy_wh
        self.last_ended = tx
        self.ended[tx.transaction_id] = tx.meter.energy_wh
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)
        return tx
