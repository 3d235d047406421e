"""The DSO's zone requests cleared by every market rule, delivered, and checked with a power
flow (our power flow; tested against pandapower's runpp in tests/grid).

The case: CIGRE LV at a sunny noon (20 % load, 30 kW of PV at every load bus), which puts two
groups of buses above 1.05 pu, up to 1.080 pu; every load bus offers 80 kW of extra
consumption (``down``), asking 0.020, 0.022, ... EUR/kWh in bus order.
"""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from agent_fixtures import voltage_requests

from agents import DSOAgent, DSOSettings
from grid import build_network, powerflow
from market import OrderBook, clear

T0 = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=15)


@pytest.fixture(scope="module")
def case():
    network = build_network("cigre_lv")
    buses = np.unique(network.load_bus)
    p = network.base_p_mw * 0.2
    p[network.bus_position(buses)] -= 0.030
    q = network.base_q_mvar * 0.2
    n = buses.size
    book = OrderBook.from_arrays(
        [f"b{i}" for i in range(n)],
        [f"s{i}" for i in range(n)],
        buses,
        ["down"] * n,
        [80.0] * n,
        0.02 + 0.002 * np.arange(n),
    )
    return network, p, q, book


def after_delivery(network, p, q, result) -> np.ndarray:
    p = p.copy()
    for award in result.awards:
        p[network.bus_position([award.bus])[0]] += award.p_kw / 1000.0
    return powerflow(network, p, q).vm_pu


@pytest.mark.parametrize(
    ("rule", "params"), [("locational", {}), ("iterative_price", {"max_rounds": 200})]
)
def test_sensitivity_rules_clear_every_zone(case, rule, params) -> None:
    """The sensitivity rules meet each zone's dv at its worst bus by the published row; on
    this radial feeder that keeps every bus of the zone in band too (the module docstring's
    argument), checked with the power flow after delivery (1 mV for linearisation).
    ``iterative_price`` needs more than its default 50 rounds here: the last 2 % of a need
    moves the price by 2 % of a step per round."""
    network, p, q, book = case
    settings = DSOSettings()
    dso = DSOAgent(network, settings)
    requests = voltage_requests(dso.requests(dso.assess(p, q), T0, T1, 0))
    assert 2 <= len(requests) <= 4  # two connected zones, one split where a branch joins
    result = clear(rule, requests, book, params)
    assert result.converged
    assert after_delivery(network, p, q, result).max() <= settings.v_max_pu + 1e-3


@pytest.mark.parametrize("rule", ["pay_as_bid", "pay_as_clear"])
def test_merit_order_rules_buy_each_zone_once(case, rule) -> None:
    """The merit-order rules buy each zone's ``p_kw`` once: 118.9 kW in all, where the
    per-bus requests of the same noon (16 of them) have them buy 371 kW. They count a kW
    one-for-one anywhere in the request's map, so the voltage outcome is not theirs to
    promise (here the worst bus ends at 1.041 pu); the test asks that it comes down by
    more than half its rise above the band."""
    network, p, q, book = case
    by_mode = {}
    for mode in ("zone", "bus"):
        dso = DSOAgent(network, DSOSettings(request_per=mode))
        requests = voltage_requests(dso.requests(dso.assess(p, q), T0, T1, 0))
        by_mode[mode] = (requests, clear(rule, requests, book, {}))
    requests, result = by_mode["zone"]
    bought = sum(a.p_kw for a in result.awards)
    assert bought == pytest.approx(sum(r.p_kw for r in requests), rel=1e-9)
    assert bought < 0.5 * sum(a.p_kw for a in by_mode["bus"][1].awards)
    before = powerflow(network, p, q).vm_pu.max()
    after = after_delivery(network, p, q, result).max()
    assert after - 1.05 < 0.5 * (before - 1.05)
