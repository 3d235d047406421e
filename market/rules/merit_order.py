"""Merit-order rules: ``pay_as_bid`` and ``pay_as_clear``.

Both select bids the same way; they differ only in what an accepted bid is paid.

Selection, per request in the documented request order (:mod:`market.rules._common`) and
per product (P against ``p_kw``, Q against ``q_kvar`` when the request asks for it):

1. A bid row *can serve* a request when it is eligible (same direction, interval covers
   the request's) and its bus is the request's bus, or has a positive sensitivity in the
   request's map for that product (``sensitivity_pu_per_kw`` / ``..._per_kvar``), or lies
   in the request's ``zone`` according to the ``bus_zones`` parameter.
2. Rows are taken cheapest first; ties by row (submission order). Rows asking more than
   the request's maximum price are never taken.
3. A kW (kvar) counts one-for-one wherever it is delivered: these rules ignore how much a
   kW at another bus moves the voltage; that is what ``locational`` is for. The buyer
   bounds the shortfall through its map: a kW at a bus whose sensitivity is a share f of
   the map's strongest does f of what ``p_kw`` assumes, so a buyer that lists only buses
   with f >= 0.3 (the DSO's default ``min_sensitivity_share``) gets at least 30 % of it.
4. A row is taken whole while it fits in the remaining need; the row that straddles the
   need is taken partially if the part is at least its minimum quantity; otherwise it is
   skipped and the next row that can be accepted is tried. Skipping a step of a curve bid
   skips its later steps too for that request: a step is bought only after the cheaper
   steps before it, so a bid's minimum (which sits on its first step) always holds.
5. Each row's quantity is used at most once per clearing call, across all requests; a row
   already accepted for a request may be topped up for a later one without a minimum.

Prices: ``pay_as_bid`` pays each row its ask; ``pay_as_clear`` pays every accepted row of
a request (and product) the highest accepted ask for that request, the marginal price.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from market.book import OrderBook
from market.messages import BusIndex, ClearingResult, FlexRequest
from market.registry import register_rule
from market.rules._common import (
    FloatArray,
    IntArray,
    RuleParams,
    assemble_awards,
    eligible_rows,
    parse_params,
    sorted_requests,
)

__all__ = ["MeritOrderParams", "pay_as_bid", "pay_as_clear"]


class MeritOrderParams(RuleParams):
    """Parameters of the merit-order rules.

    Attributes:
        bus_zones: bus -> zone label; a row at a bus in the request's ``zone`` can serve
            it. Empty by default (match by bus and positive sensitivity only).
    """

    bus_zones: dict[BusIndex, str] = Field(default_factory=dict)


def _greedy(
    candidates: IntArray,
    remaining: FloatArray,
    minimum: FloatArray,
    need: float,
    first_step: IntArray | None = None,
) -> tuple[IntArray, FloatArray, float]:
    """Fill ``need`` from ``candidates`` (already in merit order).

    Args:
        candidates: Rows, cheapest first.
        remaining: Quantity still available per book row.
        minimum: Smallest acceptable quantity per candidate (aligned with ``candidates``).
        need: Quantity to buy.
        first_step: Per book row, the row of its curve bid's first step
            (:meth:`OrderBook.first_step_row`); a skipped row's later steps are skipped
            too. ``None`` when the book has no curve bids.

    Returns:
        Accepted rows, their quantities (> 0), and the need left unserved.
    """
    quantity = remaining[candidates]
    minimum = minimum.copy() if first_step is not None else minimum
    tolerance = 1e-9 * max(1.0, need)
    taken_rows: list[IntArray] = []
    taken_qty: list[FloatArray] = []
    residual = need
    pos = 0
    n = candidates.shape[0]
    while residual > tolerance and pos < n:
        cumulative = np.cumsum(quantity[pos:])
        k = int(np.searchsorted(cumulative, residual - tolerance, side="left"))
        if k > 0:
            taken_rows.append(candidates[pos : pos + k])
            taken_qty.append(quantity[pos : pos + k])
            residual -= float(cumulative[k - 1])
        j = pos + k
        if j >= n:
            break
        if quantity[j] <= residual + tolerance:
            part = float(quantity[j])
        elif minimum[j] <= residual:
            part = residual
        else:
            later = np.flatnonzero(minimum[j + 1 :] <= residual)
            while first_step is not None:
                stop = j + 1 + int(later[0]) if later.size else n
                if not _skip_later_steps(candidates, first_step, j, stop, quantity, minimum):
                    break
                later = np.flatnonzero(minimum[j + 1 :] <= residual)
            if later.size == 0:
                break
            pos = j + 1 + int(later[0])
            continue
        taken_rows.append(candidates[j : j + 1])
        taken_qty.append(np.array([part]))
        residual = max(residual - part, 0.0)
        pos = j + 1
    if not taken_rows:
        return np.empty(0, dtype=np.int64), np.empty(0), max(residual, 0.0)
    rows, qty = np.concatenate(taken_rows), np.concatenate(taken_qty)
    if first_step is not None:
        rows, qty = rows[qty > 0.0], qty[qty > 0.0]
    return rows, qty, max(residual, 0.0)


def _skip_later_steps(
    candidates: IntArray,
    first_step: IntArray,
    start: int,
    stop: int,
    quantity: FloatArray,
    minimum: FloatArray,
) -> bool:
    """Take out (quantity 0, minimum inf) the later curve steps of skipped candidates.

    ``candidates[start:stop]`` are being skipped; every later candidate that is a later
    step of one of their bids is taken out in place. Returns whether any newly was.
    """
    after = candidates[stop:]
    skipped = candidates[start:stop]
    later = (first_step[after] != after) & np.isin(first_step[after], skipped)
    hit = stop + np.flatnonzero(later)
    hit = hit[np.isfinite(minimum[hit])]
    quantity[hit] = 0.0
    minimum[hit] = np.inf
    return bool(hit.size)


def _serving_rows(
    book: OrderBook,
    request: FlexRequest,
    sensitivity: Mapping[int, float],
    bus_zones: Mapping[int, str],
) -> IntArray:
    """Eligible rows whose bus can serve the request for one product (rule 1 above)."""
    buses = {request.bus} | {bus for bus, s in sensitivity.items() if s > 0.0}
    if request.zone is not None:
        buses |= {bus for bus, zone in bus_zones.items() if zone == request.zone}
    bus_array = np.fromiter(buses, dtype=np.int64, count=len(buses))
    return eligible_rows(book, request, book.rows_at_buses(bus_array))


def _select(
    requests: Sequence[FlexRequest], book: OrderBook, params: MeritOrderParams
) -> tuple[dict[str, list[np.ndarray]], dict[str, float], dict[str, float]]:
    """Run the merit-order selection for both products; see the module docstring."""
    parts: dict[str, list[np.ndarray]] = {"req": [], "row": [], "qty": [], "product": []}
    unserved_p: dict[str, float] = {}
    unserved_q: dict[str, float] = {}
    products = (
        ("p", book.p_kw, book.min_p_kw, book.price_eur_per_kwh),
        ("q", book.q_kvar, book.min_q_kvar, book.price_eur_per_kvarh),
    )
    first_step = book.first_step_row() if book.step.any() else None
    for product, offered, minimum, price in products:
        if product == "q" and all(r.q_kvar is None for r in requests):
            continue
        remaining = offered.copy()
        accepted = np.zeros(len(book), dtype=bool)
        for index, request in enumerate(requests):
            if product == "p":
                need, cap, sensitivity = (
                    request.p_kw,
                    request.max_price_eur_per_kwh,
                    request.sensitivity_pu_per_kw,
                )
            else:
                if request.q_kvar is None:
                    continue
                need, cap, sensitivity = (
                    request.q_kvar,
                    request.kvar_cap_eur_per_kvarh,
                    request.sensitivity_pu_per_kvar,
                )
            residual = need
            if need > 0.0:
                rows = _serving_rows(book, request, sensitivity, params.bus_zones)
                rows = rows[(remaining[rows] > 0.0) & (price[rows] <= cap)]
                rows = book.in_merit_order(rows, product)
                row_min = np.where(accepted[rows], 0.0, minimum[rows])
                taken, qty, residual = _greedy(rows, remaining, row_min, need, first_step)
                remaining[taken] -= qty
                accepted[taken] = True
                parts["req"].append(np.full(taken.shape[0], index, dtype=np.int64))
                parts["row"].append(taken)
                parts["qty"].append(qty)
                parts["product"].append(np.full(taken.shape[0], product == "p"))
            (unserved_p if product == "p" else unserved_q)[request.request_id] = residual
    return parts, unserved_p, unserved_q


def _clear(
    rule: str, requests: Sequence[FlexRequest], book: OrderBook, raw: Mapping[str, Any]
) -> ClearingResult:
    """Shared body of both merit-order rules."""
    params = parse_params(MeritOrderParams, raw)
    ordered = sorted_requests(requests)
    parts, unserved_p, unserved_q = _select(ordered, book, params)
    empty_i, empty_f = np.empty(0, dtype=np.int64), np.empty(0)
    req = np.concatenate(parts["req"]) if parts["req"] else empty_i
    rows = np.concatenate(parts["row"]) if parts["row"] else empty_i
    qty = np.concatenate(parts["qty"]) if parts["qty"] else empty_f
    is_p = np.concatenate(parts["product"]) if parts["product"] else np.empty(0, dtype=bool)
    ask_p = book.price_eur_per_kwh[rows]
    ask_q = book.price_eur_per_kvarh[rows]
    prices: dict[str, float] = {}
    prices_q: dict[str, float] = {}
    for index, request in enumerate(ordered):
        mine = req == index
        if (mine & is_p).any():
            prices[request.request_id] = float(ask_p[mine & is_p].max())
        if (mine & ~is_p).any():
            prices_q[request.request_id] = float(ask_q[mine & ~is_p].max())
    if rule == "pay_as_clear":
        ids = [r.request_id for r in ordered]
        clearing_p = np.array([prices.get(i, 0.0) for i in ids])
        clearing_q = np.array([prices_q.get(i, 0.0) for i in ids])
        ask_p = clearing_p[req] if req.size else ask_p
        ask_q = clearing_q[req] if req.size else ask_q
    awards = assemble_awards(
        ordered,
        book,
        req,
        rows,
        np.where(is_p, qty, 0.0),
        np.where(is_p, 0.0, qty),
        ask_p,
        ask_q,
    )
    return ClearingResult.model_construct(
        rule=rule,
        params=params.model_dump(),
        awards=awards,
        prices=prices,
        prices_q=prices_q,
        bus_prices={},
        unserved_p_kw=unserved_p,
        unserved_q_kvar=unserved_q,
        unserved_dv_pu={},
        rounds=1,
        converged=True,
    )


@register_rule("pay_as_bid")
def pay_as_bid(
    requests: Sequence[FlexRequest], book: OrderBook, params: Mapping[str, Any]
) -> ClearingResult:
    """Merit order per request; each accepted row is paid its own ask.

    ``prices`` reports the highest accepted ask per request (the marginal row).
    """
    return _clear("pay_as_bid", requests, book, params)


@register_rule("pay_as_clear")
def pay_as_clear(
    requests: Sequence[FlexRequest], book: OrderBook, params: Mapping[str, Any]
) -> ClearingResult:
    """Merit order per request; every accepted row of a request is paid its marginal ask."""
    return _clear("pay_as_clear", requests, book, params)
