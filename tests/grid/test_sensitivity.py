"""Voltage sensitivities against central finite differences taken with pandapower runpp.

Peer: pandapower runpp (tolerance_mva=1e-10) with a small extra load of +/- delta at one bus.
Tolerance: 1% of each entry, plus 1e-6 of the column's largest entry (so that entries that are
zero in exact arithmetic, e.g. behind the other transformer, compare sensibly; measured errors
are below 1e-5 relative on every entry).
"""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pytest

import grid
from tests.grid.conftest import REFERENCE_CASES, runpp


def _finite_difference(net: pp.pandapowerNet, bus: int, delta_mw: float, *, reactive: bool):
    """d vm / d consumption at ``bus`` (all buses), central difference with pandapower."""
    vm = []
    for sign in (1.0, -1.0):
        probe = pp.create_load(
            net,
            bus,
            p_mw=0.0 if reactive else sign * delta_mw,
            q_mvar=sign * delta_mw if reactive else 0.0,
        )
        runpp(net, tolerance_mva=1e-10)
        vm.append(net.res_bus.vm_pu.copy())
        net.load = net.load.drop(probe)
    return (vm[0] - vm[1]) / (2.0 * delta_mw)


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_sensitivities_match_pandapower_finite_differences(case, name: str) -> None:
    """Peer: pandapower central differences (see module docstring), within 1%, for two column
    buses (a load bus far out and one drawn at random) and every row, at the base case taken
    as scenario 1 of a two-scenario batch."""
    net, network = case(name)
    rng = np.random.default_rng(7)
    base_p, base_q = network.base_p_mw, network.base_q_mvar
    result = grid.powerflow(
        network, np.stack([0.5 * base_p, base_p]), np.stack([0.5 * base_q, base_q])
    )
    sens = grid.sensitivities(network, result, scenario=1)
    assert sens.dv_dp_pu_per_mw.shape == (network.n_bus, network.n_bus)
    far = int(network.bus_ids[np.argmin(result.vm_pu[1])])
    candidates = network.bus_ids[~np.isin(network.bus_ids, network.slack_bus_ids)]
    columns = [far, int(rng.choice(candidates))]
    delta_mw = 1e-4 * max(float(np.abs(base_p).sum()), 0.1)
    for bus in columns:
        col = network.bus_position(bus)
        for reactive, ours in ((False, sens.dv_dp_pu_per_mw), (True, sens.dv_dq_pu_per_mvar)):
            fd = _finite_difference(net, bus, delta_mw, reactive=reactive)
            fd = fd.loc[network.bus_ids].to_numpy()
            scale = np.abs(fd).max()
            assert scale > 0
            np.testing.assert_allclose(ours[:, col], fd, rtol=0.01, atol=1e-6 * scale)
    far_pos = network.bus_position(far)
    assert sens.dv_dp_pu_per_mw[far_pos, far_pos] < 0


def test_requested_rows_equal_the_full_matrix_rows(case) -> None:
    """Peer: the full matrix (all rows) from the same call, 1e-12: a few rows are the same
    numbers; slack rows and columns are zero."""
    _, network = case("1-MV-rural--2-sw")
    result = grid.powerflow(network, network.base_p_mw, network.base_q_mvar)
    full = grid.sensitivities(network, result)
    rows = network.bus_ids[[40, 3, 77]]
    some = grid.sensitivities(network, result, buses=rows)
    np.testing.assert_array_equal(some.rows, rows)
    np.testing.assert_allclose(
        some.dv_dp_pu_per_mw, full.dv_dp_pu_per_mw[[40, 3, 77]], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        some.dv_dq_pu_per_mvar, full.dv_dq_pu_per_mvar[[40, 3, 77]], rtol=0, atol=1e-12
    )
    slack = network.slack_index
    assert not full.dv_dp_pu_per_mw[:, slack].any()
    assert not full.dv_dp_pu_per_mw[slack, :].any()


def test_a_few_rows_of_the_9k_bus_grid_need_no_dense_matrix() -> None:
    """Peer: pandapower central differences (1%, as above) at the lowest-voltage bus of
    1-MVLV-semiurb-all-2-sw (9,104 buses) for its three lowest-voltage rows; and the call's
    peak numpy allocation (tracemalloc) stays under 2% of one dense n x n float matrix."""
    import tracemalloc

    code = "1-MVLV-semiurb-all-2-sw"
    network = grid.Network.from_simbench(code)
    result = grid.powerflow(network, network.base_p_mw, network.base_q_mvar)
    rows = network.bus_ids[np.argsort(result.vm_pu)[:3]]
    tracemalloc.start()
    try:
        sens = grid.sensitivities(network, result, buses=rows)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dense_bytes = network.n_bus**2 * 8
    assert peak_bytes < 0.02 * dense_bytes, (peak_bytes, dense_bytes)
    assert sens.dv_dp_pu_per_mw.shape == (3, network.n_bus)
    net = grid.simbench_net(code)
    column = network.bus_position(rows[0])
    fd = _finite_difference(net, int(rows[0]), 1e-3, reactive=False).loc[rows].to_numpy()
    assert np.abs(fd).max() > 0
    np.testing.assert_allclose(
        sens.dv_dp_pu_per_mw[:, column], fd, rtol=0.01, atol=1e-6 * np.abs(fd).max()
    )


def test_non_converged_scenario_has_no_sensitivities(case) -> None:
    """Peer: none (error contract): linearising a failed scenario is a ValueError."""
    _, network = case("cigre_lv")
    result = grid.powerflow(network, network.base_p_mw * 1000, network.base_q_mvar * 1000)
    with pytest.raises(ValueError, match="did not converge"):
        grid.sensitivities(network, result)
