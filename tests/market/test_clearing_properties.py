"""Property tests (hypothesis): the invariants of issue 4 hold after every clearing.

Checked by ``market_helpers.check_invariants`` after each run of each rule: no award above
a row's quantity or below its minimum; prices within [ask, buyer's cap] (for the
sensitivity rules the cap translated to the row's bus); pay-as-clear uniform per request;
awards consistent with the book and requests. Then: settlement of any clearing balances;
the locational LP never buys a need more dearly than pay-as-bid when pay-as-bid meets it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from market_helpers import T0, T1, TOL, check_invariants, request

from market import Bid, ClearingResult, FlexRequest, MeterReading, OrderBook, clear, settle


class _NoisyResponder:
    """Answers anything from nothing to twice the offer, seeded: the rule must clip it."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def respond(
        self, book: OrderBook, price_p: np.ndarray, price_q: np.ndarray, round_index: int
    ) -> tuple[np.ndarray, np.ndarray]:
        scale = self.rng.uniform(0.0, 2.0, (2, len(book)))
        return scale[0] * book.p_kw, scale[1] * book.q_kvar


RULES = [
    ("pay_as_bid", {}),
    ("pay_as_clear", {}),
    ("locational", {}),
    ("locational", {"mip_max_indivisible": 0}),
    ("iterative_price", {}),
    ("iterative_price", {"responder": "noisy"}),
]
BUSES = st.integers(0, 5)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def order_books(draw: st.DrawFn, directions: tuple[str, ...] = ("up", "down")) -> OrderBook:
    n = draw(st.integers(1, 20))
    p = draw(st.lists(st.one_of(st.just(0.0), st.floats(0.1, 10)), min_size=n, max_size=n))
    q = draw(st.lists(st.one_of(st.just(0.0), st.floats(0.1, 5)), min_size=n, max_size=n))
    p = [1.0 if a == 0.0 and b == 0.0 else a for a, b in zip(p, q, strict=True)]
    return OrderBook.from_arrays(
        [f"b{i}" for i in range(n)],
        [f"s{i}" for i in range(n)],
        draw(st.lists(BUSES, min_size=n, max_size=n)),
        draw(st.lists(st.sampled_from(directions), min_size=n, max_size=n)),
        p,
        draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)),
        q_kvar=q,
        price_eur_per_kvarh=draw(st.lists(st.floats(0, 0.5), min_size=n, max_size=n)),
        min_fraction=draw(st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0]), min_size=n, max_size=n)),
    )


@st.composite
def curve_books(draw: st.DrawFn) -> OrderBook:
    """Books from :class:`Bid` models, some with 2-3 step curves and a minimum on step 0."""
    bids = []
    for i in range(draw(st.integers(1, 8))):
        steps = draw(st.lists(st.floats(0.1, 5), min_size=1, max_size=3))
        rises = draw(st.lists(st.floats(0.01, 0.3), min_size=len(steps), max_size=len(steps)))
        prices = np.cumsum([draw(st.floats(0, 0.3)), *rises[1:]]).tolist()
        p_kw = float(sum(steps))
        fraction = min(draw(st.sampled_from([0.0, 0.3, 0.5, 1.0])), steps[0] / p_kw)
        bids.append(
            Bid(
                bid_id=f"c{i}",
                seller_id=f"s{i}",
                asset_id=f"a{i}",
                bus=draw(BUSES),
                t_start=T0,
                t_end=T1,
                direction=draw(st.sampled_from(["up", "down"])),
                p_kw=p_kw,
                price_eur_per_kwh=prices[0],
                q_kvar=draw(st.one_of(st.just(0.0), st.floats(0.1, 5))),
                price_eur_per_kvarh=draw(st.floats(0, 0.5)),
                min_fraction=fraction,
                curve=tuple(zip(steps, prices, strict=True)) if len(steps) > 1 else None,
            )
        )
    return OrderBook.from_bids(bids)


SENSITIVITY = st.dictionaries(BUSES, st.floats(-0.002, 0.01), max_size=6)


@st.composite
def request_lists(draw: st.DrawFn) -> list[FlexRequest]:
    count = draw(st.integers(1, 3))
    return [
        request(
            request_id=f"r{i}",
            bus=draw(BUSES),
            direction=draw(st.sampled_from(["up", "down"])),
            p_kw=draw(st.floats(0, 30)),
            q_kvar=draw(st.one_of(st.none(), st.floats(0, 10))),
            max_price_eur_per_kwh=draw(st.floats(0, 1)),
            max_price_eur_per_kvarh=draw(st.one_of(st.none(), st.floats(0, 0.5))),
            dv_required_pu=draw(st.one_of(st.just(0.0), st.floats(0, 0.1))),
            sensitivity_pu_per_kw=draw(SENSITIVITY),
            sensitivity_pu_per_kvar=draw(SENSITIVITY),
        )
        for i in range(count)
    ]


@pytest.mark.parametrize(("rule", "params"), RULES, ids=lambda v: str(v) if v else "default")
@SETTINGS
@given(order_book=st.one_of(order_books(), curve_books()), requests=request_lists(), data=st.data())
def test_invariants_and_settlement_balance_after_every_clearing(
    rule: str,
    params: dict[str, object],
    order_book: OrderBook,
    requests: list[FlexRequest],
    data: st.DataObject,
) -> None:
    def run() -> ClearingResult:
        fresh = {k: _NoisyResponder(3) if v == "noisy" else v for k, v in params.items()}
        return clear(rule, requests, order_book, fresh)

    result = run()
    check_invariants(result, requests, order_book)
    assert run() == result, "not deterministic"
    readings = [
        MeterReading(
            asset_id=asset,
            t_start=T0,
            t_end=T1,
            baseline_p_kw=data.draw(st.floats(-20, 20)),
            metered_p_kw=data.draw(st.floats(-20, 20)),
        )
        for asset in sorted({a.asset_id for a in result.awards})
    ]
    report = settle(result.awards, readings)
    assert sum(report.buyer_cost_eur.values()) == pytest.approx(
        sum(report.seller_revenue_eur.values()), abs=1e-9
    )
    paid = sum(line.payment_eur for line in report.lines)
    assert paid <= result.cost_eur + 1e-9, "settlement paid more than awarded"
    _check_settlement_against_award_costs(result)


def _check_settlement_against_award_costs(result: ClearingResult) -> None:
    """Peer: ``Award.cost_eur`` (kW x h x price), not the settlement's own bookkeeping.

    Delivered exactly as awarded: the buyers pay, and the sellers receive, the awards'
    cost. Nothing delivered: each pays back ``penalty_factor`` x that cost.
    """
    factor = 1.5
    exact, none = [], []
    for asset in sorted({a.asset_id for a in result.awards}):
        mine = [a for a in result.awards if a.asset_id == asset]
        sign = 1.0 if mine[0].direction == "up" else -1.0
        p, q = sum(a.p_kw for a in mine), sum(a.q_kvar for a in mine)
        base = {"asset_id": asset, "t_start": T0, "t_end": T1}
        base |= {"baseline_p_kw": 10.0, "baseline_q_kvar": 5.0}
        exact.append(
            MeterReading(**base, metered_p_kw=10.0 - sign * p, metered_q_kvar=5.0 - sign * q)
        )
        none.append(MeterReading(**base, metered_p_kw=10.0, metered_q_kvar=5.0))
    cost = result.cost_eur
    # rel: the meter reading 10 - p gives back p only to round-off, relative to the price.
    for readings, expected in ((exact, cost), (none, -factor * cost)):
        report = settle(result.awards, readings, penalty_factor=factor)
        assert sum(report.buyer_cost_eur.values()) == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert sum(report.seller_revenue_eur.values()) == pytest.approx(
            expected, rel=1e-9, abs=1e-9
        )
    assert settle(result.awards, exact).flagged == ()


@SETTINGS
@given(order_book=order_books(), requests=request_lists())
def test_pay_as_clear_selects_like_pay_as_bid_and_never_pays_less(
    order_book: OrderBook, requests: list[FlexRequest]
) -> None:
    bid = clear("pay_as_bid", requests, order_book)
    uniform = clear("pay_as_clear", requests, order_book)
    quantities = [(a.request_id, a.book_row, a.p_kw, a.q_kvar) for a in bid.awards]
    assert quantities == [(a.request_id, a.book_row, a.p_kw, a.q_kvar) for a in uniform.awards]
    assert uniform.cost_eur >= bid.cost_eur - 1e-12


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order_book=order_books(directions=("up",)),
    own=st.floats(0.0005, 0.005),
    factors=st.dictionaries(BUSES, st.floats(1.0, 3.0), min_size=1, max_size=6),
    need_kw=st.floats(0.5, 30),
    cap=st.floats(0.05, 1),
)
def test_locational_never_costs_more_than_pay_as_bid_for_the_same_need(
    order_book: OrderBook, own: float, factors: dict[int, float], need_kw: float, cap: float
) -> None:
    """One request at bus 0 needing ``need_kw x s_0`` pu; every other bus helps at least as
    much per kW (s_b >= s_0), so when pay-as-bid fills the kW it also meets the pu need and
    its selection is feasible for the LP. Then the LP's cost of the bids it buys, at their
    asks, is at most pay-as-bid's (HiGHS optimum; tolerance: the 1e-6 tie-break bound).
    """
    sensitivity = {bus: own * f for bus, f in factors.items()} | {0: own}
    req = request(
        bus=0,
        p_kw=need_kw,
        max_price_eur_per_kwh=cap,
        dv_required_pu=need_kw * own,
        sensitivity_pu_per_kw=sensitivity,
    )
    bid = clear("pay_as_bid", [req], order_book)
    if bid.unserved_p_kw["r1"] > TOL:
        return
    delivered_pu = sum(sensitivity[a.bus] * a.p_kw for a in bid.awards)
    assert delivered_pu >= req.dv_required_pu - 1e-9
    lp = clear("locational", [req], order_book)
    check_invariants(lp, [req], order_book)

    def ask_cost(result: object) -> float:
        return float(
            sum(a.p_kw * order_book.price_eur_per_kwh[a.book_row] for a in result.awards)  # type: ignore[attr-defined]
        )

    bound = 1e-6 * (1 + float(np.max(order_book.price_eur_per_kwh))) * need_kw * 3
    assert ask_cost(lp) <= ask_cost(bid) + bound + 1e-9
