"""The DSO's congestion requests: flexibility that brings an overloaded branch under its limit.

A branch (line or transformer) is overloaded when its loading, as pandapower computes it
(the larger end current against the rating), is above ``loading_max_percent``. The need is
met by less power through the branch: less consumption behind it when power flows in
(``up``, the evening or early-morning peak when batteries, EVs, heat pumps and the heating
plant's boiler all start at a cheap tariff block), or more consumption behind it when power
flows out (``down``, PV exporting at noon).

"Behind" is the side of the branch that the grid would lose if the branch were opened: the
nodes that are cut off from every external grid without it. A branch in a loop has no such
side (opening it leaves both ends supplied); its overload is reported in the assessment
but gets no request, a stated limit of this radial view (distribution grids run radially).

Each overloaded branch with a side behind it gets ONE request:

* ``bus``: the bus at the branch's end behind it (a transformer's LV bus bar); ``zone``:
  ``"<kind>-<index>"`` (``"trafo-0"``, ``"line-12"``), the pandapower element;
* ``p_kw``: the active power less through the branch that brings its loading to
  ``loading_max_percent - loading_margin_percent``. A first estimate comes from the
  apparent power at its binding end with the reactive flow and the voltage held,
  ``|P| - sqrt(S_target^2 - Q^2)``; then the DSO measures the effect with a power flow in
  which that kW is delivered behind the branch (spread in proportion to each bus's
  consumption there; one batch for all branches) and rescales the kW by the loading it
  moved (a secant step), ``_SIZING_FLOWS`` times. The estimate alone misses where
  delivery also moves the voltage and the losses: on CIGRE LV at 1.5x load (0.86 pu) it
  left a transformer at 93 % for a 98 % target, and under PV export at 104 %;
* ``dv_required_pu``: the overload to remove in per unit of the limit,
  ``(loading - target) / loading_max_percent`` (pu of the branch's limit, not of a
  voltage), and ``sensitivity_pu_per_kw``: the same ``dv_required_pu / p_kw`` at every bus
  behind the branch, so that the rules that clear in pu (``locational``,
  ``iterative_price``) buy ``p_kw`` there as the merit-order rules do; no kvar map (only
  active power is asked for);
* the maximum price: the DSO's alternative, as for voltage.
"""

import weakref
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from grid import Network, PowerFlowResult, powerflow
from market import Direction, FlexRequest

__all__ = ["BranchFlow", "branch_flow", "congestion_requests", "side_behind"]

_SIZING_FLOWS = 2
"""Secant steps of the congestion sizing (batched power flows per call)."""


_SIDES: weakref.WeakKeyDictionary[Network, dict[int, tuple[np.ndarray, int] | None]] = (
    weakref.WeakKeyDictionary()
)
"""Per network, the side behind each branch asked for (the topology never changes, and the
DSO asks again every round the branch is overloaded)."""


def side_behind(network: Network, branch: int) -> tuple[np.ndarray, int] | None:
    """The nodes behind ``branch`` (cut off from every slack without it) and the end they
    touch (0 = from, 1 = to); ``None`` if the branch lies in a loop or both ends have a
    slack behind them. Computed once per network and branch."""
    known = _SIDES.setdefault(network, {})
    if branch not in known:
        known[branch] = _side_behind(network, branch)
    return known[branch]


def _side_behind(network: Network, branch: int) -> tuple[np.ndarray, int] | None:
    model = network.model
    keep = np.arange(network.n_branch) != branch
    f, t = model.branch_from_node[keep], model.branch_to_node[keep]
    graph = coo_matrix((np.ones(f.size), (f, t)), shape=(model.n_node, model.n_node))
    _, label = connected_components(graph, directed=False)
    ends = (int(model.branch_from_node[branch]), int(model.branch_to_node[branch]))
    if label[ends[0]] == label[ends[1]]:
        return None
    supplied = set(label[model.slack_nodes].tolist())
    for end, node in enumerate(ends):
        if label[node] not in supplied:
            return np.flatnonzero(label == label[node]), end
    return None


def congestion_requests(
    network: Network,
    result: PowerFlowResult,
    branches: np.ndarray,
    p_mw: np.ndarray,
    q_mvar: np.ndarray,
    *,
    loading_max_percent: float,
    loading_margin_percent: float,
    template: FlexRequest,
    round_id: int,
) -> list[FlexRequest]:
    """One request per overloaded branch with a side behind it (see the module docstring).

    Args:
        network: the DSO's network.
        result: the power flow of the operating point (one scenario).
        branches: positions of the overloaded branches.
        p_mw, q_mvar: the per-bus consumption ``result`` was solved for.
        loading_max_percent, loading_margin_percent: the limit and how far below it to aim.
        template: a validated request carrying the buyer, interval and price caps.
        round_id: the round, for the request ids.
    """
    target = loading_max_percent - loading_margin_percent
    needs = [
        need
        for b in np.asarray(branches, dtype=np.int64).tolist()
        if (need := _branch_need(network, result, b, target)) is not None
    ]
    if not needs:
        return []
    p_kw = _measured_kw(network, result, needs, p_mw, q_mvar, target)
    bus_ids = network.bus_ids
    requests = []
    for need, kw in zip(needs, p_kw.tolist(), strict=True):
        if not kw > 0.0:
            continue
        need_pu = (need.loading - target) / loading_max_percent
        label = f"{network.branch_kind[need.branch]}-{int(network.branch_element_id[need.branch])}"
        requests.append(
            template.model_copy(
                update={
                    "request_id": f"r{int(round_id)}-{label}",
                    "bus": need.bus,
                    "zone": label,
                    "direction": need.direction,
                    "p_kw": float(kw),
                    "dv_required_pu": float(need_pu),
                    "sensitivity_pu_per_kw": dict.fromkeys(
                        bus_ids[need.behind].tolist(), need_pu / kw
                    ),
                    "sensitivity_pu_per_kvar": {},
                }
            )
        )
    return requests


@dataclass(frozen=True)
class _Need:
    """An overloaded branch: its position, loading, the bus positions behind it, the bus at
    its end behind it, the helping direction and the first estimate of the kW."""

    branch: int
    loading: float
    behind: np.ndarray
    bus: int
    direction: Direction
    p_kw: float


@dataclass(frozen=True)
class BranchFlow:
    """A branch's flow at its binding end (the end whose current sets its loading).

    Attributes:
        loading_percent: the branch's loading (pandapower's, the larger end).
        s_mva: complex power entering the branch at that end.
        vm_pu: voltage magnitude at that end.
        scale: loading percent per (MVA / pu) at that end.
        toward_behind_mw: active power flowing toward the side behind the branch.
        percent_per_mw: the loading's change per MW more consumption behind the branch,
            with the voltage and the reactive flow held (negative when power flows out).
    """

    loading_percent: float
    s_mva: complex
    vm_pu: float
    scale: float
    toward_behind_mw: float
    percent_per_mw: float


def branch_flow(network: Network, v_node: np.ndarray, b: int, end_behind: int) -> BranchFlow:
    """The flow of branch ``b`` at node voltages ``v_node`` (see :class:`BranchFlow`)."""
    model = network.model
    v = np.asarray(v_node)
    ends = (int(model.branch_from_node[b]), int(model.branch_to_node[b]))
    flows = []
    for end, (y, scale) in enumerate(
        ((model.yf, model.loading_scale_from), (model.yt, model.loading_scale_to))
    ):
        vn = v[ends[end]]
        s = model.base_mva * vn * np.conj(y[b].dot(v)[0])
        flows.append((float(abs(s) / abs(vn) * scale[b]), complex(s), float(abs(vn)), scale[b]))
    e = int(np.argmax([f[0] for f in flows]))
    loading, s, vm, scale = flows[e]
    # Power entering the branch at end e flows toward the side behind it unless e is that
    # side's own end.
    toward = s.real if e != end_behind else -s.real
    slope = scale / vm * abs(s.real) / abs(s) if abs(s) > 0 else 0.0
    return BranchFlow(loading, s, vm, float(scale), toward, float(np.sign(toward) * slope))


def _branch_need(network: Network, result: PowerFlowResult, b: int, target: float) -> _Need | None:
    """The branch's need from the flow at its binding end (``None`` if it has no side
    behind it, or nothing behind it to deliver)."""
    side = side_behind(network, b)
    if side is None:
        return None
    nodes, end_behind = side
    model = network.model
    flow = branch_flow(network, result.v_node_pu, b, end_behind)
    s = flow.s_mva
    s_target = target * flow.vm_pu / flow.scale
    p_kw = 1000.0 * (abs(s.real) - np.sqrt(max(s_target**2 - s.imag**2, 0.0)))
    behind = np.flatnonzero(np.isin(model.node_of_bus, nodes))
    if behind.size == 0 or not p_kw > 0.0:
        return None
    end_node = int((model.branch_from_node, model.branch_to_node)[end_behind][b])
    at = np.flatnonzero(model.node_of_bus == end_node)
    bus = int(network.bus_ids[at[0] if at.size else behind[0]])
    direction = Direction.UP if flow.toward_behind_mw > 0 else Direction.DOWN
    return _Need(b, flow.loading_percent, behind, bus, direction, float(p_kw))


def _measured_kw(
    network: Network,
    result: PowerFlowResult,
    needs: list[_Need],
    p_mw: np.ndarray,
    q_mvar: np.ndarray,
    target: float,
) -> np.ndarray:
    """Each need's kW after ``_SIZING_FLOWS`` secant steps on delivered power flows."""
    p_kw = np.array([need.p_kw for need in needs])
    n = len(needs)
    weights = []
    for need in needs:
        w = np.abs(p_mw[need.behind])
        weights.append(w / w.sum() if w.sum() > 0 else np.full(w.size, 1.0 / w.size))
    for _ in range(_SIZING_FLOWS):
        p = np.repeat(np.asarray(p_mw, dtype=np.float64)[None, :], n, axis=0)
        q = np.repeat(np.asarray(q_mvar, dtype=np.float64)[None, :], n, axis=0)
        for i, need in enumerate(needs):
            sign = -1.0 if need.direction is Direction.UP else 1.0
            p[i, need.behind] += sign * p_kw[i] / 1000.0 * weights[i]
        trial = powerflow(network, p, q, v_start=result.v_node_pu)
        for i, need in enumerate(needs):
            if not trial.converged[i]:
                continue
            moved = need.loading - float(trial.loading_percent[i, need.branch])
            if moved > 0.0:
                p_kw[i] *= (need.loading - target) / moved
    return p_kw
