"""The service's only calls into the market's clearing and settlement.

The clearing rule and the settlement are pure functions of market messages, shared unchanged
with the simulator (STYLE.md, rule 2); this module turns stored rows into those messages and
back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from market import (
    Award,
    Bid,
    ClearingResult,
    FlexRequest,
    MeterReading,
    OrderBook,
    SettlementReport,
    clear,
    settle,
)
from service.config import ServiceConfig

__all__ = ["latest_versions", "run_clearing", "run_settlement"]


def latest_versions(bids: Sequence[Bid]) -> list[Bid]:
    """Keep only the highest version of each ``(seller_id, bid_id)``, in a stable order."""
    best: dict[tuple[str, str], Bid] = {}
    for bid in bids:
        key = (bid.seller_id, bid.bid_id)
        if key not in best or bid.version > best[key].version:
            best[key] = bid
    return sorted(best.values(), key=lambda b: (b.seller_id, b.bid_id))


def run_clearing(
    rule: str, requests: Sequence[FlexRequest], bids: Sequence[Bid], params: dict[str, Any]
) -> ClearingResult:
    """Clear ``bids`` against ``requests`` with the market's registered ``rule``."""
    book = OrderBook.from_bids(latest_versions(bids))
    return clear(rule, list(requests), book, params=params or None)


def run_settlement(
    awards: Sequence[Award],
    readings: Sequence[MeterReading],
    config: ServiceConfig,
) -> SettlementReport:
    """Settle awards against meter readings with the market's settlement.

    Args:
        awards: the round's awards.
        readings: one per metered asset of the slot, with the seller's declared baseline.
        config: penalty factor and the tolerance inside which delivery is ``ok``.
    """
    return settle(
        awards,
        readings,
        penalty_factor=config.penalty_factor,
        tolerance=config.non_delivery_tolerance,
    )
