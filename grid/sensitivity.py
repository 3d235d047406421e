"""Voltage sensitivities dV/dP and dV/dQ at a solved operating point.

Sign: the derivatives are taken with respect to **consumption** at each bus (load convention,
the same ``p_mw``/``q_mvar`` that :func:`grid.powerflow` takes), so on a radial feeder they are
negative: more load at a bus lowers the voltages. Columns of slack buses are zero (the slack
absorbs their injection), and so are rows of slack buses.

Rows are computed from the transposed power-flow Jacobian: with ``J dx = d[P; Q]_injection``,
row r of ``dvm/d[P; Q]`` is the solution of ``J^T y = e_{vm_r}``. One sparse LU of ``J^T`` serves
all requested rows, so asking for a few rows of a 9,000-bus grid never forms a dense n x n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse.linalg as spla

from grid._ac import jacobian
from grid.network import Network
from grid.powerflow import PowerFlowResult

#: Rows solved per block, so the dense right-hand side stays small for the full matrix.
ROW_BLOCK = 256


@dataclass(frozen=True, eq=False)
class Sensitivities:
    """Rows of the voltage-magnitude sensitivity matrices.

    Attributes:
        rows: pandapower bus id of each row.
        columns: pandapower bus id of each column (``network.bus_ids``).
        dv_dp_pu_per_mw: d|V_row| / dP_consumption_column, shape (len(rows), n_bus).
        dv_dq_pu_per_mvar: d|V_row| / dQ_consumption_column, same shape.
    """

    rows: np.ndarray
    columns: np.ndarray
    dv_dp_pu_per_mw: np.ndarray
    dv_dq_pu_per_mvar: np.ndarray

    def __post_init__(self) -> None:
        for value in vars(self).values():
            value.setflags(write=False)


def sensitivities(
    network: Network,
    result: PowerFlowResult,
    *,
    buses: Any = None,
    scenario: int = 0,
) -> Sensitivities:
    """dV/dP and dV/dQ (consumption) at the operating point of one solved scenario.

    Args:
        network: The network the result belongs to.
        result: A :func:`grid.powerflow` result (one scenario or a batch).
        buses: pandapower bus ids of the rows wanted; ``None`` for all buses.
        scenario: Which scenario of a batched result to linearise around.

    Returns:
        The requested rows for every column bus.

    Raises:
        KeyError: If a requested bus is not a bus of the network.
        ValueError: If the scenario did not converge or does not belong to this network.
    """
    v_node = np.atleast_2d(result.v_node_pu)
    model = network.model
    if v_node.shape[1] != model.n_node:
        raise ValueError(
            f"result has {v_node.shape[1]} internal nodes, network {network.name!r} has "
            f"{model.n_node}: the result belongs to another network"
        )
    if not 0 <= scenario < v_node.shape[0]:
        raise ValueError(f"scenario={scenario} is outside 0..{v_node.shape[0] - 1}")
    converged = np.atleast_1d(result.converged)[scenario]
    if not converged:
        raise ValueError(f"scenario {scenario} did not converge: no operating point to linearise")
    rows = network.bus_ids if buses is None else np.atleast_1d(np.asarray(buses, np.int64))
    row_pos = network.bus_position(rows)
    v = v_node[scenario]

    is_slack = np.zeros(model.n_node, bool)
    is_slack[model.slack_nodes] = True
    pq = np.flatnonzero(~is_slack)
    n_pq = len(pq)
    pq_pos = np.full(model.n_node, -1)
    pq_pos[pq] = np.arange(n_pq)

    lu = spla.splu(jacobian(model.ybus, v, pq).T.tocsc())
    row_pq = pq_pos[model.node_of_bus[row_pos]]
    col_pq = pq_pos[model.node_of_bus]
    col_on_pq = col_pq >= 0
    dv_dp = np.zeros((len(rows), network.n_bus))
    dv_dq = np.zeros((len(rows), network.n_bus))
    scale = -1.0 / model.base_mva
    for start in range(0, len(rows), ROW_BLOCK):
        block = np.arange(start, min(start + ROW_BLOCK, len(rows)))
        on_pq = row_pq[block] >= 0
        rhs = np.zeros((2 * n_pq, len(block)))
        rhs[n_pq + row_pq[block][on_pq], np.flatnonzero(on_pq)] = 1.0
        y = lu.solve(rhs)
        dv_dp[np.ix_(block, col_on_pq)] = scale * y[col_pq[col_on_pq]].T
        dv_dq[np.ix_(block, col_on_pq)] = scale * y[n_pq + col_pq[col_on_pq]].T
    return Sensitivities(
        rows=np.asarray(rows, np.int64).copy(),
        columns=network.bus_ids.copy(),
        dv_dp_pu_per_mw=dv_dp,
        dv_dq_pu_per_mvar=dv_dq,
    )
