"""The DSO agent on pandapower's CIGRE LV network with PV added at noon.

Peers: for the voltages, our power flow (itself tested against pandapower's runpp in
tests/grid); for the zones, pandapower's own topology graph (``pandapower.topology``,
lines only) restricted to the violated buses; for the sensitivity maps, the full matrix of
:func:`grid.sensitivities`. The tests check that requests appear once per zone, at its worst
bus, point the right way, and ask for a kW need that fixes the whole zone when delivered
there (checked with a real power flow).
"""

from datetime import UTC, datetime, timedelta

import networkx as nx
import numpy as np
import pandapower.topology as topology
import pytest
from agent_fixtures import voltage_requests
from pydantic import ValidationError

from agents import DSOAgent, DSOSettings
from grid import Network, build_network, pandapower_net, powerflow, sensitivities
from market import Direction, FlexRequest

T0 = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=15)


@pytest.fixture(scope="module")
def cigre_lv():
    return build_network("cigre_lv")


@pytest.fixture(scope="module")
def line_graph():
    """CIGRE LV's buses joined by its lines (pandapower's topology, transformers left out)."""
    return topology.create_nxgraph(pandapower_net("cigre_lv"), include_trafos=False)


def noon_with_pv(network, pv_kw_per_load_bus: float) -> tuple[np.ndarray, np.ndarray]:
    """Base loads at 20 % (a sunny noon) and PV of the given size at every load bus."""
    p = network.base_p_mw * 0.2
    q = network.base_q_mvar * 0.2
    load_buses = network.bus_position(np.unique(network.load_bus))
    p = p.copy()
    p[load_buses] -= pv_kw_per_load_bus / 1000.0
    return p, q


def expected_zones(
    graph, violated: np.ndarray, assessment=None, network: Network | None = None
) -> list[set[int]]:
    """Connected components of the line graph restricted to the violated buses; given the
    ``assessment`` on ``network``, each split as the DSO documents it: a bus that kW at
    the component's worst bus would bring into band only with more than twice the kW the
    worst bus needs (by that bus's sensitivity row) goes to a zone of its own, once; what
    that zone's worst bus cannot serve so is in no zone (it waits for the next round)."""
    components = [set(c) for c in nx.connected_components(graph.subgraph(violated.tolist()))]
    if assessment is None:
        return components
    settings, result = DSOSettings(), assessment.result
    vm = result.vm_pu
    need = np.maximum(vm - settings.v_max_pu, settings.v_min_pu - vm) + settings.margin_pu
    zones, pending = [], [(np.array(sorted(c)), 0) for c in components]
    while pending:
        buses, depth = pending.pop()
        positions = network.bus_position(buses)
        w = positions[np.argmax(need[positions])]
        row = -sensitivities(network, result, buses=network.bus_ids[[w]]).dv_dp_pu_per_mw[0]
        weak = need[positions] / row[positions] > 2.0 * need[w] / row[w]
        zones.append(set(buses[~weak].tolist()))
        if weak.any() and depth == 0:  # one pass: the rest of a split zone is not split again
            pending.append((buses[weak], 1))
    return zones


def deliver(network, p, q, request: FlexRequest) -> np.ndarray:
    """Voltages after ``request.p_kw`` is delivered at its bus in its direction."""
    p = p.copy()
    sign = 1.0 if request.direction is Direction.DOWN else -1.0
    p[network.bus_position([request.bus])[0]] += sign * request.p_kw / 1000.0
    return powerflow(network, p, q).vm_pu


def test_no_requests_when_every_bus_is_in_band(cigre_lv) -> None:
    dso = DSOAgent(cigre_lv, DSOSettings())
    p, q = noon_with_pv(cigre_lv, 0.0)
    assessment = dso.assess(p, q)
    assert not assessment.violated
    assert voltage_requests(dso.requests(assessment, T0, T1, 0)) == []


@pytest.mark.parametrize("pv_kw", [25.0, 30.0])
def test_one_request_per_zone_at_its_worst_bus(cigre_lv, line_graph, pv_kw) -> None:
    """25 kW of PV per load bus puts three groups of buses above 1.05 pu (three sub-feeders
    whose common buses stay in band), 30 kW two larger groups: one ``down`` request per
    group, at the group's highest voltage, each a valid FlexRequest."""
    settings = DSOSettings()
    dso = DSOAgent(cigre_lv, settings)
    p, q = noon_with_pv(cigre_lv, pv_kw)
    assessment = dso.assess(p, q)
    vm = assessment.result.vm_pu
    zones = expected_zones(line_graph, assessment.over_bus_ids, assessment, cigre_lv)
    assert len(zones) >= 2 and max(len(z) for z in zones) >= 3, "the case must have zones"
    requests = voltage_requests(dso.requests(assessment, T0, T1, 3))
    assert len(requests) == len(zones)
    for zone in zones:
        members = np.array(sorted(zone))
        worst = int(members[np.argmax(vm[cigre_lv.bus_position(members)])])
        (request,) = [r for r in requests if r.bus in zone]
        assert request.bus == worst
        assert request.direction is Direction.DOWN
        assert request.request_id == f"r3-b{worst}"
        assert request.max_price_eur_per_kwh == settings.max_price_eur_per_kwh
        assert FlexRequest.model_validate(request.model_dump()) == request


@pytest.mark.parametrize("pv_kw", [25.0, 30.0, 35.0])
def test_p_kw_at_the_worst_bus_brings_the_whole_zone_into_band(cigre_lv, line_graph, pv_kw) -> None:
    """Deliver each request's ``p_kw`` of extra consumption at its bus, alone: every bus of
    its zone ends at or below ``v_max - margin`` within 1 mV (the sizing's power flows
    leave < 0.5 mV; 35 kW puts the zone up to 1.094 pu), and not far below it either: the
    binding bus lands within 1 mV of the target, so the need is not over-stated."""
    settings = DSOSettings()
    dso = DSOAgent(cigre_lv, settings)
    p, q = noon_with_pv(cigre_lv, pv_kw)
    assessment = dso.assess(p, q)
    target = settings.v_max_pu - settings.margin_pu
    for request in voltage_requests(dso.requests(assessment, T0, T1, 0)):
        (zone,) = [
            z
            for z in expected_zones(line_graph, assessment.over_bus_ids, assessment, cigre_lv)
            if request.bus in z
        ]
        positions = cigre_lv.bus_position(sorted(zone))
        assert assessment.result.vm_pu[positions].max() > settings.v_max_pu
        after = deliver(cigre_lv, p, q, request)[positions]
        assert after.max() == pytest.approx(target, abs=1e-3)


def test_the_zone_need_follows_the_column_of_the_sensitivity_matrix(cigre_lv) -> None:
    """``p_kw`` = max over zone buses of need_b / s_bw (the column: bus b's response to kW
    at the worst bus w), within 10 % (the DSO measures the column with power flows, so it
    includes the curvature over ``p_kw``); ``dv_required_pu`` = p_kw x s_ww; the kW map is
    row w of the sensitivity matrix, every bus at least 5 % of its largest entry."""
    settings = DSOSettings()
    dso = DSOAgent(cigre_lv, settings)
    p, q = noon_with_pv(cigre_lv, 25.0)
    assessment = dso.assess(p, q)
    vm = assessment.result.vm_pu
    full = -sensitivities(cigre_lv, assessment.result).dv_dp_pu_per_mw / 1000.0
    over = cigre_lv.bus_position(assessment.over_bus_ids)
    need = vm - settings.v_max_pu + settings.margin_pu
    graph = topology.create_nxgraph(pandapower_net("cigre_lv"), include_trafos=False)
    for request in voltage_requests(dso.requests(assessment, T0, T1, 0)):
        w = cigre_lv.bus_position([request.bus])[0]
        zones = expected_zones(graph, cigre_lv.bus_ids[over], assessment, cigre_lv)
        (zone,) = [z for z in zones if request.bus in z]
        members = cigre_lv.bus_position(sorted(zone))
        linear = float((need[members] / full[members, w]).max())
        assert request.p_kw == pytest.approx(linear, rel=0.1)
        assert request.dv_required_pu == pytest.approx(max(request.p_kw * full[w, w], need[w]))
        row = full[w]
        kept = cigre_lv.bus_ids[row >= settings.min_sensitivity_share * row.max()]
        assert set(request.sensitivity_pu_per_kw) == set(kept.tolist())
        for bus, value in request.sensitivity_pu_per_kw.items():
            assert value == pytest.approx(row[cigre_lv.bus_position([bus])[0]], rel=1e-12)


def test_per_bus_mode_requests_at_exactly_the_buses_out_of_band(cigre_lv) -> None:
    """``request_per="bus"``: 60 kW of PV at each load bus pushes the feeder ends above 1.05
    pu: one ``down`` request per such bus, none elsewhere, each listing its own bus with the
    largest effect on its neighbourhood and a need equal to the overshoot plus the margin."""
    settings = DSOSettings(request_per="bus")
    dso = DSOAgent(cigre_lv, settings)
    p, q = noon_with_pv(cigre_lv, 60.0)
    vm = powerflow(cigre_lv, p, q).vm_pu
    over = set(cigre_lv.bus_ids[vm > settings.v_max_pu].tolist())
    assert over, "the test case must create overvoltage"
    requests = voltage_requests(dso.requests(dso.assess(p, q), T0, T1, 3))
    assert {r.bus for r in requests} == over
    assert len(requests) == len(over)
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


def test_per_bus_mode_flexibility_removes_the_violation(cigre_lv) -> None:
    """Deliver the worst request's ``p_kw`` at its own bus: that bus falls back to the band
    (within 2 mV of linearisation error)."""
    settings = DSOSettings(request_per="bus")
    dso = DSOAgent(cigre_lv, settings)
    p, q = noon_with_pv(cigre_lv, 60.0)
    requests = voltage_requests(dso.requests(dso.assess(p, q), T0, T1, 0))
    worst = max(requests, key=lambda r: r.dv_required_pu)
    vm = deliver(cigre_lv, p, q, worst)
    assert vm[cigre_lv.bus_position([worst.bus])[0]] <= settings.v_max_pu + 0.002


def test_zones_need_far_less_than_one_request_per_bus(cigre_lv) -> None:
    """The same 30 kW noon: the zone requests ask for less than half the kW that the
    per-bus requests add up to (the merit-order rules buy each request's p_kw)."""
    p, q = noon_with_pv(cigre_lv, 30.0)
    totals = {}
    for mode in ("zone", "bus"):
        dso = DSOAgent(cigre_lv, DSOSettings(request_per=mode))
        totals[mode] = sum(
            r.p_kw for r in voltage_requests(dso.requests(dso.assess(p, q), T0, T1, 0))
        )
    assert totals["zone"] < 0.5 * totals["bus"]


def test_undervoltage_asks_for_up_once_per_zone(cigre_lv, line_graph) -> None:
    """Evening load at 1.1x the base drops four groups of buses below 0.95 pu (down to
    0.903): one ``up`` request per group, at its lowest voltage; delivering its ``p_kw``
    (less consumption) at that bus alone lifts every bus of the group to ``v_min + margin``
    within 1 mV."""
    settings = DSOSettings()
    dso = DSOAgent(cigre_lv, settings)
    p, q = cigre_lv.base_p_mw * 1.1, cigre_lv.base_q_mvar * 1.1
    assessment = dso.assess(p, q)
    zones = expected_zones(line_graph, assessment.under_bus_ids, assessment, cigre_lv)
    assert len(zones) >= 2 and max(len(z) for z in zones) >= 3, "the case must have zones"
    requests = voltage_requests(dso.requests(assessment, T0, T1, 0))
    assert all(r.direction is Direction.UP for r in requests)
    assert len(requests) == len(zones)
    vm = assessment.result.vm_pu
    for request in requests:
        (zone,) = [z for z in zones if request.bus in z]
        positions = cigre_lv.bus_position(sorted(zone))
        assert vm[cigre_lv.bus_position([request.bus])[0]] == vm[positions].min()
        after = deliver(cigre_lv, p, q, request)[positions]
        assert after.min() == pytest.approx(settings.v_min_pu + settings.margin_pu, abs=1e-3)


def test_buses_held_by_the_external_grid_get_no_request() -> None:
    """With the external grid at 1.07 pu every bus is above the band, the slack included;
    no flexibility moves the slack, so no request is placed there and none asks for it."""
    net = pandapower_net("cigre_lv")
    net.ext_grid["vm_pu"] = 1.07
    network = Network.from_pandapower(net, name="cigre_lv_high")
    dso = DSOAgent(network, DSOSettings())
    p, q = noon_with_pv(network, 0.0)
    assessment = dso.assess(p, q)
    assert set(network.slack_bus_ids.tolist()) <= set(assessment.over_bus_ids.tolist())
    requests = voltage_requests(dso.requests(assessment, T0, T1, 0))
    assert requests
    assert not {r.bus for r in requests} & set(network.slack_bus_ids.tolist())
    assert all(r.p_kw > 0 and r.sensitivity_pu_per_kw for r in requests)


def test_settings_refuse_an_inverted_band() -> None:
    with pytest.raises(ValueError, match="v_min_pu"):
        DSOSettings(v_min_pu=1.05, v_max_pu=0.95)


def test_settings_refuse_an_unknown_request_mode() -> None:
    with pytest.raises(ValidationError, match="request_per"):
        DSOSettings(request_per="feeder")
