"""``locational`` by column generation against the whole LP (the peer: the same rule with
column generation switched off), on books large enough to use it.

Books: 6,000 bids on 600 buses of 6 radial feeders, asks and quantities drawn at random
(seeded), so the optimum is unique; requests at 5 violated buses per feeder with the
common-path sensitivities of a radial feeder, some of them also with a kvar map (P and Q
compete), and on one feeder an up request whose map hurts the down requests' buses
(negative entries). Tolerance: 1e-6 relative on the cost, 1e-6 kW on each award.
"""

import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from market import FlexRequest, OrderBook, clear

T0 = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=15)
WHOLE = {"column_generation_above": 10**9}
COLUMNS = {"column_generation_above": 0}


def requests(feeders: int = 6, per_feeder: int = 100, violated: int = 5) -> list[FlexRequest]:
    out = []
    for f in range(feeders):
        for k in range(violated):
            pos = per_feeder - 1 - 7 * k
            bus = f * per_feeder + pos
            sens = {f * per_feeder + j: 2e-5 * (min(pos, j) + 1) for j in range(per_feeder)}
            kvar = {b: 0.3 * s for b, s in sens.items()} if k % 2 else {}
            out.append(
                FlexRequest(
                    request_id=f"v{bus}",
                    buyer_id="dso",
                    bus=bus,
                    t_start=T0,
                    t_end=T1,
                    direction="down",
                    p_kw=0.0,
                    max_price_eur_per_kwh=0.6,
                    dv_required_pu=0.01 + 0.003 * k,
                    sensitivity_pu_per_kw=sens,
                    sensitivity_pu_per_kvar=kvar,
                )
            )
    return out


def book(n: int, n_bus: int, seed: int) -> OrderBook:
    rng = np.random.default_rng(seed)
    return OrderBook.from_arrays(
        np.array([f"b{i}" for i in range(n)], dtype=object),
        np.array([f"s{i}" for i in range(n)], dtype=object),
        rng.integers(0, n_bus, n),
        np.full(n, "down"),
        rng.uniform(0.5, 5.0, n),
        rng.uniform(0.02, 0.5, n),
        q_kvar=rng.uniform(0.0, 2.0, n),
        price_eur_per_kvarh=rng.uniform(0.005, 0.05, n),
    )


def _cost(result) -> float:
    return sum(a.cost_eur for a in result.awards)


def _awarded(result) -> dict[tuple[str, str], tuple[float, float]]:
    return {(a.bid_id, a.request_id): (a.p_kw, a.q_kvar) for a in result.awards}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_column_generation_finds_the_whole_lps_optimum(seed: int) -> None:
    reqs = requests()
    b = book(6000, 600, seed)
    whole = clear("locational", reqs, b, WHOLE)
    by_columns = clear("locational", reqs, b, COLUMNS)
    assert whole.awards, "the case must buy something"
    assert _cost(by_columns) == pytest.approx(_cost(whole), rel=1e-6)
    a, c = _awarded(whole), _awarded(by_columns)
    assert {k for k, v in a.items() if max(v) > 1e-6} == {k for k, v in c.items() if max(v) > 1e-6}
    for key, (p, q) in a.items():
        assert c.get(key, (0.0, 0.0)) == pytest.approx((p, q), abs=1e-6)
    for request_id, price in whole.prices.items():
        assert by_columns.prices[request_id] == pytest.approx(price, rel=1e-6, abs=1e-9)
    for request_id, unserved in whole.unserved_dv_pu.items():
        assert by_columns.unserved_dv_pu[request_id] == pytest.approx(unserved, abs=1e-9)


def test_a_need_larger_than_every_bid_leaves_the_same_unserved_part() -> None:
    """Requests asking 100 times their need, more than the book can give: both leave the
    same need unserved (the buyer's value caps what is bought)."""
    reqs = [r.model_copy(update={"dv_required_pu": r.dv_required_pu * 100}) for r in requests()]
    b = book(6000, 600, 7)
    whole = clear("locational", reqs, b, WHOLE)
    by_columns = clear("locational", reqs, b, COLUMNS)
    assert sum(whole.unserved_dv_pu.values()) > 0
    assert _cost(by_columns) == pytest.approx(_cost(whole), rel=1e-6)
    for request_id, unserved in whole.unserved_dv_pu.items():
        assert by_columns.unserved_dv_pu[request_id] == pytest.approx(unserved, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("seed", [1, 4])
def test_columns_priced_in_round_by_round_reach_the_same_optimum(monkeypatch, seed) -> None:
    """A first working set of one column per row (far from optimal), so the optimum is
    reached only by the pricing rounds that add the columns with negative reduced cost
    (counted: HiGHS runs again after the first solve)."""
    colgen = sys.modules["market.rules._colgen"]
    monkeypatch.setattr(colgen, "_FIRST_COVER", 0.0)
    monkeypatch.setattr(colgen, "_FIRST_PER_ROW", 1)
    runs = []
    real_run = colgen.run
    monkeypatch.setattr(colgen, "run", lambda highs: (runs.append(1), real_run(highs)))
    reqs = requests()
    b = book(6000, 600, seed)
    whole = clear("locational", reqs, b, WHOLE)
    by_columns = clear("locational", reqs, b, COLUMNS)
    assert len(runs) >= 2
    assert _cost(by_columns) == pytest.approx(_cost(whole), rel=1e-6)
    a, c = _awarded(whole), _awarded(by_columns)
    for key in set(a) | set(c):
        assert c.get(key, (0.0, 0.0)) == pytest.approx(a.get(key, (0.0, 0.0)), abs=1e-6)
