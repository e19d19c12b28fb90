"""Payment fees, pure and exact (micro-units).

- processing fee = floor(amount × bps / 10,000) (the settlement-fee rule of StateSet's core);
- network fee (USDC only) = a flat amount, never more than the payment itself;
- the merchant receives amount − fees; fees never exceed the amount.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FeeSchedule", "Fees", "fees_for"]


@dataclass(frozen=True)
class FeeSchedule:
    processing_bps: int = 0
    usdc_network_fee: int = 10_000  # 0.01 USDC, as in the Orders API's pay example


@dataclass(frozen=True)
class Fees:
    network: int
    processing: int

    @property
    def total(self) -> int:
        return self.network + self.processing


def fees_for(method: str, amount: int, schedule: FeeSchedule) -> Fees:
    network = min(schedule.usdc_network_fee, amount) if method == "usdc" else 0
    processing = min(amount * schedule.processing_bps // 10_000, amount - network)
    return Fees(network, processing)
