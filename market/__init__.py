"""The local flexibility market: messages, order book, clearing rules, settlement.

Sign convention (the one place it is written): **positive power is consumption at a bus**
(load convention), in kW and kvar. Flexibility is a deviation from the seller's own
baseline in a :class:`~market.messages.Direction`:

* ``up`` = more injection / less consumption: an ``up`` award of ``p_kw`` *lowers* the
  seller's consumption by ``p_kw`` (delivered = baseline - metered);
* ``down`` = less injection / more consumption: a ``down`` award of ``p_kw`` *raises* it
  by ``p_kw`` (delivered = metered - baseline).

Quantities in messages (``p_kw``, ``q_kvar``) are therefore non-negative magnitudes; the
direction carries the sign. Prices are in EUR per kWh (kvarh) of energy: an award of
``p_kw`` over ``duration_h`` hours costs ``p_kw * duration_h * price_eur_per_kwh``.
Times are UTC-aware datetimes; intervals are ``[t_start, t_end)``.

Ties, in every rule: lower price first, then the earlier row of the
:class:`~market.book.OrderBook` (submission order), then the bid id; never randomness.

Modules: :mod:`~market.messages` (pydantic models at the edge), :mod:`~market.slots`
(slot alignment), :mod:`~market.book` (columnar bids), :mod:`~market.registry` (rules by
name), :mod:`market.rules` (``pay_as_bid``, ``pay_as_clear``, ``locational``,
``iterative_price``), :mod:`~market.settlement`. Clearing and settlement are pure
functions: no I/O, no clock, no framework.
"""

from market import rules
from market.book import OrderBook
from market.messages import (
    Award,
    Bid,
    ClearingResult,
    Direction,
    FlexRequest,
    SettlementLine,
    SettlementReport,
)
from market.registry import ClearingRule, available_rules, clear, get_rule, register_rule
from market.rules import PriceResponder, TruthfulResponder
from market.settlement import MeterReading, SettlementArrays, settle, settle_arrays
from market.slots import MarketConfig, check_aligned, is_aligned

__all__ = [
    "Award",
    "Bid",
    "ClearingResult",
    "ClearingRule",
    "Direction",
    "FlexRequest",
    "MarketConfig",
    "MeterReading",
    "OrderBook",
    "PriceResponder",
    "SettlementArrays",
    "SettlementLine",
    "SettlementReport",
    "TruthfulResponder",
    "available_rules",
    "check_aligned",
    "clear",
    "get_rule",
    "is_aligned",
    "register_rule",
    "rules",
    "settle",
    "settle_arrays",
]
