"""Every rule on a zone request as the DSO publishes it (agents.dso, ``request_per="zone"``).

A hand-worked radial feeder: buses 1-2-3-4 in a row behind the transformer, each segment
moving the voltage downstream of it by 0.001 pu per kW, so the sensitivity of bus i to a
kW at bus j is ``s(i, j) = 0.001 x min(i, j)`` pu/kW (the resistance of the common path).
Buses 3 and 4 are above the band, needing 0.005 and 0.0055 pu (margin included): one zone.

* Zone request at the worst bus 4: kW at 4 moves bus 4 by 0.004 and bus 3 by 0.003 pu/kW,
  so ``p_kw = max(0.0055 / 0.004, 0.005 / 0.003) = 5/3 kW`` (bus 3 binds) and
  ``dv_required_pu = 5/3 x 0.004 = 1/150 pu``; its map is row 4: ``{1: .001, 2: .002,
  3: .003, 4: .004}``.
* The per-bus requests of the same case: bus 4 (``p_kw`` 1.375, dv 0.0055, row 4) and bus 3
  (``p_kw`` 5/3, dv 0.005, row 3: ``{1: .001, 2: .002, 3: .003, 4: .003}``).
"""

import pytest
from market_helpers import book, check_invariants, request

from market import clear

ROW = {4: {1: 0.001, 2: 0.002, 3: 0.003, 4: 0.004}, 3: {1: 0.001, 2: 0.002, 3: 0.003, 4: 0.003}}
NEED = {3: 0.005, 4: 0.0055}


def zone_request():
    return request(
        request_id="z4",
        bus=4,
        direction="down",
        p_kw=5.0 / 3.0,
        dv_required_pu=1.0 / 150.0,
        max_price_eur_per_kwh=0.3,
        sensitivity_pu_per_kw=ROW[4],
    )


def per_bus_requests():
    return [
        request(
            request_id=f"b{b}",
            bus=b,
            direction="down",
            p_kw=NEED[b] / ROW[b][b],
            dv_required_pu=NEED[b],
            max_price_eur_per_kwh=0.3,
            sensitivity_pu_per_kw=ROW[b],
        )
        for b in (3, 4)
    ]


def down_book(rows):
    return book(rows, direction=["down"] * len(rows))


def support(result, order_book, bus: int) -> float:
    """Voltage change at ``bus`` from all awards, by the feeder's true matrix."""
    return sum(a.p_kw * 0.001 * min(bus, int(order_book.bus[a.book_row])) for a in result.awards)


@pytest.mark.parametrize("rule", ["pay_as_bid", "pay_as_clear"])
def test_merit_order_buys_the_zone_need_once(rule) -> None:
    """Cheapest first: bus 1's 5 kW at 0.005. The zone request buys its 5/3 kW there; the
    two per-bus requests buy 1.375 + 5/3 = 3.04 kW of the same row, the feeder's need
    twice. (A kW at bus 1 moves bus 4 a quarter as much as one at bus 4: these rules count
    it one-for-one, see their module docstring.)"""
    order_book = down_book([("w", 4, 1.0, 0.05), ("u", 3, 1.0, 0.04), ("far", 1, 5.0, 0.005)])
    zone = clear(rule, [zone_request()], order_book)
    check_invariants(zone, [zone_request()], order_book)
    assert {a.bid_id: a.p_kw for a in zone.awards} == {"far": pytest.approx(5.0 / 3.0)}
    per_bus = clear(rule, per_bus_requests(), order_book)
    assert sum(a.p_kw for a in per_bus.awards) == pytest.approx(1.375 + 5.0 / 3.0)


@pytest.mark.parametrize("rule", ["locational", "iterative_price"])
def test_sensitivity_rules_fix_every_bus_of_the_zone(rule) -> None:
    """Costs per pu at bus 4: bus 2's row 0.008 / 0.002 = 4 EUR/pu, bus 4's 0.02 / 0.004 = 5,
    bus 3's 0.03 / 0.003 = 10. Both rules buy 1/150 pu at bus 4 from bus 2 (10/3 kW of its
    5); that moves bus 3 by 0.002 x 10/3 = 0.0067 >= its 0.005 too. The per-bus
    constraints would have needed only 0.0055 / 0.002 = 2.75 kW (bus 3 binds through the
    zone's p_kw, and the flexibility sits upstream of both): the zone's price."""
    order_book = down_book([("w", 4, 5.0, 0.02), ("u", 3, 5.0, 0.03), ("mid", 2, 5.0, 0.008)])
    result = clear(rule, [zone_request()], order_book)
    check_invariants(result, [zone_request()], order_book)
    assert result.converged
    assert {a.bid_id: a.p_kw for a in result.awards} == {"mid": pytest.approx(10.0 / 3.0)}
    for bus, need in NEED.items():
        assert support(result, order_book, bus) >= need - 1e-12
    exact = clear(rule, per_bus_requests(), order_book)
    assert {a.bid_id: a.p_kw for a in exact.awards} == {"mid": pytest.approx(2.75)}


@pytest.mark.parametrize("rule", ["locational", "iterative_price"])
def test_flexibility_at_the_worst_bus_fixes_the_binding_bus(rule) -> None:
    """Only bus 4 offers (0.02 EUR/kWh, 5 kW): the rules buy dv / s_44 = 5/3 kW there, which
    is the zone's p_kw and moves bus 3 by exactly its need, 0.003 x 5/3 = 0.005 pu; bus 4's
    own need alone (1.375 kW) would have left bus 3 short."""
    order_book = down_book([("w", 4, 5.0, 0.02)])
    result = clear(rule, [zone_request()], order_book)
    check_invariants(result, [zone_request()], order_book)
    assert {a.bid_id: a.p_kw for a in result.awards} == {"w": pytest.approx(5.0 / 3.0)}
    assert support(result, order_book, 3) == pytest.approx(NEED[3])
