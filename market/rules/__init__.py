"""Clearing rules; importing this package registers them by name."""

from market.rules.iterative import (
    IterativeParams,
    PriceResponder,
    TruthfulResponder,
    iterative_price,
)
from market.rules.locational import LocationalParams, locational
from market.rules.merit_order import MeritOrderParams, pay_as_bid, pay_as_clear

__all__ = [
    "IterativeParams",
    "LocationalParams",
    "MeritOrderParams",
    "PriceResponder",
    "TruthfulResponder",
    "iterative_price",
    "locational",
    "pay_as_bid",
    "pay_as_clear",
]
