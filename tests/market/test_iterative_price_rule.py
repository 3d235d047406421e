"""iterative_price: price-only signal, sellers answer through a PriceResponder."""

import numpy as np
import pytest
from market_helpers import book, by_bid, check_invariants, request
from pydantic import ValidationError

from market import OrderBook, PriceResponder, TruthfulResponder, clear


def _example(need_kw: float) -> tuple[list, OrderBook]:
    rows = [("a", 1, 5.0, 0.10), ("b", 2, 5.0, 0.05), ("c", 1, 5.0, 0.20), ("d", 3, 5.0, 0.08)]
    req = request(p_kw=need_kw, sensitivity_pu_per_kw={1: 0.002, 2: 0.001, 3: 0.0})
    return [req], book(rows)


def test_price_rises_until_truthful_sellers_cover_the_need() -> None:
    """Need 7 kW at bus 1 -> dv 0.014 pu; v = 75 EUR/pu; step 0.1 x v = 7.5 per round.

    While nothing is offered the gap is the whole need, so lambda goes 0, 7.5, ..., 52.5
    (rounds 1..8). At 52.5: bus 1 price 0.105 >= a's 0.10, bus 2 price 0.0525 >= b's 0.05;
    a + b give 0.010 + 0.005 = 0.015 >= 0.014 pu -> converged in round 8.
    """
    requests, order_book = _example(7.0)
    result = clear("iterative_price", requests, order_book)
    check_invariants(result, requests, order_book)
    assert result.converged
    assert result.rounds == 8
    got = by_bid(result)
    assert got["a"] == pytest.approx((5.0, 0.105))
    assert got["b"] == pytest.approx((5.0, 0.0525))
    assert set(got) == {"a", "b"}
    assert result.params["responder"] == "TruthfulResponder"


def test_unreachable_need_reports_not_converged() -> None:
    """Need 8 kW = 0.016 pu; a + b give only 0.015 and c is above the cap -> never met."""
    requests, order_book = _example(8.0)
    result = clear("iterative_price", requests, order_book, {"max_rounds": 20})
    check_invariants(result, requests, order_book)
    assert not result.converged
    assert result.rounds <= 20
    assert result.unserved_dv_pu["r1"] == pytest.approx(0.001)


class _Greedy:
    """A strategic seller population: answers only at twice its ask, and asks for more."""

    def respond(
        self,
        book: OrderBook,
        price_eur_per_kwh: np.ndarray,
        price_eur_per_kvarh: np.ndarray,
        round_index: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        p = np.where(price_eur_per_kwh >= 2 * book.price_eur_per_kwh, 10 * book.p_kw, 0.0)
        return p, np.zeros(len(book))


def test_answers_are_clipped_to_the_book() -> None:
    """The responder over-answers 10x; awards stay within the offered 5 kW per row.

    Need 2 kW at bus 1 (dv 0.004): b at bus 2 answers once its price reaches 0.10, i.e.
    lambda = 100 > v = 75 -> never; a answers at 0.20 -> lambda = 100 too -> never. With
    cap 0.3 (v = 150): a answers at lambda 100 (bus 1: 0.20), b at lambda 100 (0.10).
    """
    assert isinstance(_Greedy(), PriceResponder)
    requests, order_book = _example(2.0)
    capped = [requests[0].model_copy(update={"max_price_eur_per_kwh": 0.3})]
    result = clear("iterative_price", capped, order_book, {"responder": _Greedy()})
    check_invariants(result, capped, order_book)
    assert result.converged
    assert all(a.p_kw <= 5.0 for a in result.awards)
    assert all(a.price_eur_per_kwh >= 2 * 0.05 - 1e-12 for a in result.awards)
    stubborn = clear("iterative_price", requests, order_book, {"responder": _Greedy()})
    assert not stubborn.converged
    assert stubborn.awards == ()


def test_damping_shrinks_the_step_when_the_gap_changes_sign() -> None:
    """Two requests share one bid: after r1 is over-met its price falls while r2's rises.

    The rule must still stop within the round limit and never pay below the ask.
    """
    order_book = book([("m", 3, 3.0, 0.05), ("n", 1, 1.0, 0.02)])
    sens = {1: 0.001, 2: 0.001, 3: 0.001}
    requests = [
        request(
            request_id="r1",
            bus=1,
            dv_required_pu=0.001,
            sensitivity_pu_per_kw=sens,
            max_price_eur_per_kwh=0.2,
        ),
        request(
            request_id="r2",
            bus=2,
            dv_required_pu=0.003,
            sensitivity_pu_per_kw=sens,
            max_price_eur_per_kwh=0.2,
        ),
    ]
    result = clear("iterative_price", requests, order_book, {"max_rounds": 100})
    check_invariants(result, requests, order_book)
    assert result.converged
    assert result.rounds <= 100


def test_responder_must_have_respond() -> None:
    requests, order_book = _example(2.0)
    with pytest.raises(ValidationError, match="responder"):
        clear("iterative_price", requests, order_book, {"responder": object()})
    assert isinstance(TruthfulResponder(), PriceResponder)
