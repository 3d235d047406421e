"""Settlement: hand-worked lines, flags, budget balance (array and model forms)."""

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from market_helpers import T0, T1

from market import Award, Direction, MeterReading, settle, settle_arrays


def _award(bid_id: str, **changes: object) -> Award:
    base: dict[str, object] = {
        "bid_id": bid_id,
        "seller_id": "home_1",
        "asset_id": "bat",
        "bus": 1,
        "request_id": "r1",
        "buyer_id": "dso",
        "book_row": 0,
        "t_start": T0,
        "t_end": T1,
        "direction": Direction.UP,
        "p_kw": 4.0,
        "price_eur_per_kwh": 0.2,
    }
    base.update(changes)
    return Award.model_validate(base)


def test_full_delivery_is_paid_in_full() -> None:
    """Up award 4 kW over 0.25 h at 0.2: baseline 10 kW, metered 6 kW -> delivered 4 kW.

    Payment 4 x 0.25 x 0.2 = 0.2 EUR; no shortfall; ok.
    """
    report = settle(
        [_award("a")],
        [MeterReading(asset_id="bat", t_start=T0, t_end=T1, baseline_p_kw=10.0, metered_p_kw=6.0)],
    )
    [line] = report.lines
    assert line.payment_eur == pytest.approx(0.2)
    assert (line.penalty_eur, line.flag) == (0.0, "ok")
    assert report.buyer_cost_eur == pytest.approx({"dso": 0.2})
    assert report.seller_revenue_eur == pytest.approx({"home_1": 0.2})


def test_shortfall_is_penalised_and_flagged() -> None:
    """Delivered 10 - 8 = 2 of 4 kW: paid 2 x 0.25 x 0.2 = 0.1; shortfall 2 x 0.25 = 0.5 kWh
    penalised at 1.5 x 0.2 = 0.3 EUR/kWh -> 0.15; net 0.1 - 0.15 = -0.05 EUR; under.
    """
    reading = MeterReading(
        asset_id="bat", t_start=T0, t_end=T1, baseline_p_kw=10.0, metered_p_kw=8.0
    )
    report = settle([_award("a")], [reading], penalty_factor=1.5)
    [line] = report.lines
    assert line.payment_eur == pytest.approx(0.1)
    assert line.shortfall_kwh == pytest.approx(0.5)
    assert line.penalty_eur == pytest.approx(0.15)
    assert line.net_eur == pytest.approx(-0.05)
    assert line.flag == "under"
    assert report.flagged == ("r1/a",)


def test_down_award_over_delivery_is_not_paid_but_flagged() -> None:
    """Down award 4 kW: metered 16 vs baseline 10 -> delivered 6 kW, 50% over (> 5%).

    Paid up to the award: 4 x 0.25 x 0.2 = 0.2 EUR; flagged over.
    """
    reading = MeterReading(
        asset_id="bat", t_start=T0, t_end=T1, baseline_p_kw=10.0, metered_p_kw=16.0
    )
    report = settle([_award("a", direction=Direction.DOWN)], [reading])
    [line] = report.lines
    assert line.delivered_p_kw == pytest.approx(6.0)
    assert line.payment_eur == pytest.approx(0.2)
    assert line.flag == "over"


def test_one_meter_is_shared_pro_rata_and_missing_reading_means_not_delivered() -> None:
    """Asset bat has awards of 3 and 1 kW; it delivered 2 kW -> 1.5 and 0.5 kW.

    Asset ev has no reading -> delivered 0, full shortfall.
    """
    awards = [
        _award("a", p_kw=3.0),
        _award("b", p_kw=1.0, request_id="r2"),
        _award("c", asset_id="ev", seller_id="home_2"),
    ]
    reading = MeterReading(
        asset_id="bat", t_start=T0, t_end=T1, baseline_p_kw=5.0, metered_p_kw=3.0
    )
    report = settle(awards, [reading])
    delivered = [line.delivered_p_kw for line in report.lines]
    assert delivered == pytest.approx([1.5, 0.5, 0.0])
    assert report.lines[2].flag == "under"
    assert sum(report.buyer_cost_eur.values()) == pytest.approx(
        sum(report.seller_revenue_eur.values())
    )


def test_reading_of_another_interval_does_not_count() -> None:
    later = MeterReading(
        asset_id="bat",
        t_start=T1,
        t_end=T1 + timedelta(minutes=15),
        baseline_p_kw=10.0,
        metered_p_kw=6.0,
    )
    [line] = settle([_award("a")], [later]).lines
    assert line.delivered_p_kw == 0.0
    assert line.flag == "under"


def test_up_and_down_awards_on_one_meter_are_refused() -> None:
    awards = [_award("a"), _award("b", direction=Direction.DOWN)]
    reading = MeterReading(
        asset_id="bat", t_start=T0, t_end=T1, baseline_p_kw=5.0, metered_p_kw=3.0
    )
    with pytest.raises(ValueError, match="up and down"):
        settle(awards, [reading])


def test_arrays_reject_non_finite_and_negative_factor() -> None:
    with pytest.raises(ValueError, match="delivered_p_kw"):
        settle_arrays([1.0], [float("nan")], [0.1], 0.25)
    with pytest.raises(ValueError, match="penalty_factor"):
        settle_arrays([1.0], [1.0], [0.1], 0.25, penalty_factor=-1.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 50),
            st.floats(-20, 80),
            st.floats(0, 1),
            st.floats(0, 30),
            st.floats(-10, 40),
            st.floats(0, 0.5),
        ),
        min_size=1,
        max_size=30,
    ),
    st.floats(0, 5),
)
def test_settlement_invariants(rows: list[tuple[float, ...]], factor: float) -> None:
    """Budget balance; payment never above awarded x price; penalty only for shortfall."""
    a_p, d_p, price, a_q, d_q, price_q = (np.array(col) for col in zip(*rows, strict=True))
    out = settle_arrays(
        a_p,
        d_p,
        price,
        0.25,
        awarded_q_kvar=a_q,
        delivered_q_kvar=d_q,
        price_eur_per_kvarh=price_q,
        penalty_factor=factor,
    )
    assert out.net_eur.sum() == pytest.approx((out.payment_eur - out.penalty_eur).sum())
    assert (out.payment_eur <= (a_p * price + a_q * price_q) * 0.25 + 1e-9).all()
    assert (out.payment_eur >= -1e-12).all() and (out.penalty_eur >= -1e-12).all()
    full = (d_p >= a_p) & (d_q >= a_q)
    assert (out.penalty_eur[full] == 0.0).all()
    assert (out.shortfall_kwh <= a_p * 0.25 + 1e-9).all()
