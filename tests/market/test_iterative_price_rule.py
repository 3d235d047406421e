"""iterative_price: price-only signal, sellers answer through a PriceResponder."""

import numpy as np
import pytest
from market_helpers import book, by_bid, check_invariants, request
from pydantic import ValidationError

from market import OrderBook, PriceResponder, TruthfulResponder, clear
from market.rules.iterative import next_prices


def _example(need_kw: float) -> tuple[list, OrderBook]:
    rows = [("a", 1, 5.0, 0.10), ("b", 2, 5.0, 0.05), ("c", 1, 5.0, 0.20), ("d", 3, 5.0, 0.08)]
    req = request(p_kw=need_kw, sensitivity_pu_per_kw={1: 0.002, 2: 0.001, 3: 0.0})
    return [req], book(rows)


def test_price_rises_until_truthful_sellers_cover_the_need() -> None:
    """Need 7 kW at bus 1 -> dv 0.014 pu; v = 75 EUR/pu; step 0.1 x v = 7.5 per round.

    While nothing is offered the gap is the whole need, so lambda goes 0, 7.5, ..., 52.5
    (rounds 1..8). At 52.5: bus 1 price 0.105 >= a's 0.10, bus 2 price 0.0525 >= b's 0.05;
    a + b answer 0.010 + 0.005 = 0.015 >= 0.014 pu -> converged in round 8.
    Rationing: a and b both cost 50 EUR/pu (0.10 / 0.002, 0.05 / 0.001); the tie goes to
    the lower merit rank, b (asks less): b whole (0.005 pu), then a 0.009 / 0.002 = 4.5 kW.
    """
    requests, order_book = _example(7.0)
    result = clear("iterative_price", requests, order_book)
    check_invariants(result, requests, order_book)
    assert result.converged
    assert result.rounds == 8
    got = by_bid(result)
    assert got["a"] == pytest.approx((4.5, 0.105))
    assert got["b"] == pytest.approx((5.0, 0.0525))
    assert set(got) == {"a", "b"}
    assert result.params["responder"] == "TruthfulResponder"
    assert result.unserved_dv_pu["r1"] == pytest.approx(0.0, abs=1e-12)


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


def test_two_requests_sharing_bids_converge_by_hand() -> None:
    """r1 needs 0.001 pu, r2 0.003 pu; both see buses 1, 2, 3 at 0.001 pu/kW; v = 200 each.

    n: bus 1, 1 kW @0.02; m: bus 3, 3 kW @0.05. Step 0.1 x 200 = 20.
    Round 1: lambda = (0, 0), nothing offered; both gaps whole -> lambda = (20, 20).
    Round 2: prices 0.001 x 40 = 0.04: n on (>= 0.02), m off; r1 gets 0.001 (met),
    r2 0.001 (gap 2/3) -> lambda = (20, 20 + 20 x 2/3 = 33.3).
    Round 3: price 0.0533 >= 0.05: m on too; each gets 0.004 -> both met, converged.
    Prices at the requests' buses: 20 x 0.001 = 0.02 and 33.3 x 0.001 = 0.0333.
    Rationing: n first (20 EUR/pu against m's 50): 1 kW meets r1 and gives r2 0.001; m then
    closes r2's remaining 0.002 pu with 2 of its 3 kW.
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
    result = clear("iterative_price", requests, order_book)
    check_invariants(result, requests, order_book)
    assert (result.converged, result.rounds) == (True, 3)
    assert result.prices == pytest.approx({"r1": 0.02, "r2": 0.1 / 3})
    assert {a.bid_id: a.p_kw for a in result.awards} == pytest.approx({"m": 2.0, "n": 1.0})


def test_step_is_damped_when_the_gap_changes_sign() -> None:
    """lambda = (50, 50), steps (0.1, 0.1), v = (100, 100), dv = (1, 1), damping 0.5.

    r0 was short (+0.5) and is now over-supplied (-0.4): sign flip -> step 0.05, and
    lambda0 = 50 + 0.05 x 100 x (-0.4) = 48. r1 stays short (+0.5 -> +0.2): no flip,
    lambda1 = 50 + 0.1 x 100 x 0.2 = 52. A gap of 3 x dv is clipped to 1: lambda capped at v.
    """
    duals, steps = next_prices(
        np.array([50.0, 50.0]),
        np.array([0.1, 0.1]),
        np.array([-0.4, 0.2]),
        np.array([0.5, 0.5]),
        np.ones(2),
        np.full(2, 100.0),
        0.5,
    )
    assert steps.tolist() == [0.05, 0.1]
    assert duals.tolist() == pytest.approx([48.0, 52.0])
    capped, _ = next_prices(
        np.array([95.0]),
        np.array([0.1]),
        np.array([3.0]),
        np.array([1.0]),
        np.ones(1),
        np.array([100.0]),
        0.5,
    )
    assert capped.tolist() == [100.0]


def test_responder_must_have_respond() -> None:
    requests, order_book = _example(2.0)
    with pytest.raises(ValidationError, match="responder"):
        clear("iterative_price", requests, order_book, {"responder": object()})
    assert isinstance(TruthfulResponder(), PriceResponder)


def _flood() -> tuple[list, OrderBook]:
    """A need of 0.01 pu at bus 1 (10 kW there), v = 0.3 / 0.001 = 300 EUR/pu, and far more
    on offer below the second round's price (lambda = 30: 0.03 EUR/kWh at bus 1, 0.015 at
    bus 2): ten 10 kW rows at bus 1 asking 0.010, 0.012, ... 0.028 and 4 kW at bus 2
    asking 0.004 (8 EUR/pu at its 0.0005 pu/kW, the cheapest support)."""
    rows = [(f"n{i}", 1, 10.0, 0.010 + 0.002 * i) for i in range(10)] + [("far", 2, 4.0, 0.004)]
    req = request(
        direction="up",
        p_kw=10.0,
        dv_required_pu=0.01,
        max_price_eur_per_kwh=0.3,
        sensitivity_pu_per_kw={1: 0.001, 2: 0.0005},
    )
    return [req], rows


def _support(result, requests, order_book) -> float:
    sens = requests[0].sensitivity_pu_per_kw
    return sum(a.p_kw * sens[int(order_book.bus[a.book_row])] for a in result.awards)


def test_the_buyer_takes_only_what_it_needs() -> None:
    """Round 2 (lambda = 30) every row answers: 0.102 pu, ten times the 0.01 needed. The
    buyer takes ``far`` whole (0.002 pu, cheapest per pu), then 8 kW of ``n0`` (10 EUR/pu),
    and nothing else; both paid the posted prices 0.015 and 0.03 EUR/kWh."""
    requests, rows = _flood()
    order_book = book(rows)
    result = clear("iterative_price", requests, order_book)
    check_invariants(result, requests, order_book)
    price_p = np.where(order_book.bus == 1, 0.03, 0.015)
    answered, _ = TruthfulResponder().respond(order_book, price_p, np.zeros(len(order_book)), 1)
    unrationed = float((answered * np.where(order_book.bus == 1, 0.001, 0.0005)).sum())
    assert unrationed >= 10 * 0.01
    assert (result.converged, result.rounds) == (True, 2)
    assert by_bid(result) == {"far": pytest.approx((4.0, 0.015)), "n0": pytest.approx((8.0, 0.03))}
    assert _support(result, requests, order_book) == pytest.approx(0.01)


def test_an_indivisible_straddling_row_is_taken_whole_and_no_more() -> None:
    """The same flood with every row all-or-nothing: after ``far`` (0.002 pu) the next row
    ``n0`` must be taken whole (0.010 pu) to meet the rest; the support exceeds the need by
    less than that one row's, and no further row is bought."""
    requests, rows = _flood()
    order_book = book(rows, min_fraction=[1.0] * len(rows))
    result = clear("iterative_price", requests, order_book)
    check_invariants(result, requests, order_book)
    assert result.converged
    assert {a.bid_id: a.p_kw for a in result.awards} == {"far": 4.0, "n0": 10.0}
    support = _support(result, requests, order_book)
    assert 0.01 <= support < 0.01 + 10.0 * 0.001


@pytest.mark.parametrize("max_rounds", [10, 20, 30, 50])
def test_the_round_that_covered_most_is_accepted(max_rounds) -> None:
    """r1 needs 0.001 pu at bus 1, where only A offers, 10 kW at 0.05 (ten times the need);
    r2 needs 0.01 pu at bus 2, where B offers 1 kW: r2 is never met, so the iteration runs
    to ``max_rounds`` while r1's price swings around A's ask (over-covered, it falls below;
    uncovered, it rises) and A answers in some rounds only. The buyer takes the round that
    covered most: r1 met by 1 kW of A (at least its ask), B whole; r2 short 0.009 pu."""
    requests = [
        request(
            request_id=f"r{i}",
            bus=i,
            p_kw=need / 0.001,
            dv_required_pu=need,
            max_price_eur_per_kwh=0.1,
            sensitivity_pu_per_kw={i: 0.001},
        )
        for i, need in ((1, 0.001), (2, 0.01))
    ]
    order_book = book([("A", 1, 10.0, 0.05), ("B", 2, 1.0, 0.02)])
    result = clear("iterative_price", requests, order_book, {"max_rounds": max_rounds})
    check_invariants(result, requests, order_book)
    assert (result.converged, result.rounds) == (False, max_rounds)
    assert {a.bid_id: a.p_kw for a in result.awards} == pytest.approx({"A": 1.0, "B": 1.0})
    assert result.unserved_dv_pu == pytest.approx({"r1": 0.0, "r2": 0.009})


def test_rationing_orders_by_each_columns_own_sensitivity() -> None:
    """Need 0.01 pu at bus 1 (v = 300 EUR/pu). Round 2 (lambda = 30) posts 0.03 at bus 1,
    0.3 at bus 2 and 0.06 at bus 3: ``near`` (bus 1, 0.001 pu/kW, ask 0.01: 10 EUR/pu) and
    ``end`` (bus 3, 0.002 pu/kW, ask 0.016: 8 EUR/pu) answer, ``big`` (bus 2, 0.01 pu/kW,
    ask 0.5) does not. ``end`` is cheaper per pu: 5 kW of it meet the need, ``near`` gets
    nothing (``big``'s sensitivity, between them in the matrix, must not count for them)."""
    req = request(
        direction="up",
        p_kw=10.0,
        dv_required_pu=0.01,
        max_price_eur_per_kwh=0.3,
        sensitivity_pu_per_kw={1: 0.001, 2: 0.01, 3: 0.002},
    )
    order_book = book([("near", 1, 10.0, 0.01), ("big", 2, 10.0, 0.5), ("end", 3, 10.0, 0.016)])
    result = clear("iterative_price", [req], order_book)
    check_invariants(result, [req], order_book)
    assert (result.converged, result.rounds) == (True, 2)
    assert by_bid(result) == {"end": pytest.approx((5.0, 0.06))}


class _SkipsFirstSteps:
    """Answers truthfully except for the first step of a curve bid, which it never offers."""

    def respond(
        self,
        book: OrderBook,
        price_eur_per_kwh: np.ndarray,
        price_eur_per_kvarh: np.ndarray,
        round_index: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        p, q = TruthfulResponder().respond(book, price_eur_per_kwh, price_eur_per_kvarh, 0)
        curve_first = (book.step == 0) & np.r_[book.step[1:] > 0, False]
        return np.where(curve_first, 0.0, p), q


def test_a_later_curve_step_answered_without_the_first_does_not_count() -> None:
    """c: curve 2 kW @0.10 then 1 kW @0.12, min 1.5 kW on step 0; e: 1 kW @0.25; bus 1.
    Need 1 kW (s = 0.001, dv 0.001 pu), cap 0.3 -> v = 300 EUR/pu, lambda += 30 per round,
    bus price 0.03 x (round - 1). The sellers answer c's step 1 from round 5 (0.12) but
    never its step 0: step 1 alone would sell c 1 kW, below its minimum, so it does not
    count. e answers once the price reaches 0.25: round 10 (0.27) -> e 1 kW @0.27.
    """
    from test_locational_rule import _curve_book

    order_book = _curve_book()
    requests = [request(p_kw=1.0, max_price_eur_per_kwh=0.3, sensitivity_pu_per_kw={1: 0.001})]
    result = clear("iterative_price", requests, order_book, {"responder": _SkipsFirstSteps()})
    check_invariants(result, requests, order_book)
    assert (result.converged, result.rounds) == (True, 10)
    assert by_bid(result) == {"e": pytest.approx((1.0, 0.27))}
