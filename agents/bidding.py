"""From an agent's alternatives to its offers: cost curves, blocks and bidding strategies.

An agent's truthful price for deviating from its plan is what the deviation costs *it*:
for a store, the stage cost plus optimal cost to go of the alternative action minus that
of the planned one (:class:`~agents.store.StoreAlternatives`): lost arbitrage, discomfort
avoided only at a higher bill, degradation. For curtailing PV it is the bill difference.

An agent offers the lower convex hull of its (deviation, extra cost) points as up to
``max_blocks`` divisible blocks, each priced at its incremental cost per kWh; a block
accepted in part costs the agent at most that price (the hull lies above the true cost
for convex costs and is exact at its vertices). A strategy then turns that cost into an
asked price.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "STRATEGIES",
    "CostBlocks",
    "hull_blocks",
    "learning_update",
    "strategy_price",
]

_EPS_KW = 1e-6


@dataclass(frozen=True)
class CostBlocks:
    """Offer blocks of a population: ``(n, max_blocks)`` arrays, zero quantity = no block.

    Attributes:
        quantity_kw: size of each block (deviation in the offered direction).
        cost_eur_per_kwh: the agent's own incremental cost of the block per kWh.
    """

    quantity_kw: np.ndarray
    cost_eur_per_kwh: np.ndarray


def hull_blocks(
    deviation_kw: np.ndarray, extra_cost_eur: np.ndarray, dt_h: float, max_blocks: int = 3
) -> CostBlocks:
    """Lower convex hull from the origin over each row's (deviation, extra cost) points.

    Args:
        deviation_kw: deviation of each alternative in the offered direction, shape (n, k);
            alternatives with deviation <= 0 or infinite cost are ignored.
        extra_cost_eur: cost of each alternative minus the plan's cost, shape (n, k).
        dt_h: slot length in hours (prices are per kWh).
        max_blocks: most hull segments offered; the last one ends at the largest deviation
            of the hull, so the whole flexibility is always offered.

    Returns:
        Blocks in order of increasing price.
    """
    n = deviation_kw.shape[0]
    usable = (deviation_kw > _EPS_KW) & np.isfinite(extra_cost_eur)
    x = np.where(usable, deviation_kw, np.nan)
    c = np.where(usable, np.maximum(extra_cost_eur, 0.0), np.nan)
    x_max = np.nanmax(np.where(usable, x, -np.inf), axis=1)
    quantity = np.zeros((n, max_blocks))
    price = np.zeros((n, max_blocks))
    at_x = np.zeros(n)
    at_c = np.zeros(n)
    active = np.isfinite(x_max) & (x_max > _EPS_KW)
    rows = np.arange(n)
    for b in range(max_blocks):
        ahead = usable & (x > at_x[:, None] + _EPS_KW)
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(ahead, (c - at_c[:, None]) / (x - at_x[:, None]), np.inf)
        if b == max_blocks - 1:
            # Last block: jump to the farthest point; priced at the steepest needed slope.
            target = np.where(ahead, x, -np.inf).argmax(axis=1)
        else:
            best = np.min(slope, axis=1, keepdims=True)
            # Among equal slopes, the farthest point (fewer, larger blocks).
            tied = np.isclose(slope, best, rtol=1e-9, atol=1e-12) & ahead
            target = np.where(tied, x, -np.inf).argmax(axis=1)
        has = active & ahead.any(axis=1)
        dx = np.where(has, x[rows, target] - at_x, 0.0)
        dc = np.where(has, c[rows, target] - at_c, 0.0)
        quantity[:, b] = dx
        with np.errstate(invalid="ignore", divide="ignore"):
            price[:, b] = np.where(has, dc / (dx * dt_h), 0.0)
        at_x = np.where(has, x[rows, target], at_x)
        at_c = np.where(has, c[rows, target], at_c)
    # Keep prices non-decreasing along a row (the last jump may average steeper segments).
    price = np.maximum.accumulate(np.where(quantity > 0, price, 0.0), axis=1)
    return CostBlocks(quantity_kw=quantity, cost_eur_per_kwh=price)


def _truthful(cost: np.ndarray, markup: np.ndarray) -> np.ndarray:
    return cost


def _markup(cost: np.ndarray, markup: np.ndarray) -> np.ndarray:
    return cost * (1.0 + markup)


STRATEGIES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "truthful": _truthful,
    "markup": _markup,
    "learning": _markup,
}
"""Bidding strategies by name: ``(cost_eur_per_kwh (n, b), markup (n,)) -> price``.

``truthful`` asks its cost; ``markup`` asks cost x (1 + markup) with a fixed margin;
``learning`` does the same with a margin it adapts from the public clearing prices and its
own awards (:func:`learning_update`)."""

STRATEGY_CODES = {name: code for code, name in enumerate(STRATEGIES)}


def strategy_price(
    strategy_code: np.ndarray, cost_eur_per_kwh: np.ndarray, markup: np.ndarray
) -> np.ndarray:
    """Asked price per row and block under each row's strategy."""
    price = cost_eur_per_kwh.copy()
    for name, code in STRATEGY_CODES.items():
        rows = strategy_code == code
        if rows.any():
            price[rows] = STRATEGIES[name](cost_eur_per_kwh[rows], markup[rows, None])
    return price


def learning_update(
    markup: np.ndarray,
    offered: np.ndarray,
    awarded: np.ndarray,
    *,
    step: float = 0.1,
    floor: float = 0.0,
    cap: float = 2.0,
) -> np.ndarray:
    """Adapt each learning agent's margin from its own outcome in the last round.

    An agent whose offer was fully taken raises its margin by ``step`` (the market would
    have paid more); one that offered and got nothing lowers it by ``step``; one that
    did not offer keeps it. This is a bandit-style rule on private outcomes only.
    """
    fully = offered & awarded
    missed = offered & ~awarded
    new = markup + step * fully - step * missed
    return np.clip(new, floor, cap)
