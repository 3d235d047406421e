"""The grid: network model from pandapower/simbench, batched AC power flow, sensitivities.

Sign convention: per-bus ``p_mw``/``q_mvar`` are consumption (load convention, positive when
the bus draws power), everywhere in this package; see :mod:`grid.network`.
"""

from grid import profiles
from grid.network import UNSUPPORTED_TABLES, Network, UnsupportedElementError
from grid.powerflow import PowerFlowResult, powerflow
from grid.sensitivity import Sensitivities, sensitivities
from grid.sources import build_network, pandapower_net, simbench_net

__all__ = [
    "UNSUPPORTED_TABLES",
    "Network",
    "PowerFlowResult",
    "Sensitivities",
    "UnsupportedElementError",
    "build_network",
    "pandapower_net",
    "powerflow",
    "profiles",
    "sensitivities",
    "simbench_net",
]
