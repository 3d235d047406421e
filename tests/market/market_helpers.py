"""Factories and invariant checks shared by the market tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from market import Award, ClearingResult, FlexRequest, OrderBook

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=15)
TOL = 1e-7


def request(**changes: object) -> FlexRequest:
    """A valid ``up`` request at bus 1 for 8 kW at <= 0.15 EUR/kWh; override any field."""
    base: dict[str, object] = {
        "request_id": "r1",
        "buyer_id": "dso",
        "bus": 1,
        "t_start": T0,
        "t_end": T1,
        "direction": "up",
        "p_kw": 8.0,
        "max_price_eur_per_kwh": 0.15,
    }
    base.update(changes)
    return FlexRequest.model_validate(base)


def book(rows: Sequence[tuple[str, int, float, float]], **columns: Sequence[object]) -> OrderBook:
    """A book of ``up`` rows ``(bid_id, bus, p_kw, price_eur_per_kwh)``, one seller per row."""
    n = len(rows)
    return OrderBook.from_arrays(
        [r[0] for r in rows],
        columns.pop("seller_id", [f"s_{r[0]}" for r in rows]),
        [r[1] for r in rows],
        columns.pop("direction", ["up"] * n),
        [r[2] for r in rows],
        [r[3] for r in rows],
        **columns,  # type: ignore[arg-type]
    )


def awarded(result: ClearingResult, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Total awarded (p_kw, q_kvar) per book row."""
    p = np.zeros(n_rows)
    q = np.zeros(n_rows)
    for award in result.awards:
        p[award.book_row] += award.p_kw
        q[award.book_row] += award.q_kvar
    return p, q


def by_bid(result: ClearingResult) -> dict[str, tuple[float, float]]:
    """``bid_id -> (p_kw, price_eur_per_kwh)`` of single-award-per-bid results."""
    return {a.bid_id: (a.p_kw, a.price_eur_per_kwh) for a in result.awards}


def buyer_value_at(requests: Sequence[FlexRequest], bus: int, product: str) -> float:
    """The most any price at ``bus`` may be under the sensitivity rules (their price cap).

    ``sum_r v_r max(s_rb, 0)`` with ``v_r = max_price / s_ref`` (see market.rules.locational).
    """
    from market.rules._sensitivity import reference_sensitivity, sensitivity_maps

    total = 0.0
    for r in requests:
        ref = reference_sensitivity(r)
        if ref <= 0:
            continue
        kw, kvar = sensitivity_maps(r)
        s = (kw if product == "p" else kvar).get(bus, 0.0)
        total += r.max_price_eur_per_kwh / ref * max(s, 0.0)
    return total


def check_invariants(
    result: ClearingResult, requests: Sequence[FlexRequest], order_book: OrderBook
) -> None:
    """Assert the invariants every clearing must keep (issue 4); used after every run."""
    n = len(order_book)
    p, q = awarded(result, n)
    assert (p <= order_book.p_kw + TOL).all(), "award above a bid's P quantity"
    assert (q <= order_book.q_kvar + TOL).all(), "award above a bid's Q quantity"
    assert ((p <= TOL) | (p >= order_book.min_p_kw - TOL)).all(), "P award below minimum"
    assert ((q <= TOL) | (q >= order_book.min_q_kvar - TOL)).all(), "Q award below minimum"
    first = order_book.first_step_row()
    bid_p = np.bincount(first, weights=p, minlength=n)
    bid_min = np.bincount(first, weights=order_book.min_p_kw, minlength=n)
    assert ((bid_p <= TOL) | (bid_p >= bid_min - TOL)).all(), "curve bid below its minimum"
    by_id = {r.request_id: r for r in requests}
    sensitivity_rule = result.rule in {"locational", "iterative_price"}
    for award in result.awards:
        req = by_id[award.request_id]
        row = award.book_row
        assert award.bid_id == order_book.bid_id[row]
        assert award.seller_id == order_book.seller_id[row]
        assert award.bus == order_book.bus[row]
        assert award.direction == req.direction
        assert (award.t_start, award.t_end) == (req.t_start, req.t_end)
        assert award.p_kw > 0.0 or award.q_kvar > 0.0, "empty award"
        assert Award.model_validate(award.model_dump()) == award, "award fails validation"
        if award.p_kw > 0.0:
            assert award.price_eur_per_kwh >= order_book.price_eur_per_kwh[row] - TOL
            cap = (
                buyer_value_at(requests, award.bus, "p")
                if sensitivity_rule
                else req.max_price_eur_per_kwh
            )
            assert award.price_eur_per_kwh <= cap + 1e-6 * (1 + cap), "P price above cap"
        if award.q_kvar > 0.0:
            assert award.price_eur_per_kvarh >= order_book.price_eur_per_kvarh[row] - TOL
            cap = (
                buyer_value_at(requests, award.bus, "q")
                if sensitivity_rule
                else req.kvar_cap_eur_per_kvarh
            )
            assert award.price_eur_per_kvarh <= cap + 1e-6 * (1 + cap), "Q price above cap"
    for value in (
        *result.unserved_p_kw.values(),
        *result.unserved_q_kvar.values(),
        *result.unserved_dv_pu.values(),
    ):
        assert value >= 0.0
    if result.rule in {"pay_as_bid", "pay_as_clear"}:
        for req in requests:
            got = sum(a.p_kw for a in result.awards if a.request_id == req.request_id)
            assert got + result.unserved_p_kw[req.request_id] == _approx(req.p_kw)
            assert got <= req.p_kw + TOL
    if result.rule == "pay_as_clear":
        for req in requests:
            mine = [a for a in result.awards if a.request_id == req.request_id and a.p_kw > 0]
            assert len({a.price_eur_per_kwh for a in mine}) <= 1, "pay-as-clear not uniform"
            if mine:
                assert mine[0].price_eur_per_kwh == result.prices[req.request_id]
            mine_q = [a for a in result.awards if a.request_id == req.request_id and a.q_kvar > 0]
            assert len({a.price_eur_per_kvarh for a in mine_q}) <= 1, "Q price not uniform"
            if mine_q:
                assert mine_q[0].price_eur_per_kvarh == result.prices_q[req.request_id]


def _approx(value: float) -> object:
    import pytest

    return pytest.approx(value, abs=1e-6)
