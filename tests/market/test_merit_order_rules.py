"""pay_as_bid and pay_as_clear against hand-worked auctions (arithmetic in each docstring)."""

from datetime import timedelta

import pytest
from market_helpers import T0, T1, book, by_bid, check_invariants, request

from market import clear


def _example_1() -> tuple[list, object]:
    rows = [("a", 1, 5.0, 0.10), ("b", 2, 5.0, 0.05), ("c", 1, 5.0, 0.20), ("d", 3, 5.0, 0.08)]
    req = request(sensitivity_pu_per_kw={1: 0.002, 2: 0.001, 3: 0.0})
    return [req], book(rows)


def test_pay_as_bid_pays_each_its_own_ask() -> None:
    """Need 8 kW up at bus 1, cap 0.15 EUR/kWh; sensitivities bus1 .002, bus2 .001, bus3 0.

    Can serve: a (bus 1), b (bus 2, s > 0); c asks 0.20 > cap; d sits at bus 3 with s = 0.
    Merit order: b 0.05 (5 kW), then a 0.10 (3 of 5 kW) -> need met.
    Cost over 0.25 h: (5 x 0.05 + 3 x 0.10) x 0.25 = 0.1375 EUR.
    """
    requests, order_book = _example_1()
    result = clear("pay_as_bid", requests, order_book)
    check_invariants(result, requests, order_book)
    assert by_bid(result) == {"b": (5.0, 0.05), "a": (3.0, 0.10)}
    assert result.cost_eur == pytest.approx(0.1375, abs=1e-12)
    assert result.prices == {"r1": 0.10}
    assert result.unserved_p_kw == {"r1": 0.0}
    columns = result.award_arrays()
    assert columns["book_row"].tolist() == [0, 1]
    assert columns["p_kw"].tolist() == [3.0, 5.0]
    assert columns["price_eur_per_kwh"].tolist() == [0.10, 0.05]


def test_pay_as_clear_pays_the_marginal_ask() -> None:
    """Same selection as pay-as-bid; both paid the marginal ask 0.10: 8 x 0.10 x 0.25 = 0.2."""
    requests, order_book = _example_1()
    result = clear("pay_as_clear", requests, order_book)
    check_invariants(result, requests, order_book)
    assert by_bid(result) == {"b": (5.0, 0.10), "a": (3.0, 0.10)}
    assert result.cost_eur == pytest.approx(0.2, abs=1e-12)


@pytest.mark.parametrize(
    ("need_kw", "y_fraction", "expected", "unserved"),
    [
        (8.0, 0.0, {"y": (4.0, 0.07), "z": (4.0, 0.09)}, 0.0),
        (5.5, 0.0, {"y": (4.0, 0.07)}, 1.5),
        (12.0, 0.0, {"x": (10.0, 0.05), "y": (2.0, 0.07)}, 0.0),
        (12.0, 1.0, {"x": (10.0, 0.05)}, 2.0),
    ],
)
def test_minimum_fraction_skips_a_row_that_cannot_fit(
    need_kw: float, y_fraction: float, expected: dict[str, tuple[float, float]], unserved: float
) -> None:
    """x: 10 kW @0.05 all-or-nothing; y: 4 kW @0.07 (min y_fraction); z: 6 kW @0.09, min 3.

    Need 8: x (min 10) > 8 -> skipped; y 4 -> 4 left; z min 3 <= 4 -> z takes 4.
    Need 5.5: x skipped; y 4 -> 1.5 left; z min 3 > 1.5 -> skipped; 1.5 kW unserved.
    Need 12, y divisible: x 10 -> 2 left; y takes 2.
    Need 12, y all-or-nothing: x 10 -> 2 left; y (min 4) and z (min 3) > 2 -> 2 unserved.
    """
    rows = [("x", 1, 10.0, 0.05), ("y", 1, 4.0, 0.07), ("z", 1, 6.0, 0.09)]
    order_book = book(rows, min_fraction=[1.0, y_fraction, 0.5])
    requests = [request(p_kw=need_kw)]
    result = clear("pay_as_bid", requests, order_book)
    check_invariants(result, requests, order_book)
    assert by_bid(result) == expected
    assert result.unserved_p_kw["r1"] == pytest.approx(unserved)


def test_reactive_need_is_cleared_by_zone_and_direction() -> None:
    """Need 3 kvar up in zone A (buses 7, 8), cap 0.05 EUR/kvarh; no P need.

    q1 bus 8 (zone A) 2 kvar @0.02; q2 bus 9 (zone B) 5 kvar @0.01 -> wrong zone;
    q3 bus 7 2 kvar @0.03; q4 bus 7 offers *down* -> wrong direction.
    Merit order: q1 2 kvar, then q3 1 kvar. Pay-as-clear Q price: 0.03 for both.
    """
    rows = [("q1", 8, 0.0, 0.0), ("q2", 9, 0.0, 0.0), ("q3", 7, 0.0, 0.0), ("q4", 7, 0.0, 0.0)]
    order_book = book(
        rows,
        q_kvar=[2.0, 5.0, 2.0, 5.0],
        price_eur_per_kvarh=[0.02, 0.01, 0.03, 0.0],
        direction=["up", "up", "up", "down"],
    )
    requests = [request(bus=7, zone="A", p_kw=0.0, q_kvar=3.0, max_price_eur_per_kvarh=0.05)]
    params = {"bus_zones": {7: "A", 8: "A", 9: "B"}}
    result = clear("pay_as_clear", requests, order_book, params)
    check_invariants(result, requests, order_book)
    got = {a.bid_id: (a.q_kvar, a.price_eur_per_kvarh) for a in result.awards}
    assert got == {"q1": (2.0, 0.03), "q3": (1.0, 0.03)}
    assert result.prices_q == {"r1": 0.03}
    assert result.unserved_q_kvar == {"r1": 0.0}
    without_zones = clear("pay_as_clear", requests, order_book)
    assert {a.bid_id for a in without_zones.awards} == {"q3"}


def test_a_row_is_used_once_across_requests_in_request_order() -> None:
    """r1 (cap 0.3) and r2 (cap 0.2) each need 4 kW at bus 1; a: 6 kW @0.10, b: 6 kW @0.15.

    Request order puts the higher cap first: r1 takes 4 of a; r2 takes a's other 2, then
    2 of b. Pay-as-clear: r1 pays 0.10; r2's marginal ask is 0.15, paid to a and b alike.
    """
    order_book = book([("a", 1, 6.0, 0.10), ("b", 1, 6.0, 0.15)])
    requests = [
        request(request_id="r2", p_kw=4.0, max_price_eur_per_kwh=0.2),
        request(request_id="r1", p_kw=4.0, max_price_eur_per_kwh=0.3),
    ]
    result = clear("pay_as_clear", requests, order_book)
    check_invariants(result, requests, order_book)
    got = [(a.request_id, a.bid_id, a.p_kw, a.price_eur_per_kwh) for a in result.awards]
    assert got == [("r1", "a", 4.0, 0.10), ("r2", "a", 2.0, 0.15), ("r2", "b", 2.0, 0.15)]


def test_ties_go_to_the_earlier_row() -> None:
    """Two 5 kW rows at the same ask; a 5 kW need goes wholly to row 0 ('late' by name)."""
    order_book = book([("late", 1, 5.0, 0.1), ("early", 1, 5.0, 0.1)])
    result = clear("pay_as_bid", [request(p_kw=5.0)], order_book)
    assert by_bid(result) == {"late": (5.0, 0.1)}


def test_rows_outside_the_interval_or_direction_are_not_eligible() -> None:
    """Only 'ok' covers 12:00-12:15 in direction up; the others are skipped."""
    order_book = book(
        [("ok", 1, 1.0, 0.1), ("later", 1, 1.0, 0.01), ("down", 1, 1.0, 0.01)],
        direction=["up", "up", "down"],
        t_start=[T0 - timedelta(hours=1), T1, T0],
        t_end=[T1 + timedelta(hours=1), T1 + timedelta(minutes=15), T1],
    )
    result = clear("pay_as_bid", [request(p_kw=3.0)], order_book)
    assert by_bid(result) == {"ok": (1.0, 0.1)}
    assert result.unserved_p_kw == {"r1": 2.0}


def test_duplicate_request_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="request_id"):
        clear("pay_as_bid", [request(), request()], book([("a", 1, 1.0, 0.1)]))


def test_curve_bid_is_cleared_step_by_step_and_only_its_newest_version() -> None:
    """Home 1's bid c: v0 offered 3 kW @0.01; v1 replaces it with a curve 1 kW @0.10 then
    2 kW @0.30. Home 2's bid d: 1 kW @0.20. Need 3 kW, cap 0.35.

    Merit order over rows (c step 0 @0.10, d @0.20, c step 1 @0.30): 1 + 1 + 1 kW.
    Pay-as-bid: two awards for c (one per step) at 0.10 and 0.30, d at 0.20; v0's 0.01
    plays no part. Cost: (0.10 + 0.20 + 0.30) x 0.25 h = 0.15 EUR.
    """
    from market import Bid, OrderBook

    def bid(**fields: object) -> Bid:
        base = {
            "seller_id": "home_1",
            "asset_id": "hp",
            "bus": 1,
            "t_start": T0,
            "t_end": T1,
            "direction": "up",
        }
        return Bid.model_validate(base | fields)

    order_book = OrderBook.from_bids(
        [
            bid(bid_id="c", p_kw=3.0, price_eur_per_kwh=0.01, version=0),
            bid(bid_id="d", seller_id="home_2", p_kw=1.0, price_eur_per_kwh=0.20),
            bid(
                bid_id="c",
                p_kw=3.0,
                price_eur_per_kwh=0.10,
                version=1,
                curve=[(1.0, 0.10), (2.0, 0.30)],
            ),
        ]
    )
    requests = [request(p_kw=3.0, max_price_eur_per_kwh=0.35)]
    result = clear("pay_as_bid", requests, order_book)
    check_invariants(result, requests, order_book)
    got = [(a.bid_id, a.p_kw, a.price_eur_per_kwh) for a in result.awards]
    assert got == [("d", 1.0, 0.20), ("c", 1.0, 0.10), ("c", 1.0, 0.30)]
    assert result.cost_eur == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("need_kw", "expected"),
    [
        (1.0, [("e", 0, 1.0, 0.25)]),
        (1.5, [("c", 0, 1.5, 0.10)]),
        (2.5, [("c", 0, 2.0, 0.10), ("c", 1, 0.5, 0.12)]),
    ],
)
def test_curve_steps_are_bought_in_order_and_keep_the_bids_minimum(
    need_kw: float, expected: list[tuple[str, int, float, float]]
) -> None:
    """c: 3 kW as a curve 2 kW @0.10 then 1 kW @0.12, min_fraction 0.5 -> at least 1.5 kW
    (held by step 0); e: 1 kW @0.25. One up request at bus 1, cap 0.3 (pay-as-bid).

    Need 1: c's step 0 straddles, but 1 < its 1.5 kW minimum -> skipped, and with it
    c's step 1 (buying it alone would sell c 1 kW, below its minimum) -> e 1 kW @0.25.
    Need 1.5: c's step 0 straddles with 1.5 >= 1.5 -> c 1.5 kW @0.10.
    Need 2.5: c's step 0 whole (2 kW @0.10), then 0.5 of step 1 @0.12.
    """
    from market import Bid, OrderBook

    def bid(**fields: object) -> Bid:
        base = {"asset_id": "hp", "bus": 1, "t_start": T0, "t_end": T1, "direction": "up"}
        return Bid.model_validate(base | fields)

    order_book = OrderBook.from_bids(
        [
            bid(
                bid_id="c",
                seller_id="home_1",
                p_kw=3.0,
                price_eur_per_kwh=0.10,
                min_fraction=0.5,
                curve=[(2.0, 0.10), (1.0, 0.12)],
            ),
            bid(bid_id="e", seller_id="home_2", p_kw=1.0, price_eur_per_kwh=0.25),
        ]
    )
    requests = [request(p_kw=need_kw, max_price_eur_per_kwh=0.3)]
    result = clear("pay_as_bid", requests, order_book)
    check_invariants(result, requests, order_book)
    got = [
        (a.bid_id, int(order_book.step[a.book_row]), a.p_kw, a.price_eur_per_kwh)
        for a in result.awards
    ]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert [g[2:] for g in got] == [pytest.approx(e[2:]) for e in expected]
    assert result.unserved_p_kw == {"r1": pytest.approx(0.0)}
