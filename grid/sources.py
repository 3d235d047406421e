"""Where networks come from: simbench codes and pandapower's builders, loaded once per process.

Loading a simbench net takes ~5 s (it parses CSV files shipped inside the package), so the raw
net is cached per code and every caller gets its own deep copy.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import pandapower as pp
import pandapower.networks as pn
import pandas as pd
import simbench as sb

from grid.network import Network

_BUILDERS: dict[str, Callable[[], pp.pandapowerNet]] = {
    "cigre_lv": pn.create_cigre_network_lv,
    "cigre_mv": lambda: pn.create_cigre_network_mv(with_der="all"),
}


@functools.lru_cache(maxsize=8)
def _raw_simbench(code: str) -> tuple[pp.pandapowerNet, dict[str, pd.DataFrame]]:
    """The simbench net as shipped, without and with its profiles (cached; never mutate)."""
    try:
        net = sb.get_simbench_net(code)
    except Exception as error:
        raise ValueError(f"unknown simbench code {code!r}: {error}") from error
    profiles = net.pop("profiles", {})
    return net, profiles


def simbench_net(code: str, *, with_profiles: bool = False) -> pp.pandapowerNet:
    """A fresh copy of a simbench net with its transformer taps in effect.

    simbench leaves ``trafo.tap_changer_type`` empty; pandapower >= 3 then ignores
    ``tap_pos`` silently (1.7e-2 pu error on ``1-MV-urban--0-sw``). Empty entries are set to
    ``"Ratio"`` (simbench issue #69), so runpp on this net and our power flow agree on taps.

    Args:
        code: A simbench code such as ``"1-LV-rural1--0-sw"``.
        with_profiles: Attach simbench's relative profiles as ``net.profiles`` (shared with
            the cache, not copied: treat them as read-only). Copying a year of profiles
            costs seconds, so they are left out by default.

    Returns:
        A deep copy the caller may modify.

    Raises:
        ValueError: If simbench does not know the code.
    """
    raw, profiles = _raw_simbench(code)
    net = copy.deepcopy(raw)
    tap_type = net.trafo["tap_changer_type"].astype(object)
    empty = tap_type.isna() | (tap_type.astype(str).str.strip().isin(["", "None", "nan"]))
    net.trafo["tap_changer_type"] = tap_type.where(~empty, "Ratio")
    if with_profiles:
        net["profiles"] = profiles
    return net


def pandapower_net(name: str) -> pp.pandapowerNet:
    """A fresh pandapower net by name: a builder (``cigre_lv``, ``cigre_mv``) or a simbench code.

    ``cigre_mv`` is pandapower's CIGRE MV network with ``with_der="all"`` (PV, wind, storage...).

    Raises:
        ValueError: If the name is neither a known builder nor a simbench code.
    """
    if name in _BUILDERS:
        return _BUILDERS[name]()
    return simbench_net(name)


def build_network(name: str) -> Network:
    """The :class:`~grid.network.Network` of :func:`pandapower_net` ``(name)``."""
    if name in _BUILDERS:
        return Network.from_pandapower(_BUILDERS[name](), name=name)
    return Network.from_simbench(name)
