"""Batched power flow against pandapower's runpp (the peer) on five reference grids.

Tolerances are the issue's: vm 1e-6 pu, va 1e-4 degree. Branch results (current-based loading,
from-end active power) use 1e-4 percent / 1e-6 MW.
"""

from __future__ import annotations

import copy

import numpy as np
import pandapower as pp
import pytest

import grid
from tests.grid.conftest import REFERENCE_CASES, bus_consumption, runpp

VM_TOL_PU = 1e-6
VA_TOL_DEGREE = 1e-4
N_RANDOM = 20


def _pandapower_results(net: pp.pandapowerNet, network: grid.Network) -> dict[str, np.ndarray]:
    """pandapower's results in the network's bus and branch order."""
    line = network.branch_kind == "line"
    ids = network.branch_element_id
    return {
        "vm_pu": net.res_bus.vm_pu.loc[network.bus_ids].to_numpy(),
        "va_degree": net.res_bus.va_degree.loc[network.bus_ids].to_numpy(),
        "loading_percent": np.where(
            line,
            net.res_line.loading_percent.reindex(ids).to_numpy(),
            net.res_trafo.loading_percent.reindex(ids).to_numpy(),
        ),
        "p_from_mw": np.where(
            line,
            net.res_line.p_from_mw.reindex(ids).to_numpy(),
            net.res_trafo.p_hv_mw.reindex(ids).to_numpy(),
        ),
    }


def _scaled_nets(net: pp.pandapowerNet, seed: int) -> list[pp.pandapowerNet]:
    """The base net and N_RANDOM copies with random per-element load/PV/storage scalings."""
    rng = np.random.default_rng(seed)
    nets = [net]
    for _ in range(N_RANDOM):
        scaled = copy.deepcopy(net)
        scaled.load["scaling"] = rng.uniform(0.0, 2.0, len(scaled.load))
        scaled.sgen["scaling"] = rng.uniform(0.0, 1.5, len(scaled.sgen))
        scaled.storage["scaling"] = rng.uniform(-1.0, 1.0, len(scaled.storage))
        nets.append(scaled)
    return nets


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_base_and_random_scalings_match_pandapower(case, name: str) -> None:
    """Peer: pandapower runpp (defaults). vm within 1e-6 pu, va within 1e-4 degree, for the
    base case and 20 random scalings solved as one batch of 21 scenarios."""
    net, network = case(name)
    nets = _scaled_nets(net, seed=REFERENCE_CASES.index(name))
    injections = [bus_consumption(n, network.bus_ids) for n in nets]
    p_mw = np.array([p for p, _ in injections])
    q_mvar = np.array([q for _, q in injections])
    np.testing.assert_allclose(p_mw[0], network.base_p_mw, rtol=0, atol=1e-12)
    np.testing.assert_allclose(q_mvar[0], network.base_q_mvar, rtol=0, atol=1e-12)
    result = grid.powerflow(network, p_mw, q_mvar)
    assert result.converged.all()
    assert result.vm_pu.shape == (len(nets), network.n_bus)
    for k, scaled in enumerate(nets):
        runpp(scaled)
        expected = _pandapower_results(scaled, network)
        np.testing.assert_allclose(result.vm_pu[k], expected["vm_pu"], rtol=0, atol=VM_TOL_PU)
        np.testing.assert_allclose(
            result.va_degree[k], expected["va_degree"], rtol=0, atol=VA_TOL_DEGREE
        )
        np.testing.assert_allclose(
            result.loading_percent[k], expected["loading_percent"], rtol=0, atol=1e-4
        )
        np.testing.assert_allclose(result.p_from_mw[k], expected["p_from_mw"], rtol=0, atol=1e-6)
        pl_mw = scaled.res_line.pl_mw.sum() + scaled.res_trafo.pl_mw.sum()
        assert result.losses_mw[k] == pytest.approx(pl_mw, abs=1e-6)


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_base_injections_are_pandapowers_bus_powers(case, name: str) -> None:
    """Peer: pandapower res_bus.p_mw/q_mvar (load convention) on non-slack buses, 1e-9 MW."""
    net, network = case(name)
    runpp(net)
    non_slack = ~np.isin(network.bus_ids, network.slack_bus_ids)
    ids = network.bus_ids[non_slack]
    np.testing.assert_allclose(
        network.base_p_mw[non_slack], net.res_bus.p_mw.loc[ids].to_numpy(), atol=1e-9
    )
    np.testing.assert_allclose(
        network.base_q_mvar[non_slack], net.res_bus.q_mvar.loc[ids].to_numpy(), atol=1e-9
    )


def test_meshed_cigre_mv_matches_pandapower(case) -> None:
    """Peer: pandapower runpp (defaults) on CIGRE MV with all its open line switches closed
    (three loops): vm within 1e-6 pu, va within 1e-4 degree, base case and 0.5x/1.5x load."""
    net, _ = case("cigre_mv")
    assert not net.switch.closed.all()
    net.switch["closed"] = True
    network = grid.Network.from_pandapower(net)
    for scaling in (1.0, 0.5, 1.5):
        net.load["scaling"] = scaling
        p_mw, q_mvar = bus_consumption(net, network.bus_ids)
        result = grid.powerflow(network, p_mw, q_mvar)
        assert bool(result.converged)
        runpp(net)
        expected = _pandapower_results(net, network)
        np.testing.assert_allclose(result.vm_pu, expected["vm_pu"], rtol=0, atol=VM_TOL_PU)
        np.testing.assert_allclose(
            result.va_degree, expected["va_degree"], rtol=0, atol=VA_TOL_DEGREE
        )


def test_single_scenario_keeps_one_dimensional_shapes(case) -> None:
    """Peer: the same scenario solved inside a batch (bit-for-bit equal vm)."""
    _, network = case("cigre_mv")
    single = grid.powerflow(network, network.base_p_mw, network.base_q_mvar)
    batch = grid.powerflow(
        network, np.tile(network.base_p_mw, (3, 1)), np.tile(network.base_q_mvar, (3, 1))
    )
    assert single.vm_pu.shape == (network.n_bus,)
    assert single.loading_percent.shape == (network.n_branch,)
    assert single.losses_mw.shape == () and bool(single.converged)
    np.testing.assert_allclose(batch.vm_pu[1], single.vm_pu, rtol=0, atol=1e-12)


def test_absurd_load_is_flagged_not_returned(case) -> None:
    """Peer: pandapower runpp fails on 1000x the CIGRE LV load; we flag that scenario and
    return NaN for it, while the normal scenario of the same batch stays valid (1e-6 pu)."""
    net, network = case("cigre_lv")
    p_mw = np.stack([network.base_p_mw, network.base_p_mw * 1000.0])
    q_mvar = np.stack([network.base_q_mvar, network.base_q_mvar * 1000.0])
    result = grid.powerflow(network, p_mw, q_mvar)
    assert result.converged.tolist() == [True, False]
    for field in ("vm_pu", "va_degree", "loading_percent", "p_from_mw"):
        values = getattr(result, field)
        assert np.isnan(values[1]).all(), field
        assert np.isfinite(values[0]).all(), field
    assert np.isnan(result.losses_mw[1])
    net.load["scaling"] = 1000.0
    with pytest.raises(pp.LoadflowNotConverged):
        runpp(net)
    base = grid.powerflow(network, network.base_p_mw, network.base_q_mvar)
    np.testing.assert_allclose(result.vm_pu[0], base.vm_pu, atol=1e-9)


@pytest.mark.parametrize("max_iter", [40, 2])
def test_heavy_but_feasible_load_matches_pandapower(case, max_iter: int) -> None:
    """Peer: pandapower runpp (max_iteration=30) at 3x CIGRE LV load (voltages near 0.64 pu):
    vm within 1e-6 pu, both from the Z-bus sweeps and, with ``max_iter=2``, from the Newton
    fallback that takes over scenarios the sweeps did not finish."""
    net, network = case("cigre_lv")
    net.load["scaling"] = 3.0
    runpp(net, max_iteration=30)
    p_mw, q_mvar = bus_consumption(net, network.bus_ids)
    result = grid.powerflow(network, p_mw, q_mvar, max_iter=max_iter)
    assert bool(result.converged)
    if max_iter == 2:
        assert result.iterations > 2
    expected = net.res_bus.vm_pu.loc[network.bus_ids].to_numpy()
    assert expected.min() < 0.7
    np.testing.assert_allclose(result.vm_pu, expected, rtol=0, atol=VM_TOL_PU)


@pytest.mark.parametrize(
    ("p_shape", "q_shape"), [((3,), (3,)), ((2, 44), (3, 44)), ((2, 2, 44), (2, 2, 44))]
)
def test_bad_shapes_are_refused_by_name(case, p_shape, q_shape) -> None:
    """Peer: none (input validation): a wrong shape is a ValueError naming the argument."""
    _, network = case("cigre_lv")
    with pytest.raises(ValueError, match=r"p_mw|q_mvar"):
        grid.powerflow(network, np.zeros(p_shape), np.zeros(q_shape))


def test_non_finite_input_is_refused(case) -> None:
    """Peer: none (input validation): NaN consumption is a ValueError naming p_mw."""
    _, network = case("cigre_lv")
    p_mw = network.base_p_mw.copy()
    p_mw[3] = np.nan
    with pytest.raises(ValueError, match="p_mw"):
        grid.powerflow(network, p_mw, network.base_q_mvar)


@pytest.mark.parametrize(("kwargs", "word"), [({"tol": 0.0}, "tol"), ({"max_iter": 0}, "max_iter")])
def test_bad_solver_options_are_refused_by_name(case, kwargs, word) -> None:
    """Peer: none (input validation): the error names the option."""
    _, network = case("cigre_lv")
    with pytest.raises(ValueError, match=word):
        grid.powerflow(network, network.base_p_mw, network.base_q_mvar, **kwargs)


def test_factorisation_happens_once_per_network(monkeypatch) -> None:
    """Peer: a counter on scipy's splu: two batches on one network factorise once; a new
    Network (even of the same net) gets its own factorisation."""
    import scipy.sparse.linalg as spla

    network = grid.build_network("cigre_mv")
    other = grid.build_network("cigre_mv")
    calls = []
    original = spla.splu

    def counting_splu(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(spla, "splu", counting_splu)
    for scale in (1.0, 0.5):
        grid.powerflow(network, scale * network.base_p_mw, scale * network.base_q_mvar)
    assert len(calls) == 1
    grid.powerflow(other, other.base_p_mw, other.base_q_mvar)
    assert len(calls) == 2


def test_a_warm_start_finds_the_same_solution_in_fewer_sweeps(case) -> None:
    """Peer: the same batch from no load (1e-9 pu, well inside tol's 1e-8 MVA mismatch):
    20 scenarios that add 30 kW at one bus each to a solved operating point, started from
    that point's voltages, as the DSO's zone sizing does."""
    _, network = case("cigre_mv")
    base = grid.powerflow(network, network.base_p_mw, network.base_q_mvar)
    rng = np.random.default_rng(3)
    n = 20
    p = np.tile(network.base_p_mw, (n, 1))
    p[np.arange(n), rng.integers(1, network.n_bus, n)] += 0.03
    q = np.tile(network.base_q_mvar, (n, 1))
    cold = grid.powerflow(network, p, q)
    warm = grid.powerflow(network, p, q, v_start=base.v_node_pu)
    assert warm.converged.all() and cold.converged.all()
    np.testing.assert_allclose(warm.vm_pu, cold.vm_pu, rtol=0, atol=1e-9)
    np.testing.assert_allclose(warm.va_degree, cold.va_degree, rtol=0, atol=1e-7)
    assert (warm.iterations < cold.iterations).all()
    per_row = grid.powerflow(network, p, q, v_start=np.tile(base.v_node_pu, (n, 1)))
    np.testing.assert_array_equal(per_row.vm_pu, warm.vm_pu)


@pytest.mark.parametrize("bad", ["shape", "nan"])
def test_a_bad_warm_start_is_refused_by_name(case, bad: str) -> None:
    """Peer: none (input validation): a start of the wrong shape or with NaN is a
    ValueError naming v_start."""
    _, network = case("cigre_lv")
    base = grid.powerflow(network, network.base_p_mw, network.base_q_mvar)
    start = base.v_node_pu[:-1] if bad == "shape" else np.where(True, np.nan, base.v_node_pu)
    with pytest.raises(ValueError, match="v_start"):
        grid.powerflow(network, network.base_p_mw, network.base_q_mvar, v_start=start)
