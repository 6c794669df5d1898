"""One EVSE (one connector) of a simulated station: Available, or Occupied by a car in a
transaction. No clock, no I/O: the station passes simulated times in.

The car draws min(TxProfile limit, EVSE max, car max); without a limit, min(EVSE max, car max).
It stops drawing when it holds what it came for (its need).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from loadgen.stations.meter import Meter


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
    limit_w: float | None = None
    seq_no: int = 0  # the next TransactionEvent's seqNo
    started_at_s: float = 0.0

    def next_seq_no(self) -> int:
        seq, self.seq_no = self.seq_no, self.seq_no + 1
        return seq


@dataclass
class Evse:
    evse_id: int
    max_w: float
    transaction: Transaction | None = None
    # Totals of the ended transactions (counts, not a list: a station may run for days).
    sessions_ended: int = 0
    energy_ended_wh: float = 0.0
    last_ended: Transaction | None = None

    @property
    def status(self) -> EvseStatus:
        return EvseStatus.AVAILABLE if self.transaction is None else EvseStatus.OCCUPIED

    @property
    def power_w(self) -> float:
        return 0.0 if self.transaction is None else self.transaction.meter.power_w

    def _drawn_w(self, tx: Transaction) -> float:
        limit = self.max_w if tx.limit_w is None else tx.limit_w
        return max(0.0, min(limit, self.max_w, tx.car.max_w))

    def start(
        self,
        transaction_id: str,
        car: Car,
        at_s: float,
        remote_start_id: int | None = None,
        limit_w: float | None = None,
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
        )
        tx.meter.set_power(self._drawn_w(tx), at_s)
        self.transaction = tx
        return tx

    def set_limit(self, limit_w: float | None, at_s: float) -> bool:
        """The TxProfile's limit from ``at_s`` on; False when there is no transaction."""
        tx = self.transaction
        if tx is None:
            return False
        tx.limit_w = limit_w
        tx.meter.set_power(self._drawn_w(tx), at_s)
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
        return tx
