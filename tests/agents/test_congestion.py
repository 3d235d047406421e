"""The DSO's congestion requests on pandapower's CIGRE LV network (three MV/LV transformers).

Peers: for which buses lie behind a branch, pandapower's own topology graph
(``pandapower.topology.create_nxgraph``) with the branch taken out, the buses no longer
connected to the external grid; for the loadings, our power flow (tested against
pandapower's runpp in tests/grid). At 1.5x its base load CIGRE LV loads its transformers to
131 % (R0-R1), 110 % (I0-I1) and 132 % (C0-C1); with 60 kW of PV at every load bus at a
20 % noon load, C0-C1 exports at 129 %.
"""

from datetime import UTC, datetime, timedelta

import networkx as nx
import numpy as np
import pandapower.topology as topology
import pytest

from agents import DSOAgent, DSOSettings
from agents.congestion import side_behind
from grid import Network, build_network, pandapower_net, powerflow
from market import Direction, FlexRequest

T0 = datetime(2026, 1, 15, 6, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=15)


@pytest.fixture(scope="module")
def cigre_lv():
    return build_network("cigre_lv")


def peak(network, scale: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    return network.base_p_mw * scale, network.base_q_mvar * scale


def noon_export(network) -> tuple[np.ndarray, np.ndarray]:
    p = network.base_p_mw * 0.2
    p[network.bus_position(np.unique(network.load_bus))] -= 0.06
    return p, network.base_q_mvar * 0.2


def congestion(requests: list[FlexRequest]) -> dict[str, FlexRequest]:
    return {r.zone: r for r in requests if r.zone is not None}


def buses_behind_by_pandapower(network, branch: int) -> set[int]:
    """pandapower's graph without the branch: the buses cut off from the external grid."""
    net = pandapower_net("cigre_lv")
    index = int(network.branch_element_id[branch])
    if network.branch_kind[branch] == "trafo":
        net.trafo.loc[index, "in_service"] = False
    else:
        net.line.loc[index, "in_service"] = False
    graph = topology.create_nxgraph(net, respect_switches=True)
    supplied = set()
    for slack in net.ext_grid.bus:
        supplied |= nx.node_connected_component(graph, slack)
    return set(net.bus.index) - supplied


def deliver_behind(network, p, q, request: FlexRequest) -> np.ndarray:
    """Loadings after the request's kW is delivered behind the branch, spread over the
    buses of its map in proportion to their consumption (or evenly if none)."""
    p = p.copy()
    positions = network.bus_position(list(request.sensitivity_pu_per_kw))
    weight = np.abs(p[positions])
    weight = (
        weight / weight.sum() if weight.sum() > 0 else np.full(len(positions), 1 / len(positions))
    )
    sign = 1.0 if request.direction is Direction.DOWN else -1.0
    p[positions] += sign * request.p_kw / 1000.0 * weight
    return powerflow(network, p, q).loading_percent


def test_each_overloaded_transformer_gets_one_request_for_the_buses_behind_it(cigre_lv) -> None:
    dso = DSOAgent(cigre_lv)
    assessment = dso.assess(*peak(cigre_lv))
    overloaded = assessment.overloaded_branches
    assert sorted(cigre_lv.branch_kind[overloaded].tolist()) == ["trafo"] * 3
    found = congestion(dso.requests(assessment, T0, T1, 7))
    assert sorted(found) == ["trafo-0", "trafo-1", "trafo-2"]
    for b in overloaded.tolist():
        request = found[f"trafo-{int(cigre_lv.branch_element_id[b])}"]
        assert request.direction is Direction.UP  # consumption behind it: less of it helps
        assert request.request_id == f"r7-trafo-{int(cigre_lv.branch_element_id[b])}"
        assert set(request.sensitivity_pu_per_kw) == buses_behind_by_pandapower(cigre_lv, b)
        assert request.bus in request.sensitivity_pu_per_kw
        assert request.sensitivity_pu_per_kvar == {}
        values = set(request.sensitivity_pu_per_kw.values())
        assert len(values) == 1  # every kW behind the branch counts the same
        assert request.p_kw * values.pop() == pytest.approx(request.dv_required_pu)
        assert request.max_price_eur_per_kwh == DSOSettings().max_price_eur_per_kwh


def test_delivering_the_request_brings_the_transformer_just_under_its_limit(cigre_lv) -> None:
    """The kW asked for, taken off the buses behind each transformer, leaves its loading
    between the target (limit - margin) minus 1 point and the limit."""
    settings = DSOSettings()
    dso = DSOAgent(cigre_lv, settings)
    p, q = peak(cigre_lv)
    assessment = dso.assess(p, q)
    target = settings.loading_max_percent - settings.loading_margin_percent
    for b in assessment.overloaded_branches.tolist():
        request = congestion(dso.requests(assessment, T0, T1, 0))[
            f"trafo-{int(cigre_lv.branch_element_id[b])}"
        ]
        loading = deliver_behind(cigre_lv, p, q, request)[b]
        assert target - 1.0 <= loading <= settings.loading_max_percent, (b, loading)


def test_export_through_a_transformer_asks_for_more_consumption_behind_it(cigre_lv) -> None:
    dso = DSOAgent(cigre_lv)
    p, q = noon_export(cigre_lv)
    assessment = dso.assess(p, q)
    found = congestion(dso.requests(assessment, T0, T1, 0))
    assert list(found) == ["trafo-2"]
    request = found["trafo-2"]
    assert request.direction is Direction.DOWN
    b = int(
        np.flatnonzero((cigre_lv.branch_kind == "trafo") & (cigre_lv.branch_element_id == 2))[0]
    )
    assert assessment.result.loading_percent[b] > 100.0
    loading = deliver_behind(cigre_lv, p, q, request)[b]
    assert 97.0 <= loading <= 100.0


def test_no_congestion_requests_within_limits_or_when_switched_off(cigre_lv) -> None:
    dso = DSOAgent(cigre_lv)
    assessment = dso.assess(*peak(cigre_lv, 1.0))
    assert len(assessment.overloaded_branches) == 0
    assert congestion(dso.requests(assessment, T0, T1, 0)) == {}
    off = DSOAgent(cigre_lv, DSOSettings(manage_congestion=False))
    assert congestion(off.requests(off.assess(*peak(cigre_lv)), T0, T1, 0)) == {}


def test_every_branch_has_the_side_behind_it_that_pandapower_cuts_off(cigre_lv) -> None:
    for b in range(cigre_lv.n_branch):
        side = side_behind(cigre_lv, b)
        assert side is not None, b
        buses = cigre_lv.bus_ids[np.isin(cigre_lv.model.node_of_bus, side[0])]
        assert set(buses.tolist()) == buses_behind_by_pandapower(cigre_lv, b), b


def test_a_branch_in_a_loop_has_no_side_behind_it() -> None:
    """CIGRE MV with every switch closed has loops; a line in one leaves both of its ends
    supplied when opened, so the DSO cannot say whose kW relieves it."""
    meshed = pandapower_net("cigre_mv")
    meshed.switch["closed"] = True
    network = Network.from_pandapower(meshed)
    graph = topology.create_nxgraph(meshed, respect_switches=True, include_trafos=False)
    in_loop = []
    for b in range(network.n_branch):
        if network.branch_kind[b] != "line":
            continue
        line = meshed.line.loc[int(network.branch_element_id[b])]
        g = graph.copy()
        g.remove_edge(int(line.from_bus), int(line.to_bus))
        if nx.has_path(g, int(line.from_bus), int(line.to_bus)):
            in_loop.append(b)
    assert len(in_loop) >= 3
    assert all(side_behind(network, b) is None for b in in_loop)


def test_settings_refuse_a_negative_margin() -> None:
    with pytest.raises(ValueError, match="loading_margin_percent"):
        DSOSettings(loading_margin_percent=-1.0)
