"""Shared fixtures: the five reference grids, loaded once per test session.

pandapower is the peer of every number in these tests; its nets come from the same sources as
ours (:func:`grid.pandapower_net`), with simbench's transformer-tap fix applied.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandapower as pp
import pandas as pd
import pytest

import grid

REFERENCE_CASES = [
    "cigre_lv",
    "cigre_mv",
    "1-LV-rural1--0-sw",
    "1-LV-semiurb4--0-sw",
    "1-MV-rural--2-sw",
]


@pytest.fixture(scope="session")
def case() -> Callable[[str], tuple[pp.pandapowerNet, grid.Network]]:
    """``case(name)`` -> (a fresh pandapower net, the Network built from it), cached by name."""
    cache: dict[str, tuple[pp.pandapowerNet, grid.Network]] = {}

    def load(name: str) -> tuple[pp.pandapowerNet, grid.Network]:
        if name not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = grid.pandapower_net(name)
            cache[name] = (net, grid.Network.from_pandapower(net, name=name))
        net, network = cache[name]
        return pp_copy(net), network

    return load


def pp_copy(net: pp.pandapowerNet) -> pp.pandapowerNet:
    """A deep copy of a pandapower net (tests modify their nets)."""
    import copy

    return copy.deepcopy(net)


def bus_consumption(net: pp.pandapowerNet, bus_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-bus consumption from the net's element tables, computed with pandas (independently
    of ``grid``): in-service load - sgen + storage, each times its scaling."""
    p = pd.Series(0.0, index=bus_ids)
    q = pd.Series(0.0, index=bus_ids)
    for table, sign in (("load", 1.0), ("sgen", -1.0), ("storage", 1.0)):
        df = net[table][net[table].in_service.astype(bool)]
        p = p.add(sign * (df.p_mw * df.scaling).groupby(df.bus).sum(), fill_value=0.0)
        q = q.add(sign * (df.q_mvar * df.scaling).groupby(df.bus).sum(), fill_value=0.0)
    return p.reindex(bus_ids).to_numpy(), q.reindex(bus_ids).to_numpy()


def runpp(net: pp.pandapowerNet, **kwargs: object) -> None:
    """pandapower's power flow with its default options (the reference)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, **kwargs)
