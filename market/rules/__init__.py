"""Clearing rules; importing this package registers them by name."""

from market.rules.locational import locational
from market.rules.merit_order import pay_as_bid, pay_as_clear

__all__ = ["locational", "pay_as_bid", "pay_as_clear"]
