"""The network model: immutability, bus lookup, unsupported elements, simbench's tap fix.

Peers: pandapower runpp for voltages (1e-6 pu); pandapower's element tables for the mappings.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandapower as pp
import pytest

import grid
from grid.sources import _raw_simbench
from tests.grid.conftest import bus_consumption, runpp


def test_arrays_are_read_only_and_fields_frozen(case) -> None:
    """Peer: none (immutability): arrays refuse writes, fields refuse assignment."""
    _, network = case("cigre_mv")
    with pytest.raises(ValueError, match="read-only"):
        network.base_p_mw[0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        network.model.ybus.data[0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        network.name = "other"  # type: ignore[misc]


def test_bus_position_maps_ids_and_names_unknown_ones(case) -> None:
    """Peer: ``network.bus_ids`` itself; unknown ids are named in the KeyError."""
    _, network = case("1-LV-rural1--0-sw")
    wanted = network.bus_ids[[3, 0, 7]]
    np.testing.assert_array_equal(network.bus_position(wanted), [3, 0, 7])
    assert network.bus_position(int(network.bus_ids[5])) == 5
    with pytest.raises(KeyError, match="987654"):
        network.bus_position([int(network.bus_ids[0]), 987654])


def test_element_mappings_follow_pandapower_tables(case) -> None:
    """Peer: pandapower's load/sgen/storage tables (ids, buses, p*scaling, profile names)."""
    net, network = case("1-MV-rural--2-sw")
    for table in ("load", "sgen", "storage"):
        df = net[table]
        ids = getattr(network, f"{table}_ids")
        np.testing.assert_array_equal(ids, df.index.to_numpy())
        np.testing.assert_array_equal(getattr(network, f"{table}_bus"), df.bus.loc[ids])
        np.testing.assert_allclose(
            getattr(network, f"{table}_p_mw"), (df.p_mw * df.scaling).loc[ids]
        )
        np.testing.assert_array_equal(getattr(network, f"{table}_profile"), df.profile.loc[ids])
    assert len(network.storage_ids) == 90 and set(network.branch_kind) == {"line", "trafo"}
    p_mw, _ = bus_consumption(net, network.bus_ids)
    np.testing.assert_allclose(network.base_p_mw, p_mw, atol=1e-12)


@pytest.mark.parametrize(
    ("table", "create"),
    [
        ("gen", lambda net: pp.create_gen(net, 5, p_mw=0.01, vm_pu=1.0, index=77)),
        ("xward", lambda net: pp.create_xward(net, 5, 0.01, 0.0, 0.0, 0.0, 0.1, 0.1, 1.0)),
        ("impedance", lambda net: pp.create_impedance(net, 3, 5, 0.1, 0.1, sn_mva=1.0)),
        (
            "trafo3w",
            lambda net: pp.create_transformer3w(net, 0, 1, 2, std_type="63/25/38 MVA 110/20/10 kV"),
        ),
    ],
)
def test_unsupported_element_is_named(case, table: str, create) -> None:
    """Peer: none (error contract): the message names the table and the element index."""
    net, _ = case("cigre_mv")
    index = create(net)
    with pytest.raises(grid.UnsupportedElementError, match=rf"net\.{table}.*\[{index}\]"):
        grid.Network.from_pandapower(net)


#: pandapower tables the model represents (shunts and switches through pandapower's Ybus).
SUPPORTED_TABLES = {
    "bus",
    "line",
    "trafo",
    "switch",
    "shunt",
    "ext_grid",
    "load",
    "sgen",
    "storage",
}
#: pandapower tables that never enter runpp (costs, measurements, controllers, groups).
INERT_TABLES = {"measurement", "poly_cost", "pwl_cost", "controller", "group"}


def test_every_other_pandapower_element_table_is_refused() -> None:
    """Peer: the tables of pandapower's own empty net: each one that is neither supported nor
    inert is in UNSUPPORTED_TABLES, so a table added by a newer pandapower cannot slip through
    unchecked (vsc_bipolar and vsc_stacked, new in pandapower 3.x, once did)."""
    empty = pp.create_empty_network()
    tables = {
        key
        for key, value in empty.items()
        if hasattr(value, "columns") and not key.startswith(("res_", "_"))
    }
    assert tables >= SUPPORTED_TABLES | INERT_TABLES
    missing = tables - SUPPORTED_TABLES - INERT_TABLES - set(grid.UNSUPPORTED_TABLES)
    assert not missing, f"pandapower tables neither supported nor refused: {sorted(missing)}"


def test_out_of_service_unsupported_element_is_accepted(case) -> None:
    """Peer: pandapower runpp (1e-6 pu): an out-of-service gen changes nothing."""
    net, network = case("cigre_mv")
    pp.create_gen(net, 5, p_mw=0.01, vm_pu=1.0, in_service=False)
    rebuilt = grid.Network.from_pandapower(net)
    runpp(net)
    result = grid.powerflow(rebuilt, rebuilt.base_p_mw, rebuilt.base_q_mvar)
    expected = net.res_bus.vm_pu.loc[rebuilt.bus_ids].to_numpy()
    np.testing.assert_allclose(result.vm_pu, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(rebuilt.bus_ids, network.bus_ids)


def test_zip_load_is_refused(case) -> None:
    """Peer: none (error contract): voltage-dependent loads are named, not silently solved."""
    net, _ = case("cigre_lv")
    net.load.loc[net.load.index[2], "const_z_p_percent"] = 30.0
    with pytest.raises(grid.UnsupportedElementError, match=r"ZIP.*\[" + str(net.load.index[2])):
        grid.Network.from_pandapower(net)


def test_out_of_service_bus_is_left_out_like_pandapower(case) -> None:
    """Peer: pandapower runpp (1e-6 pu; NaN at the bus it leaves unsupplied)."""
    net, _ = case("cigre_lv")
    leaf = int(net.load.bus.iloc[-1])
    net.bus.loc[leaf, "in_service"] = False
    network = grid.Network.from_pandapower(net)
    assert leaf in network.unsupplied_bus_ids and leaf not in network.bus_ids
    assert leaf not in network.load_bus
    runpp(net)
    assert np.isnan(net.res_bus.vm_pu.loc[leaf])
    result = grid.powerflow(network, network.base_p_mw, network.base_q_mvar)
    expected = net.res_bus.vm_pu.loc[network.bus_ids].to_numpy()
    np.testing.assert_allclose(result.vm_pu, expected, rtol=0, atol=1e-6)


def test_simbench_taps_move_voltages_exactly_as_pandapower(case) -> None:
    """Peer: pandapower runpp on the tap-fixed simbench net, tap_pos moved by +2: our vm equals
    it within 1e-6 pu, the move is real (> 1e-3 pu), and the unfixed net would ignore it."""
    net, _ = case("1-LV-rural1--0-sw")
    assert (net.trafo.tap_changer_type == "Ratio").all()
    raw, _ = _raw_simbench("1-LV-rural1--0-sw")
    assert raw.trafo.tap_changer_type.isna().all() or (raw.trafo.tap_changer_type != "Ratio").all()
    runpp(net)
    vm_neutral = net.res_bus.vm_pu.copy()
    net.trafo["tap_pos"] = net.trafo.tap_neutral + 2
    runpp(net)
    network = grid.Network.from_pandapower(net)
    result = grid.powerflow(network, network.base_p_mw, network.base_q_mvar)
    expected = net.res_bus.vm_pu.loc[network.bus_ids].to_numpy()
    np.testing.assert_allclose(result.vm_pu, expected, rtol=0, atol=1e-6)
    lv = network.vn_kv < 1.0
    moved = expected - vm_neutral.loc[network.bus_ids].to_numpy()
    assert np.abs(moved[lv]).min() > 1e-3

    unfixed = copy.deepcopy(net)
    unfixed.trafo["tap_changer_type"] = None
    runpp(unfixed)
    np.testing.assert_allclose(
        unfixed.res_bus.vm_pu.loc[network.bus_ids], vm_neutral.loc[network.bus_ids], atol=1e-9
    )


def test_from_simbench_applies_the_tap_fix() -> None:
    """Peer: pandapower runpp on 1-MV-urban--0-sw, whose trafos sit at tap -1 as shipped:
    from_simbench equals runpp on the tap-fixed net within 1e-6 pu, while runpp on the net as
    simbench ships it (taps ignored) is off by more than 1e-3 pu."""
    code = "1-MV-urban--0-sw"
    network = grid.Network.from_simbench(code)
    fixed = grid.simbench_net(code)
    raw, _ = _raw_simbench(code)
    shipped = copy.deepcopy(raw)
    assert (fixed.trafo.tap_pos != fixed.trafo.tap_neutral).all()
    runpp(fixed)
    runpp(shipped)
    result = grid.powerflow(network, network.base_p_mw, network.base_q_mvar)
    expected = fixed.res_bus.vm_pu.loc[network.bus_ids].to_numpy()
    ignored = shipped.res_bus.vm_pu.loc[network.bus_ids].to_numpy()
    np.testing.assert_allclose(result.vm_pu, expected, rtol=0, atol=1e-6)
    assert np.abs(result.vm_pu - ignored).max() > 1e-3
    assert network.name == code
