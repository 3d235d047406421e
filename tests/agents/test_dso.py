"""The DSO agent on pandapower's CIGRE LV network with PV added at noon.

Peer for the voltages: our power flow (itself tested against pandapower's runpp in
tests/grid); the test checks that requests appear exactly at the buses outside the band,
point the right way, and carry sensitivities that make the need solvable.
"""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from agents import DSOAgent, DSOSettings
from grid import build_network, powerflow
from market import Direction

T0 = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=15)


@pytest.fixture(scope="module")
def cigre_lv():
    return build_network("cigre_lv")


def noon_with_pv(network, pv_kw_per_load_bus: float) -> tuple[np.ndarray, np.ndarray]:
    """Base loads at 20 % (a sunny noon) and PV of the given size at every load bus."""
    p = network.base_p_mw * 0.2
    q = network.base_q_mvar * 0.2
    load_buses = network.bus_position(np.unique(network.load_bus))
    p = p.copy()
    p[load_buses] -= pv_kw_per_load_bus / 1000.0
    return p, q


def test_no_requests_when_every_bus_is_in_band(cigre_lv) -> None:
    dso = DSOAgent(cigre_lv, DSOSettings())
    p, q = noon_with_pv(cigre_lv, 0.0)
    assessment = dso.assess(p, q)
    assert not assessment.violated
    assert dso.requests(assessment, T0, T1, 0) == []


def test_requests_at_exactly_the_buses_out_of_band(cigre_lv) -> None:
    """60 kW of PV at each load bus pushes the feeder ends above 1.05 pu: one ``down`` request
    per such bus, none elsewhere, each listing its own bus with the largest effect on its
    neighbourhood and a positive need equal to the overshoot plus the margin."""
    settings = DSOSettings()
    dso = DSOAgent(cigre_lv, settings)
    p, q = noon_with_pv(cigre_lv, 60.0)
    vm = powerflow(cigre_lv, p, q).vm_pu
    over = set(cigre_lv.bus_ids[vm > settings.v_max_pu].tolist())
    assert over, "the test case must create overvoltage"
    requests = dso.requests(dso.assess(p, q), T0, T1, 3)
    assert {r.bus for r in requests} == over
    for r in requests:
        assert r.direction is Direction.DOWN
        position = cigre_lv.bus_position([r.bus])[0]
        assert r.dv_required_pu == pytest.approx(
            vm[position] - settings.v_max_pu + settings.margin_pu
        )
        sens = r.sensitivity_pu_per_kw
        assert sens[r.bus] > 0
        assert all(v > 0 for v in sens.values())
        assert r.p_kw == pytest.approx(r.dv_required_pu / sens[r.bus])
        assert r.max_price_eur_per_kwh == settings.max_price_eur_per_kwh


def test_the_requested_flexibility_removes_the_violation(cigre_lv) -> None:
    """Deliver each request's ``p_kw`` of extra consumption at its own bus (the linearised
    remedy the DSO asks for): the worst overvoltage falls back to the band (within 2 mV of
    linearisation error)."""
    settings = DSOSettings()
    dso = DSOAgent(cigre_lv, settings)
    p, q = noon_with_pv(cigre_lv, 60.0)
    requests = dso.requests(dso.assess(p, q), T0, T1, 0)
    worst = max(requests, key=lambda r: r.dv_required_pu)
    p_fixed = p.copy()
    p_fixed[cigre_lv.bus_position([worst.bus])[0]] += worst.p_kw / 1000.0
    vm = powerflow(cigre_lv, p_fixed, q).vm_pu
    assert vm[cigre_lv.bus_position([worst.bus])[0]] <= settings.v_max_pu + 0.002


def test_undervoltage_asks_for_up(cigre_lv) -> None:
    """Heavy evening load (three times the base) drops the feeder ends below 0.95 pu."""
    dso = DSOAgent(cigre_lv, DSOSettings())
    assessment = dso.assess(cigre_lv.base_p_mw * 3.0, cigre_lv.base_q_mvar * 3.0)
    requests = dso.requests(assessment, T0, T1, 0)
    assert requests and all(r.direction is Direction.UP for r in requests)
    assert {r.bus for r in requests} == set(assessment.under_bus_ids.tolist())


def test_settings_refuse_an_inverted_band() -> None:
    with pytest.raises(ValueError, match="v_min_pu"):
        DSOSettings(v_min_pu=1.05, v_max_pu=0.95)
