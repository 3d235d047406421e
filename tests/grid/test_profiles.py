"""simbench profiles and per-bus injections.

Peers: simbench's ``get_absolute_values`` (the per-element numbers, exact) and pandapower runpp
on the net with one slot's element values written in (vm within 1e-6 pu).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import simbench as sb

import grid
from grid import profiles
from tests.grid.conftest import bus_consumption, runpp

CODE = "1-MV-rural--2-sw"


@pytest.fixture(scope="module")
def year() -> dict[str, pd.DataFrame]:
    """The year of absolute profiles of CODE."""
    return profiles.simbench_profiles(CODE)


def test_profiles_are_a_utc_year_of_quarter_hours(year) -> None:
    """Peer: simbench's get_absolute_values on the shipped net (exact equality); simbench's
    local time stamps (a gap in March, a repeated hour in October) become consecutive UTC."""
    assert {"load_p_mw", "load_q_mvar", "sgen_p_mw", "storage_p_mw"} <= set(year)
    index = year["load_p_mw"].index
    assert len(index) == 35136 and str(index.tz) == "UTC"
    assert (np.diff(index.asi8) == 15 * 60 * 10**9).all()
    assert index[0] == pd.Timestamp("2016-01-01 00:00", tz="Europe/Berlin")
    assert index.is_unique and index.is_monotonic_increasing
    net = grid.simbench_net(CODE, with_profiles=True)
    expected = sb.get_absolute_values(net, profiles_instead_of_study_cases=True)
    np.testing.assert_array_equal(year["sgen_p_mw"].to_numpy(), expected[("sgen", "p_mw")])
    assert profiles.simbench_profiles(CODE) is year


def test_bus_injections_solve_like_pandapower(case, year) -> None:
    """Peer: pandapower runpp on the net with slot 5 of the window written into its element
    tables: per-bus consumption within 1e-12 MW, vm within 1e-6 pu."""
    net, network = case(CODE)
    start = pd.Timestamp("2016-07-01 10:00", tz="UTC")
    p_mw, q_mvar = profiles.bus_injections(network, year, start, 8)
    assert p_mw.shape == q_mvar.shape == (8, network.n_bus)
    elements = profiles.element_injections(network, year, start, 8)
    assert elements.time[5] == start + pd.Timedelta(minutes=75)
    assert elements.storage_p_mw.shape == (8, len(network.storage_ids))
    slot = year["load_p_mw"].index.get_loc(start) + 5
    for table in ("load", "sgen", "storage"):
        frame = year[f"{table}_p_mw"]
        net[table]["p_mw"] = frame.iloc[slot].reindex(net[table].index).to_numpy()
    net.load["q_mvar"] = year["load_q_mvar"].iloc[slot].reindex(net.load.index).to_numpy()
    expected_p, expected_q = bus_consumption(net, network.bus_ids)
    np.testing.assert_allclose(p_mw[5], expected_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(q_mvar[5], expected_q, rtol=0, atol=1e-12)
    runpp(net)
    result = grid.powerflow(network, p_mw, q_mvar)
    assert result.converged.all()
    vm = net.res_bus.vm_pu.loc[network.bus_ids].to_numpy()
    np.testing.assert_allclose(result.vm_pu[5], vm, rtol=0, atol=1e-6)


def test_window_outside_the_year_is_refused(case, year) -> None:
    """Peer: none (error contract): the error names the window."""
    _, network = case(CODE)
    with pytest.raises(ValueError, match="n_slots=10"):
        profiles.bus_injections(network, year, 35130, 10)
    with pytest.raises(ValueError, match="2017"):
        profiles.bus_injections(network, year, "2017-01-01 00:00", 4)


@pytest.mark.parametrize("code", ["1-LV-rural1--0-sw", "1-LV-rural3--2-sw"])
def test_simbench_window_equals_the_absolute_year(code: str) -> None:
    """Peer: simbench's own get_absolute_values (through simbench_profiles); exact equality
    for every element table over a 200-slot window."""
    from grid import build_network
    from grid.profiles import element_injections, simbench_profiles, simbench_window

    network = build_network(code)
    full = element_injections(network, simbench_profiles(code), 1000, 200)
    window = simbench_window(network, code, 1000, 200)
    assert (full.time == window.time).all()
    for name in ("load_p_mw", "load_q_mvar", "sgen_p_mw", "sgen_q_mvar", "storage_p_mw"):
        np.testing.assert_array_equal(getattr(full, name), getattr(window, name))
