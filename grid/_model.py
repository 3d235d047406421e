"""pandapower's internal nodal model (its ``ppci``), extracted once per network.

A *node* is a bus of pandapower's internal model: buses fused by closed bus-bus switches share
one node, and open line switches add auxiliary nodes. The solver works on nodes; the public API
speaks pandapower bus ids and maps through ``node_of_bus``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandapower as pp
import scipy.sparse as sp
from pandapower.pypower.idx_brch import F_BUS, T_BUS
from pandapower.pypower.idx_bus import BASE_KV

_SQRT3 = float(np.sqrt(3.0))


@dataclass(frozen=True, eq=False)
class NodalModel:
    """Admittances and ratings of pandapower's internal model.

    Attributes:
        base_mva: System base power of the per-unit system.
        ybus: Bus admittance matrix (n_node x n_node, per unit), from ``makeYbus``.
        yf: Branch from-end admittance rows (n_branch x n_node) of the kept branches.
        yt: Branch to-end admittance rows (n_branch x n_node).
        branch_from_node: Node at each branch's from end.
        branch_to_node: Node at each branch's to end.
        loading_scale_from: Loading in percent per (from-end MVA / from-end vm_pu).
        loading_scale_to: Same at the to end.
        branch_kept: Mask over in-service lines then trafos: branches pandapower keeps.
        slack_nodes: Nodes held at the external grids' voltages.
        v_slack: Complex set-point voltage of each slack node (per unit).
        node_of_bus: Node of each bus of the owning network (empty until bound).
    """

    base_mva: float
    ybus: sp.csr_matrix
    yf: sp.csr_matrix
    yt: sp.csr_matrix
    branch_from_node: np.ndarray
    branch_to_node: np.ndarray
    loading_scale_from: np.ndarray
    loading_scale_to: np.ndarray
    branch_kept: np.ndarray
    slack_nodes: np.ndarray
    v_slack: np.ndarray
    node_of_bus: np.ndarray

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            elif sp.issparse(value):
                for name in ("data", "indices", "indptr"):
                    getattr(value, name).setflags(write=False)

    @property
    def n_node(self) -> int:
        """Number of nodes of the internal model."""
        return self.ybus.shape[0]

    def with_buses(self, node_of_bus: np.ndarray) -> NodalModel:
        """A copy bound to a network's bus order."""
        return dataclasses.replace(self, node_of_bus=np.asarray(node_of_bus, dtype=np.int64))


def nodal_model(solved: pp.pandapowerNet) -> tuple[NodalModel, np.ndarray]:
    """Extract the nodal model from a net on which ``pandapower.runpp`` has just run.

    Args:
        solved: The net after ``runpp`` (it holds ``_ppc["internal"]`` and the lookups).

    Returns:
        The model (not yet bound to a bus order) and the node of each bus of ``solved.bus``
        in its index order, -1 for buses pandapower leaves out (out of service, isolated).

    Raises:
        ValueError: If pandapower's model has voltage-controlled (PV) nodes.
    """
    ppci = solved._ppc["internal"]
    n_node = ppci["Ybus"].shape[0]
    if len(ppci["pv"]):
        raise ValueError("pandapower's model has PV nodes; only PQ nodes and slacks are supported")
    lookup = np.asarray(solved._pd2ppc_lookups["bus"], dtype=np.int64)
    raw = lookup[solved.bus.index.to_numpy(np.int64)]
    node_of_pp_bus = np.where((raw >= 0) & (raw < n_node), raw, -1)
    node_of_pp_bus[~solved.bus.in_service.to_numpy(bool)] = -1

    branch_is = np.asarray(ppci["branch_is"], dtype=bool)
    ppci_row = np.cumsum(branch_is) - 1
    rows, scale_f, scale_t = [], [], []
    base_kv = ppci["bus"][:, BASE_KV].real
    ranges = solved._pd2ppc_lookups["branch"]
    for table in ("line", "trafo"):
        df = solved[table]
        active = df.in_service.to_numpy(bool)
        if table not in ranges:
            if active.any():
                raise ValueError(f"pandapower built no branches for the in-service {table}s")
            continue
        start, _ = ranges[table]
        rows.append(start + np.flatnonzero(active))
        if table == "line":
            rated = (df.max_i_ka * df.df * df.parallel).to_numpy(float)[active]
            vn_f = vn_t = _SQRT3 * rated
        else:
            sn = (df.sn_mva * df.parallel * df.df).to_numpy(float)[active]
            vn_f = sn / df.vn_hv_kv.to_numpy(float)[active]
            vn_t = sn / df.vn_lv_kv.to_numpy(float)[active]
        scale_f.append(vn_f)
        scale_t.append(vn_t)
    ppc_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    kept = branch_is[ppc_rows]
    idx = ppci_row[ppc_rows[kept]]
    branch = ppci["branch"][idx]
    f_node = branch[:, F_BUS].real.astype(np.int64)
    t_node = branch[:, T_BUS].real.astype(np.int64)
    with np.errstate(divide="ignore"):
        k_f = 100.0 / (base_kv[f_node] * np.concatenate(scale_f)[kept])
        k_t = 100.0 / (base_kv[t_node] * np.concatenate(scale_t)[kept])
    ref = np.asarray(ppci["ref"], dtype=np.int64)
    model = NodalModel(
        base_mva=float(ppci["baseMVA"]),
        ybus=sp.csr_matrix(ppci["Ybus"]),
        yf=sp.csr_matrix(ppci["Yf"])[idx],
        yt=sp.csr_matrix(ppci["Yt"])[idx],
        branch_from_node=f_node,
        branch_to_node=t_node,
        loading_scale_from=k_f,
        loading_scale_to=k_t,
        branch_kept=kept,
        slack_nodes=ref,
        v_slack=np.asarray(ppci["V"], dtype=complex)[ref],
        node_of_bus=np.zeros(0, np.int64),
    )
    return model, node_of_pp_bus
